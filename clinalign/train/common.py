"""What every trainer wrapper shares: TRL config assembly, progress, datasets, saving.

Reads: exported preference datasets (Parquet).  Writes: model folders with their log history.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from clinalign import progress
from clinalign.audit import MODEL_KINDS, ancestor
from clinalign.schemas import ClinalignError
from clinalign.store import Artifact


def trl_config(cls: type, out_dir: Path, defaults: dict, overrides: dict) -> Any:
    """Build a TRL config class from our defaults plus the user's ``trl:`` mapping, unchanged."""
    import torch

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ClinalignError(f"trl.{unknown[0]} is not a field of TRL's {cls.__name__}")
    fixed = {
        "output_dir": str(out_dir / "checkpoints"),
        "report_to": [],
        "disable_tqdm": True,  # our own rich bar instead
        "use_cpu": not torch.cuda.is_available(),
        "save_strategy": "no",
        "logging_steps": 1,
        "seed": 0,
    }
    return cls(**{**fixed, **defaults, **overrides})


def show_progress(trainer, description: str) -> None:
    """Replace the trainer's console printer (active when tqdm is off) with our rich bar."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressCallback(description))


class ProgressCallback(TrainerCallback):
    """Drives a rich bar over the optimiser steps of a Hugging Face trainer."""

    def __init__(self, description: str):
        self.description = description
        self._bar = ExitStack()  # the bar's context spans from train begin to train end
        self._advance = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._advance = self._bar.enter_context(progress.task(self.description, state.max_steps))

    def on_step_end(self, args, state, control, **kwargs):
        self._advance(1)

    def on_train_end(self, args, state, control, **kwargs):
        self._bar.close()


def losses(log_history: list[dict]) -> list[dict]:
    """The per-step training loss curve from a trainer's log history."""
    return [{"step": e["step"], "loss": e["loss"]} for e in log_history if "loss" in e and "step" in e]


def save(trainer, tokenizer, folder: Path, log_history: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "log_history.json").write_text(json.dumps(log_history, indent=1))


def preference_data(folder: Path, columns: list[str]):
    """The train and (if any) test splits of an exported preference dataset, with ``columns`` only."""
    from datasets import load_dataset

    paths = {split: folder / f"{split}.parquet" for split in ("train", "test")}
    files = {split: str(path) for split, path in paths.items() if path.exists()}
    if "train" not in files:
        raise ClinalignError(f"{folder}: no train.parquet; run `clinalign preferences` first")
    splits = load_dataset("parquet", data_files=files)
    test = splits["test"].select_columns(columns) if "test" in splits else None
    return splits["train"].select_columns(columns), test


def judged_policy(session, dataset) -> Artifact | None:
    """The model whose answers became a preference dataset: the nearest model in its lineage."""
    return ancestor(session, dataset, MODEL_KINDS)


def tokenizer(path: str):
    """A model's tokenizer, with padding set (many chat models ship without a pad token)."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(path)
    if loaded.pad_token is None:
        loaded.pad_token = loaded.eos_token
    return loaded
