"""The multiple-choice suite (``clinalign evaluate --suite mcq``): PubMedQA, MedQA, MedMCQA and the
medical subjects of MMLU, from local files in the layouts of ``../shared/data`` (or the bundled
items), for a policy and, given one, its baseline on the very same items.

Reads: the benchmark files; the models.  Writes: ``eval.json`` (artifact ``eval_report``, ``suite: mcq``).

Scoring is option-text log-likelihood, in batches: each option's mean per-token log-probability as
the answer to the question, the highest chosen (the letters themselves small models answer below
chance). With ``cot``, the model instead writes its reasoning and a letter, ``self_consistency``
times at temperature, and the majority letter counts (Wang et al. 2023); an answer without a letter
counts as wrong. Accuracy carries a percentile-bootstrap 95% interval; with a baseline, the paired
difference on the same items does too.
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections import Counter
from pathlib import Path

from clinalign import lm, progress, stats
from clinalign.schemas import ClinalignError

LETTERS = "ABCDEFGHIJ"


def _medagents(subset: str):
    def load(root: Path) -> list[dict]:
        from clinalign.evaluate import read_mcq

        return read_mcq(root / "medagents_bench" / subset / "test.jsonl")

    return load


def _mmlu_medical(root: Path) -> list[dict]:
    from clinalign.evaluate import read_mcq

    folder = root / "mmlu_medical" / "test"
    files = sorted(folder.glob("*_test.csv"))
    if not files:
        raise ClinalignError(f"{folder}: no MMLU *_test.csv files (the layout of ../shared/data/mmlu_medical)")
    return [item for path in files for item in read_mcq(path)]


def _pubmedqa(root: Path) -> list[dict]:
    """PQA-L's official 500-question test split: the abstract's sections, then the question; yes/no/maybe."""
    folder = root / "pubmedqa"
    try:
        questions = json.loads((folder / "ori_pqal.json").read_text(encoding="utf-8"))
        truth = json.loads((folder / "test_ground_truth.json").read_text(encoding="utf-8"))
    except OSError as err:
        raise ClinalignError(f"{folder}: {err.strerror} ({Path(err.filename).name})") from None
    except json.JSONDecodeError as err:
        raise ClinalignError(f"{folder}: malformed JSON ({err.msg})") from None
    options = ["yes", "no", "maybe"]
    items = []
    for pmid, label in truth.items():
        row = questions.get(pmid)
        if row is None or label not in options:
            raise ClinalignError(
                f"{folder / 'test_ground_truth.json'}: entry {pmid}: no such question, or label {label!r}"
            )
        contexts = row["CONTEXTS"]
        contexts = ast.literal_eval(contexts) if isinstance(contexts, str) else contexts
        question = "\n".join(contexts) + f"\nQuestion: {row['QUESTION']}"
        items.append({"question": question, "options": options, "answer": options.index(label)})
    return items


def _bundled(root: Path) -> list[dict]:
    from clinalign.evaluate import BUNDLED_MCQ, read_mcq

    return read_mcq(Path(str(BUNDLED_MCQ)))


BENCHMARKS = {
    "bundled": _bundled,
    "pubmedqa": _pubmedqa,
    "medqa": _medagents("medqa"),
    "medmcqa": _medagents("medmcqa"),
    "mmlu_medical": _mmlu_medical,
}


def load(name: str, root: Path, limit: int | None = None) -> list[dict]:
    if name not in BENCHMARKS:
        raise ClinalignError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    items = BENCHMARKS[name](root)
    if not items:
        raise ClinalignError(f"benchmark {name}: no items under {root}")
    return items[:limit]


def by_likelihood(loaded: lm.LoadedLM, items: list[dict], batch_size: int, advance=lambda n: None) -> list[int]:
    """Each item's chosen option: the highest mean per-token log-likelihood, one batched pass."""
    pairs = [(item["question"], option) for item in items for option in item["options"]]
    scores = iter(lm.answer_logprobs(loaded, pairs, batch_size))
    chosen = []
    for item in items:
        options = [next(scores) for _ in item["options"]]
        chosen.append(max(range(len(options)), key=options.__getitem__))
        advance(1)
    return chosen


_ANSWER = re.compile(r"answer\s*(?:is|:)?\s*\(?([A-J])\b", re.IGNORECASE)


def letter(text: str, options: int) -> int | None:
    """The option a written answer names: "the answer is C", else its last standalone letter."""
    found = _ANSWER.findall(text) or re.findall(r"\b([A-J])\b", text)
    index = LETTERS.find(found[-1].upper()) if found else -1
    return index if 0 <= index < options else None


def by_reasoning(
    loaded: lm.LoadedLM, items: list[dict], samples: int, config, advance=lambda n: None
) -> list[int | None]:
    """Chain of thought, with self-consistency when ``samples`` > 1: the majority letter."""
    prompts = [
        item["question"]
        + "\n"
        + "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(item["options"]))
        + "\nThink step by step, then finish with: The answer is <letter>."
        for item in items
    ]
    temperature = config.temperature if samples > 1 and config.temperature > 0 else (0.7 if samples > 1 else 0.0)
    chosen = []
    for start in range(0, len(items), config.batch_size):
        batch = list(range(start, min(start + config.batch_size, len(items))))
        answers = lm.sample(
            loaded, [prompts[i] for i in batch], samples, config.max_new_tokens, temperature, 0.95, config.seed + start
        )
        for i, group in zip(batch, answers, strict=True):
            votes = Counter(v for v in (letter(a, len(items[i]["options"])) for a in group) if v is not None)
            chosen.append(votes.most_common(1)[0][0] if votes else None)
        advance(len(batch))
    return chosen


def run(ctx, config, models: list[dict]) -> dict:
    """The suite over ``models`` (``[{key, label, artifact, path}]``, baseline first when there is one)."""
    root = config.benchmark_dir
    suites = {name: load(name, root, config.mcq_limit) for name in config.benchmarks}
    results: dict[str, dict] = {}
    per_item: dict[str, dict[str, list[int]]] = {}
    for name, items in suites.items():
        correct: dict[str, list[int]] = {}
        found: dict = {"items": len(items)}
        for model in models:
            loaded = lm.load(model["path"])
            started = time.perf_counter()
            with progress.task(f"{name}: {model['label']}", len(items)) as advance:
                if config.cot:
                    chosen = by_reasoning(loaded, items, config.self_consistency, config, advance)
                else:
                    chosen = by_likelihood(loaded, items, config.batch_size, advance)
            seconds = time.perf_counter() - started
            correct[model["key"]] = [int(c == item["answer"]) for c, item in zip(chosen, items, strict=True)]
            found[model["key"]] = {
                **stats.mean(correct[model["key"]]),
                "seconds": round(seconds, 2),
                "items_per_second": round(len(items) / seconds, 2) if seconds else None,
                "unanswered": sum(c is None for c in chosen),
            }
        if "before" in correct and "after" in correct:
            found["difference"] = stats.mean([a - b for a, b in zip(correct["after"], correct["before"], strict=True)])
        results[name] = found
        per_item[f"{name}.correct"] = correct
    return {
        "suite": "mcq",
        "method": f"chain of thought x{config.self_consistency}" if config.cot else "option log-likelihood",
        "models": [{k: m[k] for k in ("key", "label", "artifact")} for m in models],
        "benchmarks": results,
        "per_item": per_item,
    }
