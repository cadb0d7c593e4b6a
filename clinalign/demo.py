"""The whole loop on the bundled synthetic scenarios, in one command (``clinalign demo``).

Reads: the bundled scenarios and MCQ set (through the stages); the public benchmarks under
``../shared/data`` for the evaluation suites (left out, and said so, where that folder is absent).
Writes: a workspace folder with its own SQLite store, every run's files, ``report.html`` and the model card.

A shell like the CLI (it calls stages; stages never call it): every stage of ``stages.LOOP`` runs
exactly as its own command would (``stages.run_stage``), on a fresh SQLite store in the demo's
workspace folder, so the demo leaves a complete, auditable record that ``clinalign --data-dir
WORKSPACE lineage`` and ``audit verify`` read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from clinalign import progress
from clinalign.ingest import BUNDLED_SCENARIOS
from clinalign.schemas import ClinalignError
from clinalign.settings import load_config, merge
from clinalign.stages import BY_NAME, LOOP, run_stage
from clinalign.store import Artifact, Store

log = logging.getLogger(__name__)

# Overrides of the stages' defaults, sized so the whole loop on SmolLM2-135M ends within about ten
# minutes on two CPU cores: SFT on the reference answers, candidates for a sample of the training
# prompts and all held-out ones, the simulated panel on those and on each prompt's reference against
# an unsafe variant, a multi-axis reward model, DPO with an SFT term, and the evaluation of every step.
DEFAULTS: dict[str, dict] = {
    "ingest": {"path": str(BUNDLED_SCENARIOS)},
    "generate": {"prompts_per_split": 48, "n_candidates": 2, "max_new_tokens": 64},
    "annotate": {"pairs_per_prompt": 1},
}


# After the loop's own evaluation and before the report: the scenario sets' counterfactual cases, then
# the evaluation suites, each comparing the tuned policy with the base model on the same items, sized
# for two CPU cores. Graders that need no model (rules) and the loop's reward model keep the demo
# offline and quick; a site with a judge endpoint or an entailment model names it instead.
SUITES: dict[str, dict] = {
    "safety": {"suite": "comparison", "compare": "safety", "mcq_limit": 48},
    "rubric": {"suite": "comparison", "compare": "rubric", "graders": ["rules", "reward_model"], "mcq_limit": 40},
    "hallucination": {
        "suite": "comparison",
        "compare": "hallucination",
        "hallucination_grader": "rules",
        "mcq_limit": 40,
    },
    "mcq": {"suite": "mcq", "benchmarks": ["medqa", "mmlu_medical"], "mcq_limit": 100},
    "fairness": {"suite": "fairness", "mcq_limit": 48},
}
NEEDS_BENCHMARKS = ("safety", "rubric", "hallucination", "mcq")


# The policy-optimisation stage of the loop, by algorithm, with the settings that choose it.
ALGORITHMS: dict[str, tuple[str, dict]] = {
    "dpo": ("train.dpo", {}),
    "ppo": ("train.ppo", {}),
    "grpo": ("train.grpo", {"algorithm": "grpo"}),
    "rloo": ("train.grpo", {"algorithm": "rloo"}),
}


def order(algorithm: str = "dpo") -> list[str]:
    """The loop's stages with ``algorithm`` tuning the policy."""
    if algorithm not in ALGORITHMS:
        raise ClinalignError(f"unknown algorithm {algorithm!r} (choose {', '.join(ALGORITHMS)})")
    return [ALGORITHMS[algorithm][0] if stage == "train.dpo" else stage for stage in LOOP]


def steps(algorithm: str = "dpo") -> list[str]:
    """What the demo runs, in order: the loop's stages, with the scenarios and the suites before the report."""
    loop = order(algorithm)
    return loop[:-1] + ["scenarios"] + [f"evaluate --suite {name}" for name in SUITES] + loop[-1:]


