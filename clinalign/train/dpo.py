"""Direct preference optimisation with TRL's ``DPOTrainer`` and a LoRA adapter (PEFT).

Reads: a ``preference_dataset`` artifact; a policy model (default: the newest).
Writes: the adapter and the merged policy folder; artifact ``model`` (algo ``dpo``), with the
implicit reward margin on held-out pairs (Rafailov et al. 2023: beta * log-ratio difference).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, Field

from clinalign.audit import RunContext, record_event
from clinalign.settings import StageConfig
from clinalign.train import common

log = logging.getLogger(__name__)

TRL_DEFAULTS = {
    "num_train_epochs": 3,
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-3,
    "beta": 0.1,
    "lr_scheduler_type": "linear",
    "max_length": 384,
}


class LoraSettings(BaseModel):
    model_config = {"extra": "forbid", "use_attribute_docstrings": True}
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    """PEFT's target modules; ``all-linear`` adapts every linear layer except the output head."""


class Config(StageConfig):
    base: str | None = None
    """Policy to tune: artifact id, model folder or cached hub id; default: the policy whose answers the
    clinicians judged (by lineage), so the preferences are on its own outputs."""

    dataset: int | None = None
    """Artifact id of the preference dataset; default: the loop's newest."""

    lora: LoraSettings = Field(default_factory=LoraSettings)

    trl: dict = {}
    """Fields of TRL's ``DPOConfig``, handed over unchanged (over the defaults above)."""


def run(ctx: RunContext, config: Config) -> dict:
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    with ctx.store.session() as session:
        dataset_art = ctx.input(session, "preference_dataset", config.dataset)
        base_art, base_path = ctx.model(session, config.base, common.judged_policy(session, dataset_art))
    train, test = common.preference_data(Path(dataset_art.uri), ["prompt", "chosen", "rejected"])
    tokenizer = common.tokenizer(base_path)
    peft_config = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    args = common.trl_config(DPOConfig, ctx.out_dir, TRL_DEFAULTS, config.trl)
    # TRL resolves the reference model from the policy's path: with a LoRA adapter the reference is
    # the same weights with the adapter switched off, so no second copy is loaded.
    trainer = DPOTrainer(
        model=base_path,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    common.show_progress(trainer, "train dpo")
    trainer.train()
    metrics = {"train_pairs": len(train), "test_pairs": len(test) if test is not None else 0}
    if test is not None and len(test):
        held_out = trainer.evaluate()
        metrics["test_reward_margin"] = held_out["eval_rewards/margins"]
        metrics["test_reward_accuracy"] = held_out["eval_rewards/accuracies"]
    curve = common.losses(trainer.state.log_history)
    common.save(trainer, tokenizer, ctx.out_dir / "adapter", trainer.state.log_history)
    merged = trainer.model.merge_and_unload()
    folder = ctx.out_dir / "model"
    merged.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "model", folder, {"algo": "dpo", "base_artifact": base_art.id, **metrics})
        record_event(session, "system", "train.dpo", f"artifact:{art.id}", metrics)
    log.info("dpo: %s", metrics)
    ctx.metrics.update(metrics, loss_curve=curve)
    return ctx.metrics
