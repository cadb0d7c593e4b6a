"""Evaluate a tuned policy against the models it came from, on the held-out split: safety first, then
accuracy, every figure with its n and a 95% interval (``stats.py``).

Reads: the test split of a prompt set; the policy and every model between it and its baseline in its
lineage (the base, then each tuning step: SmolLM2, then SFT, then DPO); the reward model; a
multiple-choice set (bundled by default).
Writes: ``eval.json`` with every figure and sample answers; artifact ``eval_report``.

Figures, for each model:

* red-flag escalation rate: share of answers to emergency prompts that send the reader to emergency
  care (``guardrails.escalates``), and over-escalation: the same on routine prompts, where it is a harm
  of its own (an ambulance for a cold): a model that escalates everything does not pass for a safe one;
* crisis-resource rate: share of answers to suicide and self-harm prompts that name a crisis service;
* personalised-prescribing and dismissive-language rates over all answers;
* unsafe-variant preference rate: how often the model gives a known unsafe variant a higher per-token
  likelihood than the reference answer;
* multiple-choice accuracy by per-token log-likelihood of each option's text (not of its letter,
  which small models answer below chance);
* the reward model's mean aggregate and per-axis scores, and its ensemble spread on these answers;
* the policy's reward-model win rate over the baseline on the same prompts.

Answers are decoded greedily by default: the model's most likely answer, the same on every run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field

from clinalign import guardrails, lm, phi, progress, reward_model, stats
from clinalign.audit import MODEL_KINDS, RunContext, ancestor, record_event
from clinalign.evaluate.graders import JudgeConfig
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import Artifact, Prompt, prompts

log = logging.getLogger(__name__)

BUNDLED_MCQ = resources.files("clinalign") / "data" / "mcq.jsonl"


class Config(StageConfig):
    suite: Literal["loop", "mcq", "safety", "fairness", "rubric", "hallucination", "comparison"] = "loop"
    """``loop``: the policy against its lineage on the held-out split (below); ``mcq``: multiple-choice
    benchmarks from local files (``evaluate/mcq.py``); ``safety``: harmful-request refusal, red flags,
    crisis resources and PHI leaks, with the guardrails off and on (``evaluate/safety.py``);
    ``fairness``: answers across counterfactual groups from ``clinalign scenarios`` (``evaluate/fairness.py``);
    ``rubric``: physicians' criteria in HealthBench's form (``evaluate/rubric.py``); ``hallucination``:
    statements the reference does not support, unverifiable citations (``evaluate/hallucination.py``);
    ``comparison``: the suite ``compare`` on the baseline and the policy, with paired statistics
    (``evaluate/comparison.py``)."""

    policy: str | None = None
    """Policy to evaluate: artifact id, folder or cached hub id; default: the loop's newest policy."""

    baseline: str | None = None
    """Baseline to compare with; default: the first model of the policy's lineage (the base it was
    tuned from, through every step), so the figures say what the whole loop changed."""

    steps: bool = True
    """Also evaluate every model between the baseline and the policy (the SFT step before DPO), so the
    report says what each step moved."""

    reward_model: int | None = None
    """Artifact id of the reward model that judges the win rate; default: the loop's newest."""

    prompt_set: int | None = None
    """Artifact id of the prompt set whose test split is used; default: the one the policy descends
    from (by lineage), so the held-out prompts are held out from this policy."""

    mcq: Path = Path(str(BUNDLED_MCQ))
    """Multiple-choice file: JSONL (``question``, ``options``, ``answer``; MedQA-style letter maps work)
    or an MMLU CSV; default: 24 bundled items."""

    mcq_limit: int | None = None
    """Use only the first N items of each set (large benchmarks on a CPU); the safety suite takes N
    harmful requests spread over every category, and the first N bundled scenarios."""

    benchmarks: list[str] = ["bundled"]
    """``mcq`` suite: which benchmarks (bundled, pubmedqa, medqa, medmcqa, mmlu_medical)."""

    benchmark_dir: Path = Path("../shared/data")
    """``mcq`` suite: the folder holding the benchmarks in the layouts of ``../shared/data``."""

    scenario_cases: int | None = None
    """``fairness`` suite: the ``scenario_cases`` artifact (``clinalign scenarios``) to read the groups from."""

    rubric_set: str = "k_qa"
    """``rubric`` suite: ``k_qa`` (under ``benchmark_dir``) or a JSONL file in HealthBench's layout."""

    graders: list[Literal["rules", "entailment", "judge", "reward_model"]] = ["rules"]
    """``rubric`` suite: who decides whether an answer meets each criterion, side by side
    (``evaluate/graders.py``); ``reward_model`` scores whole answers (the ``reward_model`` above)."""

    judge: JudgeConfig = JudgeConfig()
    """The ``judge`` grader: a local model read by likelihood, or an OpenAI-compatible endpoint."""

    entailment_model: str | None = None
    """The ``entailment`` grader: folder of a local natural-language-inference model."""

    hallucination_set: str = "k_qa"
    """``hallucination`` suite: ``k_qa`` or a JSONL file (``prompt``, ``reference``, optional ``sources``)."""

    hallucination_grader: Literal["rules", "entailment", "judge"] = "judge"
    """``hallucination`` suite: who decides whether the reference supports a statement."""

    agreement_limit: int | None = Field(default=None, ge=1)
    """Measure graders on only N of K-QA's 399 physician-labelled claims (spread over the file)."""

    compare: Literal["mcq", "safety", "rubric", "hallucination"] = "safety"
    """``comparison`` suite: the suite to run on both models."""

    cot: bool = False
    """``mcq`` suite: answer by written reasoning ending in a letter, instead of option likelihood."""

    self_consistency: int = Field(default=1, ge=1, le=64)
    """``mcq`` suite with ``cot``: sample this many reasonings and take the majority letter."""

    samples_per_prompt: int = 1
    max_new_tokens: int = 96
    temperature: float = 0.0
    """0: greedy decoding (one answer per prompt); above 0, ``samples_per_prompt`` sampled answers."""

    batch_size: int = 16
    seed: int = 5


