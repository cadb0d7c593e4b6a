"""Supervised fine-tuning with TRL's ``SFTTrainer`` on a prompt set's reference answers: the answers
clinicians wrote or approved, which escalate emergencies and give no personal doses.

Reads: ``Prompt`` rows (train split) of a prompt set; a base model (default: the bundled SmolLM2).
Writes: a policy model folder (a LoRA adapter merged in, or fully fine-tuned); artifact ``model``
(with its loss curve).
"""

from __future__ import annotations

import logging

from pydantic import Field

from clinalign import phi
from clinalign.audit import RunContext, record_event
from clinalign.settings import StageConfig
from clinalign.store import prompts
from clinalign.train import common

log = logging.getLogger(__name__)

# Sized for SmolLM2-135M on two CPU cores with LoRA on its top 8 layers (about 7 s a step of 8 answers);
# any SFTConfig field overrides these.
TRL_DEFAULTS = {
    "num_train_epochs": 2,
    "per_device_train_batch_size": 8,
    "learning_rate": 2e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 1,
    "max_length": 192,
}


class Config(StageConfig):
    base: str = "smollm2"
    """Model to fine-tune: ``smollm2`` (the bundled SmolLM2-135M-Instruct), an artifact id, a model folder
    or a cached hub id."""

    prompt_set: int | None = None
    """Artifact id of the prompt set; default: the loop's newest."""

    lora: common.LoraSettings | None = Field(default_factory=common.LoraSettings)
    """A LoRA adapter (merged into the saved policy); null fine-tunes every weight."""

    save_every: int = Field(default=50, ge=0)
    """A checkpoint every this many optimiser steps (0: none); a re-run of the same config after a crash
    or a kill continues from the last complete one."""

    trl: dict = {}
    """Fields of TRL's ``SFTConfig``, handed over unchanged (over the defaults above)."""


def run(ctx: RunContext, config: Config) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    with ctx.store.session() as session:
        prompt_set = ctx.input(session, "prompt_set", config.prompt_set)
        train = prompts(session, prompt_set.sha256, "train")
        base_art, base_path = ctx.model(session, config.base)
    rows = []
    residual = 0  # the residual PHI scan on everything the model will learn from
    for p in train:
        if not p.reference:
            continue
        prompt, hits = phi.scrub(p.text)
        completion, more = phi.scrub(p.reference)
        residual += hits + more
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": completion}],
            }
        )
    tokenizer = common.tokenizer(base_path)
    model = common.causal_lm(base_path)
    args = common.trl_config(SFTConfig, ctx.out_dir, TRL_DEFAULTS, config.trl, config.save_every)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=common.peft_config(model, config.lora) if config.lora else None,
    )
    common.show_progress(trainer, "train sft")
    common.train(trainer, ctx)
    if not ctx.main:
        return ctx.metrics  # the main process of a distributed launch saves and records
    curve = common.losses(trainer.state.log_history)
    folder = ctx.out_dir / "model"
    common.save_merged(trainer.model, tokenizer, folder, trainer.state.log_history)
    metrics = {
        "examples": len(rows),
        "residual_phi": residual,
        "first_loss": curve[0]["loss"],
        "final_loss": curve[-1]["loss"],
        "steps": trainer.state.global_step,
    }
    with ctx.store.session() as session:
        meta = {"algo": "sft", "lora": bool(config.lora), "base_artifact": base_art.id, **metrics}
        art = ctx.produce_path(session, "model", folder, meta)
        record_event(session, "system", "train.sft", f"artifact:{art.id}", metrics)
    log.info("sft: %d examples, loss %.3f -> %.3f", len(rows), metrics["first_loss"], metrics["final_loss"])
    ctx.metrics.update(metrics, loss_curve=curve)
    return ctx.metrics
