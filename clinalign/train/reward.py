"""Reward model with TRL's ``RewardTrainer`` on the panel's consensus pairs.

Reads: a ``preference_dataset`` artifact (train split to learn, test split to measure); a backbone
(default: the newest policy model, given a scalar head).
Writes: a sequence-classification model folder; artifact ``reward_model`` with its held-out pairwise
accuracy against the panel majority.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clinalign.audit import RunContext, record_event
from clinalign.settings import StageConfig
from clinalign.train import common

log = logging.getLogger(__name__)

TRL_DEFAULTS = {
    "num_train_epochs": 3,
    "per_device_train_batch_size": 16,
    "learning_rate": 5e-4,
    "lr_scheduler_type": "linear",
    "max_length": 384,
}


class Config(StageConfig):
    base: str | None = None
    """Backbone: artifact id, model folder or cached hub id; default: the policy whose answers the
    clinicians judged (by lineage)."""

    dataset: int | None = None
    """Artifact id of the preference dataset; default: the loop's newest."""

    trl: dict = {}
    """Fields of TRL's ``RewardConfig``, handed over unchanged (over the defaults above)."""


def run(ctx: RunContext, config: Config) -> dict:
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    with ctx.store.session() as session:
        dataset_art = ctx.input(session, "preference_dataset", config.dataset)
        _, base_path = ctx.model(session, config.base, common.judged_policy(session, dataset_art))
    train, test = common.preference_data(Path(dataset_art.uri), ["prompt", "chosen", "rejected", "margin"])
    tokenizer = common.tokenizer(base_path)
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = common.trl_config(RewardConfig, ctx.out_dir, TRL_DEFAULTS, config.trl)
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, eval_dataset=test, processing_class=tokenizer)
    common.show_progress(trainer, "train reward")
    trainer.train()
    metrics = {"train_pairs": len(train), "test_pairs": len(test) if test is not None else 0}
    if test is not None and len(test):
        held_out = trainer.evaluate()
        metrics["test_accuracy"] = held_out["eval_accuracy"]
        metrics["test_loss"] = held_out["eval_loss"]
    curve = common.losses(trainer.state.log_history)
    folder = ctx.out_dir / "model"
    common.save(trainer, tokenizer, folder, trainer.state.log_history)
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "reward_model", folder, metrics)
        record_event(session, "system", "train.reward", f"artifact:{art.id}", metrics)
    log.info("reward model: %s", metrics)
    ctx.metrics.update(metrics, loss_curve=curve)
    return ctx.metrics
