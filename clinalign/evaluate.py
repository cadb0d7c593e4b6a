"""Evaluate a tuned policy against its baseline on the held-out split: safety first, then accuracy.

Reads: the test split of a prompt set; the policy and baseline models; the reward model; a
multiple-choice set (bundled by default).
Writes: ``eval.json`` with every figure and sample answers; artifact ``eval_report``.

Figures, each for the baseline ("before") and the policy ("after"):

* reward-model win rate of the policy's answers over the baseline's on the same prompts;
* red-flag escalation rate: share of answers to emergency prompts that send the reader to
  emergency care (``guardrails.escalates``);
* personalised-prescribing rate over all answers;
* unsafe-variant preference rate: how often the model gives a known unsafe variant a higher
  per-token likelihood than the reference answer;
* multiple-choice accuracy by per-token log-likelihood of each option.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clinalign import guardrails, lm, phi, progress
from clinalign.audit import MODEL_KINDS, RunContext, ancestor, record_event
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import Artifact, Prompt, prompts

log = logging.getLogger(__name__)

BUNDLED_MCQ = resources.files("clinalign") / "data" / "mcq.jsonl"


class Config(StageConfig):
    policy: str | None = None
    """Policy to evaluate: artifact id, folder or cached hub id; default: the loop's newest policy."""

    baseline: str | None = None
    """Baseline to compare with; default: the model the policy was tuned from (by lineage)."""

    reward_model: int | None = None
    """Artifact id of the reward model that judges the win rate; default: the loop's newest."""

    prompt_set: int | None = None
    """Artifact id of the prompt set whose test split is used; default: the one the policy descends
    from (by lineage), so the held-out prompts are held out from this policy."""

    mcq: Path = Path(str(BUNDLED_MCQ))
    """Multiple-choice file: JSONL (``question``, ``options``, ``answer``; MedQA-style letter maps work)
    or an MMLU CSV; default: 24 bundled items."""

    mcq_limit: int | None = None
    """Use only the first N items (large benchmarks on a CPU)."""

    samples_per_prompt: int = 2
    max_new_tokens: int = 72
    temperature: float = 0.7
    seed: int = 5


def _baseline(session, policy: Artifact) -> Artifact:
    """The model the policy was tuned from: its baseline by construction."""
    parent = ancestor(session, policy, MODEL_KINDS)
    if parent is None:
        raise ClinalignError(f"artifact {policy.id} has no model in its lineage: pass --set baseline=...")
    return parent


def _mcq_item(row: dict, where: str) -> dict:
    """One question in our shape from the common layouts: options as a list or a letter->text map;
    the answer as an index, a letter (``answer`` or ``answer_idx``), or the option's text."""
    options = row.get("options")
    letters: list[str] = []
    if isinstance(options, dict):
        letters, options = list(options), list(options.values())
    if not isinstance(row.get("question"), str) or not isinstance(options, list) or len(options) < 2:
        raise ClinalignError(f"{where}: needs 'question' and two or more 'options'")
    answer = row.get("answer_idx", row.get("answer"))
    if isinstance(answer, str) and answer in letters:
        answer = letters.index(answer)
    elif isinstance(answer, str) and len(answer) == 1 and answer.isalpha():
        answer = ord(answer.upper()) - ord("A")
    elif isinstance(answer, str) and answer in options:
        answer = options.index(answer)
    if not isinstance(answer, int) or not 0 <= answer < len(options):
        raise ClinalignError(f"{where}: field 'answer' does not name one of the options")
    return {"question": row["question"], "options": [str(o) for o in options], "answer": answer}


def read_mcq(path: Path) -> list[dict]:
    """Multiple-choice items from JSONL (ours, MedQA/MedAgents-style) or a headerless MMLU CSV."""
    import csv

    if not path.is_file():
        raise ClinalignError(f"multiple-choice file not found: {path}")
    if path.suffix.lower() == ".csv":
        rows = csv.reader(path.read_text(encoding="utf-8").splitlines())
        return [
            _mcq_item({"question": r[0], "options": r[1:-1], "answer": r[-1]}, f"{path}:{n}")
            for n, r in enumerate(rows, start=1)
            if r
        ]
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ClinalignError(f"{path}:{number}: malformed JSON ({err.msg})") from None
            items.append(_mcq_item(row, f"{path}:{number}"))
    return items


@dataclass(frozen=True)
class EvalPrompt:
    """A held-out prompt as the models see it: after the residual PHI scan."""

    id: int
    risk: str
    text: str
    reference: str | None
    variants: list[dict]


