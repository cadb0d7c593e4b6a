"""PPO with a KL penalty (Ziegler et al. 2019; Ouyang et al. 2022), written here on Accelerate: TRL 1.16
has no PPO trainer.

Reads: a ``prompt_set`` (its training prompts), a policy (default: the loop's newest model), a
``reward_model`` (default: the loop's newest).
Writes: the tuned policy, merged (a plain model folder), with its per-step statistics; artifact
``model`` (``algo: ppo``).

One step:

1. sample an answer to each prompt of a batch from the policy;
2. score each answer: the clinical reward model's safety-gated aggregate plus the rule penalties
   (``rule_reward``: a missed emergency, a personal dose), clipped, optionally whitened;
3. per token, reward = -kl_coef * (log pi - log pi_ref), plus the score on the last token; the reference
   is the policy with its LoRA adapter switched off (no second copy of the model in memory);
4. advantages by GAE from a value head on the policy's last hidden state, whitened;
5. a few epochs of minibatch updates of the clipped policy loss and the clipped value loss;
6. the adaptive KL controller moves ``kl_coef`` towards the KL target.

``PPO`` is the algorithm on any causal LM and any ``reward_fn(prompts, answers) -> list[float]`` (the
tests give it a toy task); ``run`` is the stage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from clinalign import guardrails, progress
from clinalign.audit import RunContext, record_event
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig
from clinalign.train import common
from clinalign.train.monitor import Monitor, MonitorSettings, disagreement

log = logging.getLogger(__name__)


class KLSettings(BaseModel):
    model_config = {"extra": "forbid", "use_attribute_docstrings": True}
    coef: float = Field(default=0.05, ge=0.0)
    """Initial weight of the per-token KL penalty."""

    target: float | None = Field(default=6.0, gt=0.0)
    """KL (nats per answer) the adaptive controller steers towards; None keeps ``coef`` fixed."""

    horizon: int = Field(default=10_000, ge=1)
    """How many answers the controller takes to close the gap (Ziegler et al. 2019)."""


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

    seed: int = 0


class KLController:
    """The adaptive KL coefficient: grows when the policy drifts past the target, shrinks below it; the
    relative error is clipped to +-20% and applied in proportion to answers / ``horizon``. Without a
    target it stays fixed."""

    def __init__(self, settings: KLSettings):
        self.value, self.target, self.horizon = settings.coef, settings.target, settings.horizon

    def update(self, kl: float, answers: int) -> None:
        if self.target is None:
            return
        error = max(-0.2, min(0.2, kl / self.target - 1.0))
        self.value *= 1.0 + error * answers / self.horizon


def whiten(values: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True) -> torch.Tensor:
    """Values scaled to variance 1 (and mean 0) over the positions ``mask`` keeps."""
    mask = torch.ones_like(values) if mask is None else mask
    n = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / n
    var = (((values - mean) * mask) ** 2).sum() / n
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: the KL penalty at every answer token, the score added at the last one; and
    the per-token KL estimate (log pi - log pi_ref)."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.sum(1).long().clamp(min=1) - 1
    rewards[torch.arange(len(scores), device=rewards.device), last] += scores
    return rewards, kl


def gae(rewards, values, mask, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each answer's tokens; returns the
    advantages and the returns (the value targets)."""
    rewards, values = rewards * mask, values * mask  # past an answer's end: nothing earned, nothing worth
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], device=rewards.device)
    steps = rewards.shape[1]
    for t in reversed(range(steps)):
        following = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        running = rewards[:, t] + gamma * following - values[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages * mask, (advantages + values) * mask


def ppo_losses(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, mask, settings: Config):
    """The clipped policy loss, the clipped value loss, and what they say (clip fraction, approx. KL)."""
    n = mask.sum().clamp(min=1)
    ratio = torch.exp((new_logprobs - old_logprobs) * mask)  # padding: ratio 1, never inf * 0
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - settings.clip_range, 1 + settings.clip_range)
    policy = (torch.max(unclipped, clipped) * mask).sum() / n
    values_clipped = old_values + (new_values - old_values).clamp(-settings.clip_range_value, settings.clip_range_value)
    value = 0.5 * (torch.max((new_values - returns) ** 2, (values_clipped - returns) ** 2) * mask).sum() / n
    with torch.no_grad():
        stats = {
            "clip_fraction": float(((clipped > unclipped).float() * mask).sum() / n),
            "approx_kl": float((0.5 * (new_logprobs - old_logprobs) ** 2 * mask).sum() / n),
        }
    return policy, value, stats


