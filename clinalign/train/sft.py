"""Supervised fine-tuning with TRL's ``SFTTrainer`` on a prompt set's reference answers.

Reads: ``Prompt`` rows (train split) of a prompt set; a base model, or none (a small model is built
from scratch, see ``train/scratch.py``).
Writes: a policy model folder; artifact ``model`` (with its loss curve).
"""

from __future__ import annotations

import logging

from pydantic import Field

from clinalign import phi
from clinalign.audit import RunContext, record_event
from clinalign.settings import StageConfig
from clinalign.store import prompts
from clinalign.train import common
from clinalign.train.scratch import ScratchConfig, build_scratch

log = logging.getLogger(__name__)

# Sized for the from-scratch demo model on two CPU cores; any SFTConfig field overrides these.
TRL_DEFAULTS = {
    "num_train_epochs": 12,
    "per_device_train_batch_size": 16,
    "learning_rate": 2e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 10,
    "max_length": 384,
}


class Config(StageConfig):
    base: str | None = None
    """Model folder, cached hub id or artifact id to fine-tune; none builds a small model from scratch."""

    scratch: ScratchConfig = Field(default_factory=ScratchConfig)
    """Shape of the from-scratch model (used only when ``base`` is empty)."""

    prompt_set: int | None = None
    """Artifact id of the prompt set; default: the loop's newest."""

    include_variants: bool = False
    """Also train on the unsafe and unhelpful variants. The demo sets this so that its starting policy,
    like a real base model, answers well sometimes and badly sometimes: that is what raters judge."""

    trl: dict = {}
    """Fields of TRL's ``SFTConfig``, handed over unchanged (over the defaults above)."""


def run(ctx: RunContext, config: Config) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    with ctx.store.session() as session:
        prompt_set = ctx.input(session, "prompt_set", config.prompt_set)
        train = prompts(session, prompt_set.sha256, "train")
        base_path = ctx.model(session, config.base)[1] if config.base else None
    rows = []
    residual = 0  # the residual PHI scan on everything the model will learn from
    for p in train:
        answers = [p.reference] if p.reference else []
        if config.include_variants:
            answers += [v["text"] for v in p.variants]
        prompt, hits = phi.scrub(p.text)
        residual += hits
        for answer in answers:
            completion, hits = phi.scrub(answer)
            residual += hits
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "completion": [{"role": "assistant", "content": completion}],
                }
            )
    if base_path is None:
        corpus = [p.text for p in train] + [r["completion"][0]["content"] for r in rows]
        base_path = str(build_scratch(corpus, config.scratch, ctx.out_dir / "scratch"))
    tokenizer = common.tokenizer(base_path)
    args = common.trl_config(SFTConfig, ctx.out_dir, TRL_DEFAULTS, config.trl)
    trainer = SFTTrainer(model=base_path, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    common.show_progress(trainer, "train sft")
    trainer.train()
    curve = common.losses(trainer.state.log_history)
    folder = ctx.out_dir / "model"
    common.save(trainer, tokenizer, folder, trainer.state.log_history)
    metrics = {
        "examples": len(rows),
        "residual_phi": residual,
        "first_loss": curve[0]["loss"],
        "final_loss": curve[-1]["loss"],
    }
    with ctx.store.session() as session:
        art = ctx.produce_path(
            session, "model", folder, {"algo": "sft", "from_scratch": config.base is None, **metrics}
        )
        record_event(session, "system", "train.sft", f"artifact:{art.id}", metrics)
    log.info("sft: %d examples, loss %.3f -> %.3f", len(rows), metrics["first_loss"], metrics["final_loss"])
    ctx.metrics.update(metrics, loss_curve=curve)
    return ctx.metrics