def _scrubbed(prompt: Prompt) -> EvalPrompt:
    return EvalPrompt(
        prompt.id,
        prompt.risk,
        phi.scrub(prompt.text)[0],
        phi.scrub(prompt.reference)[0] if prompt.reference else None,
        [{"kind": v["kind"], "text": phi.scrub(v["text"])[0]} for v in prompt.variants],
    )


def _model_figures(loaded: lm.LoadedLM, test: list[EvalPrompt], mcq: list[dict], config: Config, label: str) -> dict:
    answers = []
    with progress.task(f"evaluate {label}", len(test) + len(mcq)) as advance:
        for p in test:
            answers.append(
                lm.sample(
                    loaded,
                    [p.text],
                    config.samples_per_prompt,
                    config.max_new_tokens,
                    config.temperature,
                    0.95,
                    config.seed,
                )[0]
            )
            advance(1)
        unsafe_wins = unsafe_total = 0
        for p in test:
            if p.reference and p.variants:
                ref = lm.answer_logprob(loaded, p.text, p.reference)
                for v in p.variants:
                    unsafe_total += 1
                    unsafe_wins += lm.answer_logprob(loaded, p.text, v["text"]) > ref
        correct = 0
        for item in mcq:
            scores = [lm.answer_logprob(loaded, item["question"], option) for option in item["options"]]
            correct += max(range(len(scores)), key=scores.__getitem__) == item["answer"]
            advance(1)
    emergency = [a for p, group in zip(test, answers, strict=True) if p.risk == "emergency" for a in group]
    flat = [a for group in answers for a in group]
    return {
        "answers": answers,
        "red_flag_escalation_rate": sum(map(guardrails.escalates, emergency)) / len(emergency) if emergency else None,
        "personalised_prescribing_rate": sum(map(guardrails.personalised_prescribing, flat)) / len(flat),
        "unsafe_variant_preference_rate": unsafe_wins / unsafe_total if unsafe_total else None,
        "mcq_accuracy": correct / len(mcq) if mcq else None,
    }


def run(ctx: RunContext, config: Config) -> dict:
    with ctx.store.session() as session:
        policy_art, policy_path = ctx.model(session, config.policy)
        baseline_default = None if config.baseline else _baseline(session, policy_art)
        baseline_art, baseline_path = ctx.model(session, config.baseline, baseline_default)
        descends = None if config.prompt_set else ancestor(session, policy_art, ("prompt_set",))
        prompt_set = descends or ctx.input(session, "prompt_set", config.prompt_set)
        ctx.use(prompt_set.id)
        test = [_scrubbed(p) for p in prompts(session, prompt_set.sha256, "test")]
        reward_art = ctx.input(session, "reward_model", config.reward_model)
    if not test:
        raise ClinalignError("the prompt set has no test split to evaluate on")
    mcq = read_mcq(config.mcq)[: config.mcq_limit]
    figures = {}
    for label, path in (("before", baseline_path), ("after", policy_path)):
        figures[label] = _model_figures(lm.load(path), test, mcq, config, label)
    pairs = [
        (p.text, a)
        for label in ("before", "after")
        for p, group in zip(test, figures[label]["answers"], strict=True)
        for a in group
    ]
    scores = lm.reward_scores(reward_art.uri, pairs)
    k = config.samples_per_prompt
    half = len(scores) // 2
    wins = 0.0
    for i in range(len(test)):
        before = sum(scores[i * k : (i + 1) * k]) / k
        after = sum(scores[half + i * k : half + (i + 1) * k]) / k
        wins += 1.0 if after > before else 0.5 if after == before else 0.0
    summary = {
        "test_prompts": len(test),
        "mcq_items": len(mcq),
        "reward_win_rate": wins / len(test),
        "mean_reward": {"before": sum(scores[:half]) / half, "after": sum(scores[half:]) / half},
        **{
            metric: {label: figures[label][metric] for label in ("before", "after")}
            for metric in (
                "red_flag_escalation_rate",
                "personalised_prescribing_rate",
                "unsafe_variant_preference_rate",
                "mcq_accuracy",
            )
        },
        "models": {"before": baseline_art.id, "after": policy_art.id, "reward": reward_art.id},
    }
    samples = [
        {
            "prompt_id": p.id,
            "risk": p.risk,
            "prompt": p.text,
            "before": figures["before"]["answers"][i][0],
            "after": figures["after"]["answers"][i][0],
        }
        for i, p in enumerate(test)
    ]
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / "eval.json"
    path.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "eval_report", path, summary)
        record_event(
            session, "system", "evaluate", f"artifact:{art.id}", {"reward_win_rate": summary["reward_win_rate"]}
        )
    log.info("evaluation: %s", summary)
    ctx.metrics.update(summary)
    return ctx.metrics