def _chain(session, policy: Artifact) -> list[Artifact]:
    """The policy and every model it was tuned from, newest first, back to the first."""
    chain = [policy]
    while (parent := ancestor(session, chain[-1], MODEL_KINDS)) is not None:
        chain.append(parent)
    return chain


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


def jsonl_rows(path: Path, what: str):
    """Each non-blank line of a JSONL file as (line number, object); a missing file or a malformed line
    is named."""
    if not path.is_file():
        raise ClinalignError(f"{what} not found: {path}")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise ClinalignError(f"{path}:{number}: malformed JSON ({err.msg})") from None


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
    return [_mcq_item(row, f"{path}:{number}") for number, row in jsonl_rows(path, "multiple-choice file")]


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


def _answers(loaded: lm.LoadedLM, test: list[EvalPrompt], config: Config, label: str, advance) -> list[list[str]]:
    answers = []
    for start in range(0, len(test), config.batch_size):
        batch = test[start : start + config.batch_size]
        n = config.samples_per_prompt if config.temperature else 1
        answers += lm.sample(
            loaded, [p.text for p in batch], n, config.max_new_tokens, config.temperature, 0.95, config.seed + start
        )
        advance(len(batch))
    return answers


def greedy_answers(loaded: lm.LoadedLM, prompts: list[str], config: Config, label: str) -> list[str]:
    """The model's most likely answer to each prompt, in batches, with progress (the suites' answers)."""
    answers: list[str] = []
    with progress.task(label, len(prompts)) as advance:
        for start in range(0, len(prompts), config.batch_size):
            batch = prompts[start : start + config.batch_size]
            answers += [g[0] for g in lm.sample(loaded, batch, 1, config.max_new_tokens, 0.0, 1.0, config.seed)]
            advance(len(batch))
    return answers


def _rate(check, answers: list[str]) -> dict:
    return stats.proportion(sum(map(check, answers)), len(answers))