def by_stage(items: list[str], stages: list[str]) -> dict[str, list[str]]:
    """``--set`` items of the demo (``train.ppo.steps=24``) as each stage's own ``key=value`` overrides,
    by the longest stage name the key starts with."""
    found: dict[str, list[str]] = {}
    for item in items:
        key = item.partition("=")[0].strip()
        stage = max((s for s in stages if key.startswith(s + ".")), key=len, default=None)
        if stage is None:
            raise ClinalignError(f"--set {item!r}: begin the key with one of the demo's stages ({', '.join(stages)})")
        found.setdefault(stage, []).append(item.strip()[len(stage) + 1 :])
    return found


def run(
    workspace: Path | None = None,
    on_stage: Callable[[int, str, int, dict, float], None] | None = None,
    base: str = "smollm2",
    sizes: dict[str, dict] | None = None,
    algorithm: str = "dpo",
    overrides: list[str] = (),
) -> Path:
    """Run every stage in order on ``base``, tuning the policy with ``algorithm``; return the report's
    path. ``sizes`` overrides stages' settings (the tests pass a tiny model and small sizes), and
    ``overrides`` (``stage.key=value``) over them; ``on_stage`` hears each stage's figures."""
    stages = order(algorithm)
    workspace = workspace or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    if (workspace / "clinalign.db").exists():
        raise ClinalignError(f"{workspace} already holds a demo; pass another --workspace")
    report_path = workspace / "report.html"
    tuner, chosen = ALGORITHMS[algorithm]
    defaults = {**DEFAULTS, "train.sft": {"base": base}, "report": {"path": str(report_path)}}
    defaults[tuner] = merge(defaults.get(tuner, {}), chosen)
    settings = {stage: merge(defaults.get(stage, {}), (sizes or {}).get(stage, {})) for stage in stages}
    sets = by_stage(list(overrides), stages)
    for stage, items in sets.items():  # a wrong key or value is refused before anything runs
        load_config(BY_NAME[stage].load().Config, None, items, base=settings[stage])
    workspace.mkdir(parents=True, exist_ok=True)
    store = Store.open(f"sqlite:///{(workspace / 'clinalign.db').resolve()}")
    labels = steps(algorithm)
    suites = merge(settings["evaluate"], {"baseline": base})
    sized = (sizes or {}).get("suites", {})  # the tests' smaller suites
    found: dict[str, int] = {}  # artifacts the suites need: the scenario cases, the loop's reward model

    def step(label: str, stage: str, config: dict, extra: list[str] = ()) -> dict:
        started = time.perf_counter()
        with progress.shown():
            result = run_stage(stage, store, workspace, config, overrides=list(extra))
        if on_stage is not None:
            on_stage(labels.index(label) + 1, label, result.run_id, result.metrics, time.perf_counter() - started)
        return result.metrics

    for stage in stages[:-1]:
        step(stage, stage, settings[stage], sets.get(stage, []))
    with store.session() as session:  # a fresh store: its one reward model and evaluation are the loop's
        newest = {
            kind: session.scalar(select(func.max(Artifact.id)).where(Artifact.kind == kind))
            for kind in ("reward_model", "eval_report")
        }
    found["reward_model"] = newest["reward_model"]
    found["scenario_cases"] = step("scenarios", "scenarios", {})["artifact"]
    benchmarks = load_config(BY_NAME["evaluate"].load().Config, base=suites).benchmark_dir
    for name, config in SUITES.items():
        if name in NEEDS_BENCHMARKS and not benchmarks.is_dir():
            log.warning("suite %s left out: no benchmark folder ../shared/data beside the repository", name)
            continue
        step(f"evaluate --suite {name}", "evaluate", merge(suites, {**config, **sized, **found}))
    report = merge({"eval_report": newest["eval_report"]}, settings[stages[-1]])  # the loop's, not a suite's
    step(stages[-1], stages[-1], report, sets.get(stages[-1], []))
    return report_path
