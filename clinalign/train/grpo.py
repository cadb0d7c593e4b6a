"""GRPO and RLOO through TRL, on the clinical reward model's callables and the guardrail rules.

Reads: a ``prompt_set`` (its training prompts and their risk), a policy (default: the loop's newest
model), a ``reward_model`` (default: the loop's newest).
Writes: the tuned policy, merged, with TRL's log history (reward per function, KL, lengths); artifact
``model`` (``algo: grpo`` or ``rloo``).

TRL given a reward *model* reads only its first logit, which on the multi-head clinical model would be
one axis; so TRL gets reward *functions* instead (``rewards.trl_reward_functions``): the safety-gated
aggregate, one per axis, and the rules (``clinical_rules``: a missed emergency, over-triage, a personal
dose), weighed by ``reward_weights``. An axis at weight 0 is still logged: a monitor, not a target.
``beta`` (the KL coefficient to the reference) must be above 0: without it nothing holds the policy near
what it was. vLLM generates when ``vllm: true`` and it is installed (it is not a dependency).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Literal

from pydantic import Field

from clinalign import rewards
from clinalign.audit import RunContext, record_event
from clinalign.schemas import AXES, ClinalignError
from clinalign.settings import StageConfig
from clinalign.train import common
from clinalign.train.monitor import Monitor, MonitorSettings
from clinalign.train.ppo import rule_reward

log = logging.getLogger(__name__)

# Sized for SmolLM2-135M on two CPU cores with LoRA on its top 8 layers; any field of TRL's config
# overrides these.
TRL_DEFAULTS = {
    "max_steps": 8,
    "per_device_train_batch_size": 4,
    "num_generations": 4,
    "max_completion_length": 48,
    "learning_rate": 1e-4,
    "beta": 0.04,
    "temperature": 1.0,
}


MONITORED = [f"clinical_{axis}" for axis in AXES]


class Config(StageConfig):
    algorithm: Literal["grpo", "rloo"] = "grpo"
    prompt_set: int | None = None
    """Artifact id of the prompt set; default: the loop's newest."""

    base: str | None = None
    """Policy to tune: artifact id, folder or ``smollm2``; default: the loop's newest model."""

    reward_model: int | None = None
    """Artifact id of the clinical reward model; default: the loop's newest."""

    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {"clinical_aggregate": 1.0, "clinical_rules": 1.0} | dict.fromkeys(MONITORED, 0.0)
    )
    """Weight of each reward function (``clinical_aggregate``, ``clinical_rules``, ``clinical_<axis>``);
    one left out is not computed."""

    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    """Reward-hacking alerts on TRL's log (reward against KL and length; the reward-model/rules split is
    PPO's, which sees each answer's parts), and whether one stops the run."""

    vllm: bool = False
    """Generate with vLLM (installed separately; GPU only)."""

    lora: common.LoraSettings | None = Field(default_factory=common.LoraSettings)
    save_every: int = Field(default=50, ge=0)
    """A checkpoint every this many optimiser steps (0: none); a re-run of the same config after a crash
    or a kill continues from the last complete one."""

    trl: dict = {}
    """Fields of TRL's ``GRPOConfig``/``RLOOConfig``, handed over unchanged (over the defaults above)."""


def clinical_rules(prompts, completions, risk, **_kwargs) -> list[float]:
    """The guardrail rules as a TRL reward function (the dataset's ``risk`` column comes as a keyword)."""
    return [rule_reward(level, rewards.text_of(answer)) for level, answer in zip(risk, completions, strict=True)]


def reward_functions(folder: str, weights: dict[str, float]) -> tuple[list, list[float]]:
    """The reward functions the weights name, in one order, with their weights."""
    known = {"clinical_aggregate", "clinical_rules", *(f"clinical_{a}" for a in AXES)}
    unknown = sorted(set(weights) - known)
    if unknown:
        raise ClinalignError(f"reward_weights: unknown function {unknown[0]} (known: {', '.join(sorted(known))})")
    if not any(weights.values()):
        raise ClinalignError("reward_weights: every weight is 0; nothing would be optimised")
    axes = [a for a in AXES if f"clinical_{a}" in weights]
    model = rewards.trl_reward_functions(folder, axes=axes, aggregate="clinical_aggregate" in weights)
    functions = model + ([clinical_rules] if "clinical_rules" in weights else [])
    return functions, [weights[f.__name__] for f in functions]