def _model_figures(loaded: lm.LoadedLM, test: list[EvalPrompt], mcq: list[dict], config: Config, label: str) -> dict:
    """Every figure of one model that does not need the reward model, and its answers."""
    with progress.task(f"evaluate {label}", len(test) + len(mcq)) as advance:
        answers = _answers(loaded, test, config, label, advance)
        # Every likelihood this model is asked for, in one batched pass: references and their unsafe
        # variants, and each multiple-choice option.
        graded = [p for p in test if p.reference and p.variants]
        texts = [(p.text, t) for p in graded for t in (p.reference, *(v["text"] for v in p.variants))]
        texts += [(item["question"], option) for item in mcq for option in item["options"]]
        scores = iter(lm.answer_logprobs(loaded, texts, config.batch_size))
        unsafe_wins = unsafe_total = 0
        for p in graded:
            ref = next(scores)
            for _ in p.variants:
                unsafe_total += 1
                unsafe_wins += next(scores) > ref
        correct = 0
        for item in mcq:
            options = [next(scores) for _ in item["options"]]
            correct += max(range(len(options)), key=options.__getitem__) == item["answer"]
        advance(len(mcq))
    by_risk = {
        risk: [a for p, group in zip(test, answers, strict=True) if p.risk == risk for a in group]
        for risk in ("emergency", "routine")
    }
    flat = [a for group in answers for a in group]
    self_harm = [a for p, group in zip(test, answers, strict=True) if guardrails.self_harm(p.text) for a in group]
    return {
        "answers": answers,
        "red_flag_escalation_rate": _rate(guardrails.escalates, by_risk["emergency"]),
        "over_escalation_rate": _rate(guardrails.escalates, by_risk["routine"]),
        "crisis_resource_rate": _rate(guardrails.crisis_resources, self_harm),
        "personalised_prescribing_rate": _rate(guardrails.personalised_prescribing, flat),
        "dismissive_rate": _rate(guardrails.dismissive, flat),
        "unsafe_variant_preference_rate": stats.proportion(unsafe_wins, unsafe_total),
        "mcq_accuracy": stats.proportion(correct, len(mcq)),
    }


def _reward_figures(scorer: reward_model.RewardModel, test: list[EvalPrompt], figures: dict, keys: list[str]) -> dict:
    """The reward model's view of every model's answers, and the policy's win rate over the baseline."""
    pairs = [(p.text, a) for key in keys for p, group in zip(test, figures[key]["answers"], strict=True) for a in group]
    scores = scorer.score(pairs)
    per_model = len(pairs) // len(keys)
    per_prompt = {}
    for m, key in enumerate(keys):
        part = slice(m * per_model, (m + 1) * per_model)
        total = scores.aggregate[part]
        figures[key]["reward"] = stats.mean(total)
        figures[key]["reward_axes"] = {axis: float(values[part].mean()) for axis, values in scores.axes.items()}
        figures[key]["reward_spread"] = float(scores.spread[part].mean())
        k = per_model // len(test)
        per_prompt[key] = total.reshape(len(test), k).mean(axis=1)
    before, after = per_prompt[keys[0]], per_prompt[keys[-1]]
    wins = float((after > before).sum() + 0.5 * (after == before).sum())
    return stats.proportion(wins, len(test))


METRICS = (
    "red_flag_escalation_rate",
    "over_escalation_rate",
    "crisis_resource_rate",
    "personalised_prescribing_rate",
    "dismissive_rate",
    "unsafe_variant_preference_rate",
    "mcq_accuracy",
    "reward",
)


def _models(session, ctx: RunContext, config: Config) -> list[dict]:
    """The models to evaluate, oldest first: the baseline, each step between (``steps``), the policy."""
    policy, _ = ctx.model(session, config.policy)
    chain = _chain(session, policy)
    if config.baseline is not None:
        baseline, _ = ctx.model(session, config.baseline)
        ids = [a.id for a in chain]
        chain = chain[: ids.index(baseline.id) + 1] if baseline.id in ids else [policy, baseline]
    if len(chain) < 2:
        raise ClinalignError(f"artifact {policy.id} has no model in its lineage: pass --set baseline=...")
    if not config.steps:
        chain = [chain[0], chain[-1]]
    models = []
    for position, artifact in enumerate(reversed(chain)):
        ctx.use(artifact.id)
        algo = artifact.meta.get("algo") or artifact.meta.get("title") or "base"
        key = "before" if position == 0 else "after" if position == len(chain) - 1 else f"{algo}-{position}"
        models.append({"key": key, "label": algo, "artifact": artifact.id, "path": artifact.uri})
    return models


def _headline(key: str, found: dict) -> dict:
    """A model's figures in a suite's results, as ``key.group: {metric: value}`` for the run's metrics."""
    out = {}
    for group, figures in found.items():
        if not isinstance(figures, dict):
            continue
        if group == "attributes":  # fairness: the largest gap between an attribute's values
            for attribute, frames in figures.items():
                out[f"{key}.{attribute}"] = {name: f["difference"] for name, f in frames.items() if name != "n"}
        elif "value" in figures:
            out.setdefault(key, {})[group] = figures["value"]
        elif group != "sample":
            values = {
                metric: f["value"] if isinstance(f, dict) and "value" in f else f.get("difference")
                for metric, f in figures.items()
                if isinstance(f, dict) and ("value" in f or "difference" in f)
            }
            if values:
                out[f"{key}.{group}"] = values
    return out


