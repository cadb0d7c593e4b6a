"""The PPO stage: ``ppo_algorithm.PPO`` tuning the policy on the clinical reward.

Reads: a ``prompt_set`` (its training prompts), a policy (default: the loop's newest model), a
``reward_model`` (default: the loop's newest), or a ``clinalign reward serve`` address.
Writes: the tuned policy, merged (a plain model folder), with its per-step statistics; artifact
``model`` (``algo: ppo``).

The reward of an answer: the clinical reward model's safety-gated aggregate plus the rule penalties
(``rule_reward``: a missed emergency, an over-triaged routine question, a personal dose).
"""

from __future__ import annotations

import logging

import torch
from pydantic import Field

from clinalign import guardrails, progress
from clinalign.audit import RunContext, record_event
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig
from clinalign.train import common
from clinalign.train.monitor import Monitor, MonitorSettings, disagreement
from clinalign.train.ppo_algorithm import PPO, KLSettings

log = logging.getLogger(__name__)


class Config(StageConfig):
    prompt_set: int | None = None
    """Artifact id of the prompt set; default: the loop's newest."""

    base: str | None = None
    """Policy to tune: artifact id, folder or ``smollm2``; default: the loop's newest model."""

    reward_model: int | None = None
    """Artifact id of the clinical reward model; default: the loop's newest."""

    reward_url: str | None = None
    """Score through a ``clinalign reward serve`` address instead of loading the reward model in each
    process (its key in ``CLINALIGN_REWARD_API_KEY``)."""

    reward_timeout: float = Field(default=60.0, gt=0.0)
    """Seconds one scoring call to ``reward_url`` may take before it counts as failed."""

    reward_retries: int = Field(default=2, ge=0)
    """Failed scoring calls to ``reward_url`` tried again (after 1 s, 2 s, ...) before the run stops."""

    rule_weight: float = Field(default=1.0, ge=0.0)
    """Weight of the rule penalties (missed emergency, personal dose) added to the reward model's score."""

    over_triage_penalty: float = Field(default=0.5, ge=0.0)
    """Rule penalty for sending a routine question to emergency care (a missed emergency costs 1)."""

    steps: int = Field(default=8, ge=1)
    batch_size: int = Field(default=8, ge=1)
    """Prompts per step (one answer each), over all processes of a distributed launch."""

    minibatch_size: int = Field(default=4, ge=1)
    epochs: int = Field(default=2, ge=1)
    """Passes over each step's answers."""

    max_new_tokens: int = Field(default=48, ge=1)
    temperature: float = Field(default=1.0, gt=0.0)
    learning_rate: float = Field(default=1e-4, gt=0.0)
    clip_range: float = Field(default=0.2, gt=0.0)
    clip_range_value: float = Field(default=0.2, gt=0.0)
    value_coef: float = Field(default=0.1, ge=0.0)
    gamma: float = Field(default=1.0, gt=0.0, le=1.0)
    lam: float = Field(default=0.95, ge=0.0, le=1.0)
    score_clip: float = Field(default=5.0, gt=0.0)
    whiten_scores: bool = True
    """Whiten each batch's scores (mean 0, variance 1) before the KL term is added: the reward model's
    differences between answers are small next to a KL term counted over every token (on the tests' toy
    task, unwhitened scores barely moved the policy in 30 steps; whitened, the reward rose in 20)."""

    kl: KLSettings = Field(default_factory=KLSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    """Reward-hacking alerts (``train/monitor.py``), and whether an alert stops the run."""

    report_to: list[str] = []
    """Accelerate trackers to log each step to (``tensorboard``, ``mlflow``, ``wandb``), when installed."""

    lora: common.LoraSettings | None = Field(default_factory=common.LoraSettings)
    """LoRA (the reference is then the adapter switched off); None tunes every weight and keeps a frozen copy."""

    save_every: int = Field(default=4, ge=0)
    """Keep a checkpoint every this many steps (0: none). A re-run of the same config after a crash or a
    kill continues from the last one, and ends as an uninterrupted run would."""

    log_dir: str | None = None
    """Where trackers write (default: the run's folder)."""

    bf16: bool = False
    """bf16 autocast on a CPU that computes bf16 natively (on a GPU, ``accelerate launch`` decides).
    Off by default: in bf16 a run resumed after a kill ends within bf16's precision of an uninterrupted
    one (1% apart on a KL of 0.005 in the tests), not within fp32's."""

    seed: int = 0


def rule_reward(risk: str, answer: str, over_triage: float = 0.5) -> float:
    """The guardrail rules as a reward: -1 for a missed emergency, -``over_triage`` for escalating a
    routine question, -1 for a personal dose (the simulated panel's safety rubric, as plain checks)."""
    verdict = guardrails.signs(answer)
    penalty = 0.0
    if risk == "emergency" and not verdict.escalates:
        penalty -= 1.0
    elif risk == "routine" and verdict.escalates:
        penalty -= over_triage
    if verdict.personalised_prescribing:
        penalty -= 1.0
    return penalty


def _scorer(config: Config, rm_art):
    """The reward model's scorer: the service at ``reward_url``, else the artifact's folder, loaded here."""
    from clinalign import rewards

    if config.reward_url is None:
        return rewards.Local(rm_art.uri)
    try:
        return rewards.Remote(config.reward_url, timeout=config.reward_timeout, retries=config.reward_retries)
    except rewards.RewardError as err:
        raise ClinalignError(f"reward_url: {err}") from None


def _score(scorer, prompts: list[str], answers: list[str]) -> list[float]:
    """The reward model's aggregates (the service, when it is one, tried again as ``reward_retries`` says)."""
    from clinalign import rewards

    try:
        return scorer.score(prompts, answers)["aggregate"]
    except rewards.RewardError as err:
        raise ClinalignError(f"reward model: {err}") from None


def _served(ctx: RunContext, health: dict):
    """The served reward model as an input of this run when it is an artifact of this store (same id,
    same digest), so lineage names it; else None (the metrics still say what was served)."""
    from clinalign.store import Artifact

    if health.get("artifact") is None:
        return None
    with ctx.store.session() as session:
        art = session.get(Artifact, health["artifact"])
        if art is None or art.kind != "reward_model" or art.sha256 != health.get("sha256"):
            return None
        ctx.use(art.id)
        return art


def run(ctx: RunContext, config: Config) -> dict:
    with ctx.store.session() as session:
        prompt_art = ctx.input(session, "prompt_set", config.prompt_set)
        rm_art = ctx.input(session, "reward_model", config.reward_model) if config.reward_url is None else None
        base_art, base_path = ctx.model(session, config.base)
        rows = common.rl_prompts(session, prompt_art)
    risk = dict(rows)
    scorer = _scorer(config, rm_art)
    if config.reward_url is not None:
        ctx.metrics["reward_service"] = {"url": config.reward_url, **scorer.health}
        rm_art = _served(ctx, scorer.health)
    parts: dict[str, list[float]] = {}  # the last batch's reward-model and rule scores, for the monitor

    def reward_fn(prompts: list[str], answers: list[str]) -> list[float]:
        parts["model"] = _score(scorer, prompts, answers)
        pairs = zip(prompts, answers, strict=True)
        parts["rules"] = [rule_reward(risk[p], a, config.over_triage_penalty) for p, a in pairs]
        return [m + config.rule_weight * r for m, r in zip(parts["model"], parts["rules"], strict=True)]

    tokenizer = common.tokenizer(base_path)
    settings = config.model_copy(update={"log_dir": config.log_dir or str(ctx.out_dir / "logs")})
    trainer = PPO(common.causal_lm(base_path), tokenizer, reward_fn, settings)
    monitor = Monitor(config.monitor)
    generator = torch.Generator().manual_seed(config.seed)  # the same on every process: the same prompts
    with ctx.store.session() as session:
        resume = ctx.resume_point(session)
    if resume is not None:
        extra = trainer.load(resume)
        generator.set_state(extra["generator"])
        monitor.first = trainer.history[0] if trainer.history else None
        log.warning("ppo: continuing from %s (step %d)", resume, len(trainer.history))
        ctx.metrics["resumed_from_step"] = len(trainer.history)
    with progress.task("train ppo", config.steps) as advance:
        advance(len(trainer.history))
        for _ in range(len(trainer.history), config.steps):
            pick = torch.randint(len(rows), (config.batch_size,), generator=generator).tolist()
            try:
                record = trainer.step([rows[i][0] for i in pick])
            except ClinalignError as err:
                raise ClinalignError(f"ppo: {err}; {common.kept(ctx, len(trainer.history) + 1, resume)}") from None
            model_scores, rule_scores = trainer.everyone(parts["model"]), trainer.everyone(parts["rules"])
            record.update(
                reward_model=sum(model_scores) / len(model_scores),
                rules=sum(rule_scores) / len(rule_scores),
                rm_rules_disagreement=disagreement(model_scores, rule_scores),
            )
            if reason := monitor.diverged(record["kl"]):
                raise ClinalignError(f"ppo: {reason}; {common.kept(ctx, record['step'], resume)}")
            record["alerts"] = monitor.check(record)
            for alert in record["alerts"]:
                log.warning("ppo step %d: %s", record["step"], alert)
            if record["alerts"] and config.monitor.stop:
                raise ClinalignError(f"ppo: {record['alerts'][0]}; {common.kept(ctx, record['step'], resume)}")
            log.info("ppo step %d: %s", record["step"], record)
            step = record["step"]
            if config.save_every and step % config.save_every == 0 and step < config.steps:
                trainer.save(ctx.out_dir / "checkpoints" / f"step-{step}", {"generator": generator.get_state()})
            advance(1)
    if not ctx.main:
        return ctx.metrics  # the main process saves and records the policy
    folder = ctx.out_dir / "model"
    common.save_merged(trainer.policy(), tokenizer, folder, trainer.history)
    metrics = {
        "steps": config.steps,
        "processes": trainer.accelerator.num_processes,
        "first_score": trainer.history[0]["score"],
        "final_score": trainer.history[-1]["score"],
        "final_kl": trainer.history[-1]["kl"],
        "final_kl_coef": trainer.history[-1]["kl_coef"],
        "alerts": sum(len(h["alerts"]) for h in trainer.history),
    }
    with ctx.store.session() as session:
        meta = {"algo": "ppo", "base_artifact": base_art.id, **metrics}
        if rm_art is not None:
            meta["reward_model"] = rm_art.id
        art = ctx.produce_path(session, "model", folder, meta)
        record_event(session, "system", "train.ppo", f"artifact:{art.id}", metrics)
    ctx.metrics.update(metrics, curve=trainer.history)
    return ctx.metrics
