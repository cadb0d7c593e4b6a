"""Watching an RL run for reward hacking: the reward rising while the policy runs away from its
reference (KL) or its answers balloon (length), and the reward model parting ways with the rule checks.

Reads: each step's statistics (PPO's records; GRPO/RLOO's TRL log).  Writes: nothing; returns alerts.

The seeds' warning is that a policy can learn to please the reward model rather than the clinicians:
the figures that betray it are a reward going up together with a KL or a length far beyond where the
run began, and answers the reward model rates highly that the plain rules penalise (a missed emergency,
a personal dose). Each alert is one line saying which figure, its value and its limit.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class MonitorSettings(BaseModel):
    model_config = {"extra": "forbid", "use_attribute_docstrings": True}
    max_kl: float = Field(default=30.0, gt=0.0)
    """KL to the reference (nats per answer) past which a rising reward is suspect."""

    max_length_growth: float = Field(default=2.0, gt=1.0)
    """Mean answer length, as a multiple of the first step's, past which a rising reward is suspect."""

    max_disagreement: float = Field(default=0.5, ge=0.0, le=1.0)
    """Share of the reward model's top-half answers that the rules penalise, past which it is suspect."""

    stop: bool = False
    """Stop the run on the first alert (nothing is saved) instead of warning and going on."""

    kl_limit: float = Field(default=200.0, gt=0.0)
    """KL to the reference (nats per answer) past which the run stops whatever ``stop`` says: the
    policy has diverged; its last checkpoint is kept and no model is saved."""


def disagreement(model_scores: list[float], rule_scores: list[float]) -> float | None:
    """Of the answers the reward model ranks in the top half of a batch, the share the rules penalise."""
    if len(model_scores) < 2:
        return None
    ranked = sorted(range(len(model_scores)), key=lambda i: model_scores[i], reverse=True)
    top = ranked[: len(ranked) // 2]
    return sum(rule_scores[i] < 0 for i in top) / len(top)


class Monitor:
    """Checks each step's record against the first one; ``check`` returns the alerts of one step."""

    def __init__(self, settings: MonitorSettings):
        self.settings = settings
        self.first: dict | None = None

    def diverged(self, kl: float | None) -> str | None:
        """Why the run must stop now (a KL that is not finite or past ``kl_limit``), or None."""
        if kl is not None and not kl <= self.settings.kl_limit:  # NaN fails every comparison
            return f"the KL to the reference diverged ({kl:.4g} nats per answer, limit {self.settings.kl_limit})"
        return None

    def check(self, record: dict, reward_key: str = "score", kl_key: str = "kl", length_key: str = "length") -> list:
        s = self.settings
        if self.first is None:
            self.first = record
            return []
        alerts = []
        rising = record.get(reward_key, 0.0) > self.first.get(reward_key, 0.0)
        kl = record.get(kl_key)
        if rising and kl is not None and kl > s.max_kl:
            alerts.append(f"reward up while KL {kl:.1f} > {s.max_kl} nats: the policy may be gaming the reward")
        length, start = record.get(length_key), self.first.get(length_key)
        if rising and length is not None and start and length > s.max_length_growth * start:
            alerts.append(
                f"reward up while mean length {length:.0f} > {s.max_length_growth} x the first step's {start:.0f}"
            )
        split = record.get("rm_rules_disagreement")
        if split is not None and split > s.max_disagreement:
            alerts.append(
                f"the reward model's top answers break the rules ({split:.2f} > {s.max_disagreement}): "
                "reward model and rule checks disagree"
            )
        return alerts
