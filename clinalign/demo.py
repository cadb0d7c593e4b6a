"""The whole loop on the bundled synthetic scenarios, in one command (``clinalign demo``).

Reads: the bundled scenarios and MCQ set (through the stages).
Writes: a workspace folder with its own SQLite store, every run's files and ``report.html``.

A shell like the CLI (it calls stages; stages never call it): every stage of ``stages.LOOP`` runs
exactly as its own command would (``stages.run_stage``), on a fresh SQLite store in the demo's
workspace folder, so the demo leaves a complete, auditable record that ``clinalign --data-dir
WORKSPACE lineage`` and ``audit verify`` read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from clinalign import progress
from clinalign.ingest import BUNDLED_SCENARIOS
from clinalign.schemas import ClinalignError
from clinalign.settings import load_config, merge
from clinalign.stages import BY_NAME, LOOP, run_stage
from clinalign.store import Store

# Overrides of the stages' defaults, sized so the whole loop on SmolLM2-135M ends within about ten
# minutes on two CPU cores: SFT on the reference answers, candidates for a sample of the training
# prompts and all held-out ones, the simulated panel on those and on each prompt's reference against
# an unsafe variant, a multi-axis reward model, DPO with an SFT term, and the evaluation of every step.
DEFAULTS: dict[str, dict] = {
    "ingest": {"path": str(BUNDLED_SCENARIOS)},
    "generate": {"prompts_per_split": 48, "n_candidates": 2, "max_new_tokens": 64},
    "annotate": {"pairs_per_prompt": 1},
}


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
    for number, stage in enumerate(stages, start=1):
        started = time.perf_counter()
        with progress.shown():
            result = run_stage(stage, store, workspace, settings[stage], overrides=sets.get(stage, []))
        if on_stage is not None:
            on_stage(number, stage, result.run_id, result.metrics, time.perf_counter() - started)
    return report_path