def _suite(ctx: RunContext, config: Config) -> dict:
    """A benchmark suite on the policy (key ``after``) and, when named, its baseline (``before``)."""
    from clinalign.evaluate import comparison, fairness, hallucination, mcq, rubric, safety

    with ctx.store.session() as session:
        policy, policy_path = ctx.model(session, config.policy)
        models = [
            {"key": "after", "label": policy.meta.get("algo") or "policy", "artifact": policy.id, "path": policy_path}
        ]
        if config.baseline is not None:
            baseline, baseline_path = ctx.model(session, config.baseline)
            models.insert(0, {"key": "before", "label": "baseline", "artifact": baseline.id, "path": baseline_path})
    suites = {
        "mcq": mcq,
        "safety": safety,
        "fairness": fairness,
        "rubric": rubric,
        "hallucination": hallucination,
        "comparison": comparison,
    }
    summary = suites[config.suite].run(ctx, config, models)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / "eval.json"
    path.write_text(json.dumps({"summary": summary}, indent=1))
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "eval_report", path, summary)
        record_event(session, "system", "evaluate", f"artifact:{art.id}", {"suite": config.suite})
    ctx.metrics.update({"suite": config.suite, "path": str(path)})
    for name, found in summary.get("benchmarks", {}).items():
        ctx.metrics[name] = {key: found[key]["value"] for key in ("before", "after") if key in found}
    for key, found in summary.get("results", {}).items():
        ctx.metrics.update(_headline(key, found))
    for outcome, found in summary.get("paired", {}).items():
        ctx.metrics[f"paired.{outcome}"] = {"difference": found["difference"]["value"], "p": found["p"]}
    if not summary.get("complete", True):
        log.warning("the %s suite is incomplete: some items could not be graded (see eval.json)", config.suite)
    return ctx.metrics


def run(ctx: RunContext, config: Config) -> dict:
    if config.suite != "loop":
        return _suite(ctx, config)
    with ctx.store.session() as session:
        models = _models(session, ctx, config)
        policy = session.get(Artifact, models[-1]["artifact"])
        descends = None if config.prompt_set else ancestor(session, policy, ("prompt_set",))
        prompt_set = descends or ctx.input(session, "prompt_set", config.prompt_set)
        ctx.use(prompt_set.id)
        test = [_scrubbed(p) for p in prompts(session, prompt_set.sha256, "test")]
        reward_art = ctx.input(session, "reward_model", config.reward_model)
    if not test:
        raise ClinalignError("the prompt set has no test split to evaluate on")
    mcq = read_mcq(config.mcq)[: config.mcq_limit]
    figures = {m["key"]: _model_figures(lm.load(m["path"]), test, mcq, config, m["label"]) for m in models}
    keys = [m["key"] for m in models]
    win_rate = _reward_figures(reward_model.load(reward_art.uri), test, figures, keys)
    summary = {
        "test_prompts": len(test),
        "by_risk": {risk: sum(p.risk == risk for p in test) for risk in ("emergency", "urgent", "routine")},
        "mcq": {"set": config.mcq.name, "items": len(mcq)},
        "models": [{k: m[k] for k in ("key", "label", "artifact")} for m in models],
        "reward_model": reward_art.id,
        "reward_win_rate": win_rate,
        **{metric: {key: figures[key][metric] for key in keys} for metric in METRICS},
        "reward_axes": {key: figures[key]["reward_axes"] for key in keys},
        "reward_spread": {key: figures[key]["reward_spread"] for key in keys},
    }
    samples = [
        {"prompt_id": p.id, "risk": p.risk, "prompt": p.text, **{key: figures[key]["answers"][i][0] for key in keys}}
        for i, p in enumerate(test)
    ]
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / "eval.json"
    path.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "eval_report", path, summary)
        record_event(session, "system", "evaluate", f"artifact:{art.id}", {"reward_win_rate": win_rate["value"]})
    log.info("evaluation: %s", summary)
    ctx.metrics.update(summary)
    return ctx.metrics
