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
from clinalign.settings import merge
from clinalign.stages import LOOP, run_stage
from clinalign.store import Store

# Overrides of the stages' defaults. The SFT pass sees the unsafe variants too, so that the starting
# policy answers well sometimes and badly sometimes, like a real base model.
DEFAULTS: dict[str, dict] = {
    "ingest": {"path": str(BUNDLED_SCENARIOS)},
    "train.sft": {"include_variants": True},
}

# A miniature loop for smoke tests: same stages and code paths, tiny model, fewer steps.
QUICK: dict[str, dict] = {
    "train.sft": {
        "scratch": {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128},
        "trl": {"num_train_epochs": 3, "learning_rate": 3e-3},
    },
    "generate": {"n_candidates": 3, "max_new_tokens": 24},
    "annotate": {"pairs_per_prompt": 2},
    "train.reward": {"trl": {"num_train_epochs": 2}},
    "train.dpo": {"trl": {"num_train_epochs": 2}},
    "evaluate": {"samples_per_prompt": 1, "max_new_tokens": 24},
}


def run(
    workspace: Path | None, quick: bool = False, on_stage: Callable[[int, str, int, dict, float], None] | None = None
) -> Path:
    """Run every stage in order; return the report's path. ``on_stage`` hears each stage's figures."""
    workspace = workspace or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    if (workspace / "clinalign.db").exists():
        raise ClinalignError(f"{workspace} already holds a demo; pass another --workspace")
    workspace.mkdir(parents=True, exist_ok=True)
    store = Store.open(f"sqlite:///{(workspace / 'clinalign.db').resolve()}")
    report_path = workspace / "report.html"
    for number, stage in enumerate(LOOP, start=1):
        settings = merge(DEFAULTS.get(stage, {}), QUICK.get(stage, {}) if quick else {})
        if stage == "report":
            settings["path"] = str(report_path)
        started = time.perf_counter()
        with progress.shown():
            result = run_stage(stage, store, workspace, settings)
        if on_stage is not None:
            on_stage(number, stage, result.run_id, result.metrics, time.perf_counter() - started)
    return report_path
