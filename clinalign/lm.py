"""Causal language models: load from a folder or a cached hub id, sample answers, score answers.

Reads: a model folder or cached hub id.  Writes: nothing (answers and scores are returned).

Shared by ``generate`` and ``evaluate`` (and later ``serve``), so that every stage prompts a model
the same way: the prompt is the user turn of the tokenizer's chat template. (Reward models have their
own module: ``reward_model.py``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clinalign.schemas import ClinalignError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LoadedLM:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


def load(name_or_path: str) -> LoadedLM:
    """Load a causal LM and its tokenizer; a missing model is one clear line, not a stack trace."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise ClinalignError(
            f"model not found: {name_or_path} (not a model folder, nor in the local Hugging Face cache; "
            f"the hub is offline) [{type(err).__name__}]"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ClinalignError(f"model {name_or_path}: its tokenizer has no chat template")
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return LoadedLM(model, tokenizer, name_or_path)


def _prompt_ids(lm: LoadedLM, prompts: list[str]):
    tokenizer = lm.tokenizer
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.model.device)


def sample(
    lm: LoadedLM, prompts: list[str], n: int, max_new_tokens: int, temperature: float, top_p: float, seed: int
) -> list[list[str]]:
    """``n`` sampled answers for each prompt (one batch: callers pass a batch-sized list); temperature 0
    decodes greedily (one answer per prompt: the model's most likely, reproducible)."""
    import torch

    greedy = temperature == 0
    if greedy and n != 1:
        raise ClinalignError("greedy decoding (temperature 0) gives one answer per prompt: ask for 1")
    torch.manual_seed(seed)
    batch = _prompt_ids(lm, prompts)
    sampling = {} if greedy else {"temperature": temperature, "top_p": top_p}
    with torch.no_grad():
        out = lm.model.generate(
            **batch,
            do_sample=not greedy,
            **sampling,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
    answers = lm.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    answers = [a.strip() for a in answers]
    return [answers[i * n : (i + 1) * n] for i in range(len(prompts))]


def answer_logprobs(lm: LoadedLM, pairs: list[tuple[str, str]], batch_size: int = 16) -> list[float]:
    """Mean log-probability per token of each ``answer`` as the assistant's reply to its ``prompt``.

    Length-normalised so that short and long answers compare fairly (as in multiple-choice
    log-likelihood scoring of LM evaluation harnesses). Scored in batches of similar length, padded on
    the left so that every row's answer ends the row: the output layer and the softmax then run over the
    last positions only (``logits_to_keep``), not over the whole prompt, which is most of the tokens.
    """
    import torch

    tokenizer = lm.tokenizer
    encoded = []
    for prompt, answer in pairs:
        messages = [{"role": "user", "content": prompt}]
        prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        encoded.append((ids, len(ids) - len(tokenizer(prefix, add_special_tokens=False)["input_ids"])))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    result = [-math.inf] * len(encoded)
    pad = tokenizer.pad_token_id
    device = lm.model.device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i][0]) for i in chunk)
        keep = max(encoded[i][1] for i in chunk) + 1  # each answer's tokens, and the position before them
        ids = torch.tensor([[pad] * (width - len(encoded[i][0])) + encoded[i][0] for i in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(encoded[i][0])) + [1] * len(encoded[i][0]) for i in chunk])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the positions
        with torch.no_grad():
            logits = lm.model(
                ids, attention_mask=mask.to(device), position_ids=positions.to(device), logits_to_keep=keep
            ).logits[:, :-1]
        targets = ids[:, width - keep + 1 :]
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(2, targets[..., None])[..., 0].cpu()
        for row, i in enumerate(chunk):
            answer = encoded[i][1]
            result[i] = float(logprobs[row, keep - 1 - answer :].mean()) if answer else -math.inf
    return result
