"""Direct preference optimisation with TRL's ``DPOTrainer`` and a LoRA adapter (PEFT).

Reads: a ``preference_dataset`` artifact; a policy model (default: the newest).
Writes: the adapter and the merged policy folder; artifact ``model`` (algo ``dpo``), with the
implicit reward margin on held-out pairs (Rafailov et al. 2023: beta * log-ratio difference).

DPO alone fits the pairs without moving behaviour much (a 60-pair run on SmolLM2 reached reward
accuracy 1.0 and escalated emergencies no more often); the default adds an SFT term on the chosen
answers and trains LoRA on the top layers only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from clinalign.audit import RunContext, record_event
from clinalign.settings import StageConfig
from clinalign.train import common

log = logging.getLogger(__name__)

# Sized for SmolLM2-135M on two CPU cores with LoRA on its top 8 layers; any DPOConfig field overrides
# these. The reference log-probabilities are computed once before training (the reference is the
# policy with its adapter switched off), so each step runs the policy only.
TRL_DEFAULTS = {
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-3,
    "beta": 0.1,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 1,
    "max_length": 192,
    "precompute_ref_log_probs": True,
}


class Config(StageConfig):
    base: str | None = None
    """Policy to tune: artifact id, model folder or cached hub id; default: the policy whose answers the
    clinicians judged (by lineage), so the preferences are on its own outputs."""

    dataset: int | None = None
    """Artifact id of the preference dataset; default: the loop's newest."""

    sft_weight: float = Field(default=1.0, ge=0.0)
    """Weight of an SFT term on the chosen answers next to the DPO loss (TRL's ``loss_type=["sigmoid",
    "sft"]``, as in RPO, Pang et al. 2024): it keeps the policy writing the answers clinicians chose
    instead of only moving away from rejected ones. 0: plain DPO. A ``trl.loss_type`` overrides it."""

    lora: common.LoraSettings = Field(default_factory=common.LoraSettings)

    save_every: int = Field(default=50, ge=0)
    """A checkpoint every this many optimiser steps (0: none); a re-run of the same config after a crash
    or a kill continues from the last complete one."""

    trl: dict = {}
    """Fields of TRL's ``DPOConfig``, handed over unchanged (over the defaults above)."""


def run(ctx: RunContext, config: Config) -> dict:
    from trl import DPOConfig, DPOTrainer

    with ctx.store.session() as session:
        dataset_art = ctx.input(session, "preference_dataset", config.dataset)
        base_art, base_path = ctx.model(session, config.base, common.judged_policy(session, dataset_art))
    train, test = common.preference_data(Path(dataset_art.uri), ["prompt", "chosen", "rejected"])
    tokenizer = common.tokenizer(base_path)
    model = common.causal_lm(base_path)
    losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, config.sft_weight]} if config.sft_weight else {}
    args = common.trl_config(DPOConfig, ctx.out_dir, {**TRL_DEFAULTS, **losses}, config.trl, config.save_every)
    # TRL resolves the reference model from the policy's path: with a LoRA adapter the reference is
    # the same weights with the adapter switched off, so no second copy is loaded.
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        processing_class=tokenizer,
        peft_config=common.peft_config(model, config.lora),
    )
    common.show_progress(trainer, "train dpo")
    common.train(trainer, ctx)
    if not ctx.main:
        return ctx.metrics  # the main process of a distributed launch saves and records
    metrics = {"train_pairs": len(train), "test_pairs": len(test) if test is not None else 0}
    if test is not None and len(test):
        held_out = trainer.evaluate()
        metrics["test_reward_margin"] = held_out["eval_rewards/margins"]
        metrics["test_reward_accuracy"] = held_out["eval_rewards/accuracies"]
    curve = common.losses(trainer.state.log_history)
    common.save(trainer, tokenizer, ctx.out_dir / "adapter", trainer.state.log_history)
    folder = ctx.out_dir / "model"
    common.save_merged(trainer.model, tokenizer, folder, trainer.state.log_history)
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "model", folder, {"algo": "dpo", "base_artifact": base_art.id, **metrics})
        record_event(session, "system", "train.dpo", f"artifact:{art.id}", metrics)
    log.info("dpo: %s", metrics)
    ctx.metrics.update(metrics, loss_curve=curve)
    return ctx.metrics