class PPO:
    """The algorithm: a policy (with LoRA, or in full with a frozen copy as reference), a value head,
    one optimiser, and the KL controller, prepared by Accelerate (CPU, one GPU or several).

    Under ``accelerate launch`` each process answers its share of every step's prompts and scores them;
    scores are whitened, checked and summarised over all processes, and gradients averaged (DDP), so
    every process takes the same decisions (the KL coefficient, a stop)."""

    def __init__(self, model, tokenizer, reward_fn: Callable[[list[str], list[str]], list[float]], settings: Config):
        import copy

        from accelerate import Accelerator

        torch.manual_seed(settings.seed)
        self.settings, self.tokenizer, self.reward_fn = settings, tokenizer, reward_fn
        if settings.lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, common.peft_config(model, settings.lora))
            self.reference = None
        else:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.value_head = torch.nn.Linear(model.config.hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        trainable = [p for p in model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        optimiser = torch.optim.AdamW(trainable, lr=settings.learning_rate)
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(), log_with=settings.report_to or None, project_dir=settings.log_dir
        )
        processes = self.accelerator.num_processes
        if settings.batch_size % processes:
            raise ClinalignError(f"batch_size {settings.batch_size} does not split over {processes} processes")
        if settings.report_to:
            self.accelerator.init_trackers("clinalign-ppo")
        self.model, self.value_head, self.optimiser = self.accelerator.prepare(model, self.value_head, optimiser)
        torch.manual_seed(settings.seed + self.accelerator.process_index)  # each process samples its own answers
        if self.reference is not None:
            self.reference.to(self.accelerator.device)
        stops = model.generation_config.eos_token_id
        stops = set(stops if isinstance(stops, list) else [stops]) | {tokenizer.eos_token_id}
        self.stops = torch.tensor(sorted(s for s in stops if s is not None))
        self.kl = KLController(settings.kl)
        self.history: list[dict] = []

    # --- rollouts -------------------------------------------------------------------------------

    def _encode(self, prompts: list[str]):
        chat = self.tokenizer.apply_chat_template
        texts = [chat([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]
        self.tokenizer.padding_side = "left"
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    @torch.no_grad()
    def rollout(self, prompts: list[str]):
        """Sampled answers: the full token ids, the answer mask, and the answers as text."""
        batch = self._encode(prompts).to(self.accelerator.device)
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=self.settings.temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=self.settings.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        width = batch["input_ids"].shape[1]
        answer = out[:, width:]
        eos = self.tokenizer.eos_token_id
        stop = torch.isin(answer, self.stops.to(answer.device))  # any token the model's generation ends on
        ended = stop.int().cumsum(1)
        mask = ((ended == 0) | ((ended == 1) & stop)).float()  # up to and including the first stop
        attention = torch.cat([batch["attention_mask"], mask.long()], dim=1)
        texts = self.tokenizer.batch_decode(answer * mask.long() + eos * (1 - mask.long()), skip_special_tokens=True)
        return out, attention, mask, width, [t.strip() for t in texts]

    def _forward(self, ids, attention, width: int, reference: bool = False):
        """Log-probabilities of the answer tokens, and the value of each answer position. Positions count
        from each row's first real token, as in generation (prompts are padded on the left)."""
        inputs = {"input_ids": ids, "attention_mask": attention, "position_ids": (attention.cumsum(1) - 1).clamp(min=0)}
        if reference and self.reference is not None:
            output = self.reference(**inputs)
        elif reference:
            with self.accelerator.unwrap_model(self.model).disable_adapter():
                output = self.model(**inputs)
        else:
            output = self.model(**inputs, output_hidden_states=True)
        logits = output.logits[:, width - 1 : -1].float() / self.settings.temperature  # as sampled
        logprobs = torch.log_softmax(logits, -1).gather(2, ids[:, width:, None])[..., 0]
        if reference:
            return logprobs, None, None
        values = self.value_head(output.hidden_states[-1][:, width - 1 : -1].float())[..., 0]
        entropy = torch.distributions.Categorical(logits=logits).entropy()
        return logprobs, values, entropy

    # --- one step -----------------------------------------------------------------------------

    def everyone(self, values: list) -> list:
        """``values`` of every process, in process order (this process's own when it runs alone)."""
        from accelerate.utils import gather_object

        return gather_object(values)

    def step(self, prompts: list[str]) -> dict:
        """One PPO step on the step's ``prompts`` (all processes': each answers its own share)."""
        s = self.settings
        prompts = prompts[self.accelerator.process_index :: self.accelerator.num_processes]
        ids, attention, mask, width, answers = self.rollout(prompts)
        raw = torch.tensor(self.reward_fn(prompts, answers), dtype=torch.float, device=self.accelerator.device)
        every_raw = self.accelerator.gather(raw)
        if not torch.isfinite(every_raw).all():
            raise ClinalignError("the reward function returned a non-finite reward: stopped before any update")
        scores = raw.clamp(-s.score_clip, s.score_clip)
        if s.whiten_scores and len(every_raw) > 1:
            every = every_raw.clamp(-s.score_clip, s.score_clip)
            scores = (scores - every.mean()) * torch.rsqrt(every.var(unbiased=False) + 1e-8)
        self.model.eval()
        with torch.no_grad():
            old_logprobs, old_values, _ = self._forward(ids, attention, width)
            ref_logprobs, _, _ = self._forward(ids, attention, width, reference=True)
        rewards, kl = token_rewards(scores, old_logprobs, ref_logprobs, mask, self.kl.value)
        advantages, returns = gae(rewards, old_values, mask, s.gamma, s.lam)
        advantages = whiten(advantages, mask) * mask
        self.model.train()
        seen = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0, "entropy": 0.0}
        updates = 0
        for _ in range(s.epochs):
            order = torch.randperm(len(prompts))
            for start in range(0, len(prompts), s.minibatch_size):
                pick = order[start : start + s.minibatch_size]
                new_logprobs, new_values, entropy = self._forward(ids[pick], attention[pick], width)
                policy, value, stats = ppo_losses(
                    new_logprobs, old_logprobs[pick], advantages[pick], new_values,
                    old_values[pick], returns[pick], mask[pick], s,
                )  # fmt: skip
                loss = policy + s.value_coef * value
                if not torch.isfinite(loss):
                    step = len(self.history) + 1
                    raise ClinalignError(f"PPO loss is {loss.item()} at step {step}: stopped before the update")
                self.optimiser.zero_grad()
                self.accelerator.backward(loss)
                self.optimiser.step()
                updates += 1
                m = mask[pick]
                stats.update(
                    policy_loss=policy.item(),
                    value_loss=value.item(),
                    entropy=float((entropy.detach() * m).sum() / m.sum()),
                )
                for key in seen:
                    seen[key] += stats[key]
        # Means over every process's answers, so that all take the same decisions from them.
        local = {"kl": kl.sum(1).mean(), "length": mask.sum(1).mean(), **{k: v / updates for k, v in seen.items()}}
        names = list(local)
        means = self.accelerator.reduce(torch.stack([torch.as_tensor(local[k]).float() for k in names]), "mean")
        record = {
            "step": len(self.history) + 1,
            "score": float(every_raw.mean()),
            "kl_coef": self.kl.value,
            **{k: float(v) for k, v in zip(names, means.tolist(), strict=True)},
        }
        if not math.isfinite(record["kl"]) or not math.isfinite(record["policy_loss"]):
            raise ClinalignError(f"PPO diverged at step {record['step']} (KL {record['kl']}): stopped")
        self.kl.update(record["kl"], len(every_raw))
        self.history.append(record)
        if self.settings.report_to:
            self.accelerator.log(record, step=record["step"])
        return record

    # --- checkpoints ---------------------------------------------------------------------------

    def _trainable(self) -> dict:
        model = self.accelerator.unwrap_model(self.model)
        return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}

    def save(self, folder: Path, extra: dict) -> None:
        """What a resumed run needs: trainable weights, value head, optimiser, KL coefficient, history,
        random states, and the caller's ``extra``."""
        state = {
            "trainable": self._trainable(),
            "value_head": self.accelerator.unwrap_model(self.value_head).state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "kl": self.kl.value,
            "history": self.history,
            "torch_rng": self.everyone([torch.get_rng_state()]),  # one per process
            "cuda_rng": self.everyone([torch.cuda.get_rng_state_all()]) if torch.cuda.is_available() else None,
            "extra": extra,
        }
        if self.accelerator.is_main_process:
            common.write_checkpoint(folder, state)
        self.accelerator.wait_for_everyone()

    def load(self, folder: Path) -> dict:
        """Continue from a checkpoint ``save`` wrote; returns its ``extra``."""
        state = common.read_checkpoint(folder)
        model = self.accelerator.unwrap_model(self.model)
        missing = set(self._trainable()) - set(state["trainable"])
        if missing:
            raise ClinalignError(f"checkpoint {folder} does not fit this model (no {sorted(missing)[0]})")
        model.load_state_dict(state["trainable"], strict=False)
        self.accelerator.unwrap_model(self.value_head).load_state_dict(state["value_head"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.kl.value, self.history = state["kl"], state["history"]
        rank, processes = self.accelerator.process_index, self.accelerator.num_processes
        if len(state["torch_rng"]) != processes:
            made = len(state["torch_rng"])
            raise ClinalignError(f"checkpoint {folder} was made by {made} processes; this launch has {processes}")
        torch.set_rng_state(state["torch_rng"][rank])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"][rank])
        return state["extra"]

    def policy(self):
        """The tuned policy as a plain model (a LoRA adapter merged in)."""
        model = self.accelerator.unwrap_model(self.model)
        return model.merge_and_unload() if self.reference is None else model


# --- the stage ------------------------------------------------------------------------------------


def rule_reward(risk: str, answer: str, over_triage: float = 0.5) -> float:
    """The guardrail rules as a reward: -1 for a missed emergency, -``over_triage`` for escalating a
    routine question, -1 for a personal dose (the simulated panel's safety rubric, as plain checks)."""
    verdict = guardrails.check(answer)
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
