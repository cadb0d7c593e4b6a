"""A test fixture: a tiny Llama-architecture model built from nothing (a BPE tokenizer trained on the
bundled cases, with a chat template, and random weights), so the whole loop runs in tests in seconds.
The product's default policy is the real SmolLM2 (``clinalign/bundled.py``); this is only its stand-in.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


# The loop on the tiny model: the demo's stages and code paths, sizes a test can afford. The tiny model
# starts from random weights, so SFT trains every weight; DPO still trains a LoRA adapter.
TINY_LOOP: dict[str, dict] = {
    "train.sft": {"lora": None, "trl": {"num_train_epochs": 3, "learning_rate": 3e-3}},
    "generate": {"prompts_per_split": None, "n_candidates": 3, "max_new_tokens": 24},
    "annotate": {"pairs_per_prompt": 2},
    "train.reward": {"members": 3, "steps": 100},
    "train.dpo": {"lora": {"layers": None}, "trl": {"num_train_epochs": 2}},
    "evaluate": {"max_new_tokens": 24},
    "suites": {"mcq_limit": 4, "agreement_limit": 4, "max_new_tokens": 16},
}


class TinyShape(BaseModel):
    vocab_size: int = 512
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 512


def bundled_texts() -> list[str]:
    """The bundled cases' prompts and answers: the tiny tokenizer's corpus."""
    import json
    from importlib import resources

    rows = [json.loads(line) for line in (resources.files("clinalign") / "data" / "scenarios.jsonl").open()]
    return [t for r in rows for t in (r["prompt"], r.get("reference") or "", *(v["text"] for v in r["variants"]))]


def build_tiny(folder: Path, config: TinyShape | None = None, texts: list[str] | None = None) -> Path:
    """Train the tokenizer on ``texts`` (the bundled cases), initialise the model, save both to ``folder``."""
    config = config or TinyShape()
    texts = texts if texts is not None else bundled_texts()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|pad|>", eos_token="<|end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            tie_word_embeddings=True,
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    model.save_pretrained(str(folder))
    return folder


def build_tiny_nli(
    folder: Path, tokenizer_from: Path, labels: tuple[str, ...] = ("entailment", "neutral", "contradiction")
) -> Path:
    """A tiny sequence classifier with natural-language-inference labels (random weights), sharing the
    tiny model's tokenizer: the entailment grader's stand-in."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    shape = TinyShape()
    model = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=shape.hidden_size,
            num_hidden_layers=1,
            num_attention_heads=shape.num_attention_heads,
            num_key_value_heads=shape.num_attention_heads,
            intermediate_size=shape.intermediate_size,
            max_position_embeddings=shape.max_position_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
