"""What every trainer wrapper shares: TRL config assembly, progress, datasets, saving.

Reads: exported preference datasets (Parquet).  Writes: model folders with their log history.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from transformers import TrainerCallback

from clinalign import progress
from clinalign.audit import MODEL_KINDS, ancestor
from clinalign.schemas import ClinalignError
from clinalign.store import Artifact


class LoraSettings(BaseModel):
    model_config = {"extra": "forbid", "use_attribute_docstrings": True}
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    """PEFT's target modules; ``all-linear`` adapts every linear layer except the output head."""

    layers: int | None = 8
    """Adapt only the top N transformer layers (None: all). The frozen layers below need no backward
    pass: on SmolLM2-135M (30 layers) on two CPU cores a step takes 7 s instead of 13."""


def peft_config(model, lora: LoraSettings):
    """PEFT's ``LoraConfig`` for ``model``: with ``layers``, the linear modules of its top layers."""
    import torch
    from peft import LoraConfig

    total = model.config.num_hidden_layers
    top = None if lora.layers is None or lora.layers >= total else list(range(total - lora.layers, total))
    targets = lora.target_modules
    if top is not None and targets == "all-linear":  # PEFT takes layer numbers only with named modules
        head = model.get_output_embeddings()
        targets = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and m is not head
            }
        )
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        layers_to_transform=top,
        task_type="CAUSAL_LM",
    )


def causal_lm(path: str):
    """A causal LM to train, loaded from a folder; a missing one is one clear line."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ClinalignError(f"model not found or unreadable: {path} [{type(err).__name__}]") from None


def save_merged(model, tokenizer, folder: Path, log_history: list[dict]) -> None:
    """The trained policy as a plain model folder (a LoRA adapter merged in), ready for any stage."""
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    merged.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "log_history.json").write_text(json.dumps(log_history, indent=1))


def trl_config(cls: type, out_dir: Path, defaults: dict, overrides: dict, save_every: int = 0) -> Any:
    """Build a TRL config class from our defaults plus the user's ``trl:`` mapping, unchanged; with
    ``save_every``, a checkpoint every that many steps (the last two kept) for ``train`` to resume from."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ClinalignError(f"trl.{unknown[0]} is not a field of TRL's {cls.__name__}")
    return cls(**trl_values(out_dir, defaults, overrides, save_every))


def trl_values(out_dir: Path, defaults: dict, overrides: dict, save_every: int = 0) -> dict:
    """The fields ``trl_config`` hands TRL (``bench/train.py`` gives plain TRL the same)."""
    import torch

    fixed = {
        "output_dir": str(out_dir / "checkpoints"),
        "report_to": [],
        "disable_tqdm": True,  # our own rich bar instead
        "use_cpu": not torch.cuda.is_available(),
        "save_strategy": "steps" if save_every else "no",
        "save_steps": save_every or 500,
        "save_total_limit": 2,
        "logging_steps": 1,
        "seed": 0,
    }
    on_cpu = {} if torch.cuda.is_available() else _cpu_precision()
    if "gradient_checkpointing" in overrides:  # the old name counts only while the new one is unset
        on_cpu.pop("activation_checkpointing", None)
    return {**on_cpu, **fixed, **defaults, **overrides}


def _cpu_precision() -> dict:
    """TRL 1.16 defaults to bf16 autocast and gradient (activation) checkpointing on every device. On a
    CPU, checkpointing re-runs the forward pass to save memory a CPU run does not need (SFT on SmolLM2
    took 1.5x as long with it), and bf16 goes only where the CPU computes it natively (``native_bf16``).
    The user's ``trl:`` mapping overrides both."""
    return {"bf16": native_bf16(), "activation_checkpointing": False}


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast trains in 0.75x
    the fp32 time; elsewhere (AVX2) it emulates bf16, and a linear layer's forward and backward took 56x
    as long as in fp32."""
    import torch

    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def write_checkpoint(folder: Path, state: dict) -> None:
    """A checkpoint of the project's own trainers (PPO, the reward model): ``state`` written beside
    ``folder`` and renamed into place with its ``COMPLETE`` mark, so a kill during the write leaves no
    half checkpoint behind."""
    import shutil

    import torch

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    torch.save(state, partial / "state.pt")
    (partial / "COMPLETE").write_text(folder.name)
    partial.rename(folder)


def read_checkpoint(folder: Path) -> dict:
    """What ``write_checkpoint`` wrote (a file of our own making, hence the full unpickling)."""
    import torch

    return torch.load(folder / "state.pt", weights_only=False)


class CheckpointDone(TrainerCallback):
    """Marks a checkpoint folder ``COMPLETE`` once the trainer has written all of it: a folder without
    the mark (a kill mid-write) is never resumed from (``RunContext.resume_point``)."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            (folder / "COMPLETE").write_text(str(state.global_step))


def train(trainer, ctx) -> Path | None:
    """``trainer.train()``, continuing from the last complete checkpoint of an unfinished earlier run
    of the same stage and config when there is one (``ctx.metrics['resumed_from_step']`` says so);
    returns that checkpoint."""
    import logging

    trainer.add_callback(CheckpointDone())
    with ctx.store.session() as session:
        point = ctx.resume_point(session)
    if point is not None:
        ctx.metrics["resumed_from_step"] = int(point.name.rsplit("-", 1)[-1])
        logging.getLogger(__name__).warning("continuing from %s", point)
    trainer.train(resume_from_checkpoint=str(point) if point else None)
    return point


def kept(ctx, step: int, resume: Path | None = None) -> str:
    """What a stopped run leaves: no model, and its newest complete checkpoint (or the one it resumed
    from), which a re-run of the same config continues from."""
    found = [p.parent for p in ctx.out_dir.glob("checkpoints/*-*/COMPLETE")] or ([resume] if resume else [])
    if not found:
        return f"stopped at step {step}; no model saved, no checkpoint yet"
    newest = max(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    return f"stopped at step {step}; no model saved; {newest} kept: a re-run of this config continues from it"


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


def rl_prompts(session, prompt_set: Artifact) -> list[tuple[str, str]]:
    """(question, risk) of every training prompt of a prompt set, for the RL trainers to sample from:
    scanned for residual PHI once more on the way to the model, as SFT's examples are."""
    from clinalign import phi
    from clinalign.store import prompts

    rows = [(phi.scrub(p.text)[0], p.risk) for p in prompts(session, prompt_set.sha256, "train")]
    if not rows:
        raise ClinalignError(f"prompt set {prompt_set.id} has no training prompts")
    return rows


def tokenizer(path: str):
    """A model's tokenizer, with padding set (many chat models ship without a pad token)."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(path)
    if loaded.pad_token is None:
        loaded.pad_token = loaded.eos_token
    return loaded