def watcher(settings: MonitorSettings):
    """A TRL callback that checks each logged step with the monitor, and stops training on an alert
    when told to; its ``alerts`` list every alert raised."""
    from transformers import TrainerCallback

    class Watch(TrainerCallback):
        def __init__(self):
            self.monitor, self.alerts, self.stopped = Monitor(settings), [], None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs:
                return
            length = logs.get("completions/mean_length")
            # TRL logs the KL per token; the monitor's limit is per answer, as PPO's.
            kl = logs["kl"] * length if "kl" in logs and length else logs.get("kl")
            if reason := self.monitor.diverged(kl):
                self.stopped = f"step {state.global_step}: {reason}"
                control.should_training_stop = True
                control.should_save = False  # the diverged state is no checkpoint to continue from
                return
            found = self.monitor.check({"reward": logs["reward"], "kl": kl, "length": length}, reward_key="reward")
            for alert in found:
                log.warning("step %d: %s", state.global_step, alert)
            self.alerts += found
            if found and settings.stop:
                self.stopped = f"step {state.global_step}: {found[0]}"
                control.should_training_stop = True

    return Watch()


def run(ctx: RunContext, config: Config) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    if config.vllm and importlib.util.find_spec("vllm") is None:
        raise ClinalignError("vllm: true, but vLLM is not installed (pip install vllm, on a GPU machine)")
    with ctx.store.session() as session:
        prompt_art = ctx.input(session, "prompt_set", config.prompt_set)
        rm_art = ctx.input(session, "reward_model", config.reward_model)
        base_art, base_path = ctx.model(session, config.base)
        rows = common.rl_prompts(session, prompt_art)
    functions, weights = reward_functions(rm_art.uri, config.reward_weights)
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if config.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    args = common.trl_config(
        config_cls,
        ctx.out_dir,
        {**TRL_DEFAULTS, "use_vllm": config.vllm, "reward_weights": weights},
        config.trl,
        config.save_every,
    )
    if args.beta <= 0:
        raise ClinalignError("trl.beta must be above 0: the KL to the reference is what keeps the policy near it")
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": text}], "risk": risk} for text, risk in rows])
    tokenizer = common.tokenizer(base_path)
    model = common.causal_lm(base_path)
    trainer = trainer_cls(
        model=model,
        reward_funcs=functions,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=common.peft_config(model, config.lora) if config.lora else None,
    )
    common.show_progress(trainer, f"train {config.algorithm}")
    watch = watcher(config.monitor)
    trainer.add_callback(watch)
    resumed = common.train(trainer, ctx)
    if watch.stopped:
        step = trainer.state.global_step
        raise ClinalignError(f"{config.algorithm}: {watch.stopped}; {common.kept(ctx, step, resumed)}")
    if not ctx.main:
        return ctx.metrics  # the main process saves and records the policy
    history = trainer.state.log_history
    steps = [e for e in history if "reward" in e]
    if not steps:
        raise ClinalignError(f"{config.algorithm}: TRL logged no reward; nothing was trained")
    folder = ctx.out_dir / "model"
    common.save_merged(trainer.model, tokenizer, folder, history)
    metrics = {
        "algorithm": config.algorithm,
        "steps": trainer.state.global_step,
        "first_reward": steps[0]["reward"],
        "final_reward": steps[-1]["reward"],
        "final_kl": steps[-1].get("kl"),
        "alerts": len(watch.alerts),
    }
    with ctx.store.session() as session:
        meta = {"algo": config.algorithm, "base_artifact": base_art.id, "reward_model": rm_art.id, **metrics}
        art = ctx.produce_path(session, "model", folder, meta)
        record_event(session, "system", f"train.{config.algorithm}", f"artifact:{art.id}", metrics)
    log.info("%s: reward %.3f -> %.3f", config.algorithm, metrics["first_reward"], metrics["final_reward"])
    ctx.metrics.update(metrics, curve=steps)
    return ctx.metrics
