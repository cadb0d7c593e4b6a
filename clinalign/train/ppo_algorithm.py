"""The PPO algorithm (Ziegler et al. 2019; Ouyang et al. 2022) on any causal LM and any
``reward_fn(prompts, answers) -> list[float]``, written here on Accelerate: TRL 1.16 has no PPO trainer.
``train/ppo.py`` is the stage that gives it the clinical reward; the tests give it a toy task.

Reads: nothing of the store (a model, a tokenizer and a reward function are handed to it).
Writes: its checkpoints (``PPO.save``) where the stage says; the stage saves and records the policy.

One step:

1. sample an answer to each prompt of a batch from the policy;
2. score each answer with ``reward_fn``, clipped, optionally whitened;
3. per token, reward = -kl_coef * (log pi - log pi_ref), plus the score on the last token; the reference
   is the policy with its LoRA adapter switched off (no second copy of the model in memory);
4. advantages by GAE from a value head on the policy's last hidden state, whitened;
5. a few epochs of minibatch updates of the clipped policy loss and the clipped value loss;
6. the adaptive KL controller moves ``kl_coef`` towards the KL target.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, Field

from clinalign.schemas import ClinalignError
from clinalign.train import common

if TYPE_CHECKING:
    from clinalign.train.ppo import Config

log = logging.getLogger(__name__)


class KLSettings(BaseModel):
    model_config = {"extra": "forbid", "use_attribute_docstrings": True}
    coef: float = Field(default=0.05, ge=0.0)
    """Initial weight of the per-token KL penalty."""

    target: float | None = Field(default=6.0, gt=0.0)
    """KL (nats per answer) the adaptive controller steers towards; None keeps ``coef`` fixed."""

    horizon: int = Field(default=10_000, ge=1)
    """How many answers the controller takes to close the gap (Ziegler et al. 2019)."""


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


def whiten(values: torch.Tensor, mask: torch.Tensor | None = None, population: torch.Tensor | None = None):
    """Values shifted to mean 0 and scaled to variance 1 by the statistics of ``population`` (default:
    the values themselves) over the positions ``mask`` keeps."""
    population = values if population is None else population
    mask = torch.ones_like(population) if mask is None else mask
    n = mask.sum().clamp(min=1)
    mean = (population * mask).sum() / n
    var = (((population - mean) * mask) ** 2).sum() / n
    return (values - mean) * torch.rsqrt(var + 1e-8)


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
        # On a GPU the precision is what `accelerate launch` configures; on a CPU, bf16 only when asked
        # and computed natively (emulated, it is tens of times slower).
        on_cpu = not torch.cuda.is_available()
        if on_cpu and settings.bf16 and not common.native_bf16():
            log.warning("ppo: bf16 asked, but this CPU does not compute bf16 natively: training in fp32")
        self.accelerator = Accelerator(
            cpu=on_cpu,
            # None, not "no": another trainer in this process may already have set Accelerate's state
            mixed_precision="bf16" if on_cpu and settings.bf16 and common.native_bf16() else None,
            log_with=settings.report_to or None,
            project_dir=settings.log_dir,
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
        with self.accelerator.autocast():
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
        """Log-probabilities of the answer tokens, the value of each answer position, and the entropy
        there (a statistic: no gradient). Positions count from each row's first real token, as in
        generation (prompts are padded on the left)."""
        inputs = {
            "input_ids": ids,
            "attention_mask": attention,
            "position_ids": (attention.cumsum(1) - 1).clamp(min=0),
            "logits_to_keep": ids.shape[1] - width + 1,  # no vocabulary projection of the prompt
        }
        if reference and self.reference is not None:
            with self.accelerator.autocast():  # an unprepared copy: not wrapped in it
                output = self.reference(**inputs)
        elif reference:
            with self.accelerator.unwrap_model(self.model).disable_adapter():
                output = self.model(**inputs)
        else:
            output = self.model(**inputs, output_hidden_states=True)
        logits = output.logits[:, :-1].float() / self.settings.temperature  # as sampled
        every = torch.log_softmax(logits, -1)
        logprobs = every.gather(2, ids[:, width:, None])[..., 0]
        if reference:
            return logprobs, None, None
        values = self.value_head(output.hidden_states[-1][:, width - 1 : -1].float())[..., 0]
        with torch.no_grad():
            entropy = -(every.exp() * every).sum(-1)
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
        if s.whiten_scores and len(every_raw) > 1:  # by every process's scores
            scores = whiten(scores, population=every_raw.clamp(-s.score_clip, s.score_clip))
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
                    entropy=float((entropy * m).sum() / m.sum()),
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
