"""Causal language models: load from a folder or a cached hub id, sample answers, score answers.

Reads: a model folder or cached hub id.  Writes: nothing (answers and scores are returned).

Shared by ``generate`` and ``evaluate`` (and later ``serve``), so that every stage prompts a model
the same way: the prompt is the user turn of the tokenizer's chat template.
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
    """``n`` sampled answers for each prompt (one batch: callers pass a batch-sized list)."""
    import torch

    torch.manual_seed(seed)
    batch = _prompt_ids(lm, prompts)
    with torch.no_grad():
        out = lm.model.generate(
            **batch,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
    answers = lm.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    answers = [a.strip() for a in answers]
    return [answers[i * n : (i + 1) * n] for i in range(len(prompts))]


def answer_logprob(lm: LoadedLM, prompt: str, answer: str) -> float:
    """Mean log-probability per token of ``answer`` as the assistant's reply to ``prompt``.

    Length-normalised so that short and long answers compare fairly (as in multiple-choice
    log-likelihood scoring of LM evaluation harnesses).
    """
    import torch

    tokenizer = lm.tokenizer
    messages = [{"role": "user", "content": prompt}]
    prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    prefix_len = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    ids = tokenizer(full, return_tensors="pt", add_special_tokens=False)["input_ids"].to(lm.model.device)
    with torch.no_grad():
        logits = lm.model(ids).logits[0, :-1].float()
    targets = ids[0, 1:]
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    answer_part = logprobs[prefix_len - 1 :]
    return float(answer_part.mean()) if answer_part.numel() else -math.inf


def reward_scores(folder: str, pairs: list[tuple[str, str]]) -> list[float]:
    """Scalar reward for each (prompt, answer), through the reward model's own chat template."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    scores = []
    with torch.no_grad():
        for prompt, answer in pairs:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], tokenize=False
            )
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False, truncation=True, max_length=384)
            scores.append(float(model(**ids).logits[0, 0]))
    return scores
