"""Active selection: which items clinicians should see first, once a reward model exists.

An item's priority is the mean of two signals, each in [0, 1]:

* model uncertainty, itself the mean of two parts: the reward model's calibrated preference between the
  two answers, p = sigmoid((R_a - R_b) / T), gives 1 - |2p - 1| (1 when it cannot tell them apart, 0 when
  it is sure); and its ensemble's disagreement, twice the share of members that rank the pair against
  the others (1 when they split evenly: the model does not know, whatever its mean says). Single answers
  use the answer's reward against the campaign's median reward instead of a second answer's.
* clinician disagreement: among the usable votes so far, 1 - (share of the most common choice),
  scaled so that an even split is 1 (uncertainty sampling and vote entropy, Settles 2009, "Active
  Learning Literature Survey", sections 3.1 and 3.2).

``rank`` is pure and tested without the web; ``prioritise`` scores a campaign with a reward model
and writes ``Task.priority``, which the queue (``annotate.queue``) orders by.

Reads: a ``Campaign``'s items and judgements; a ``reward_model`` (default: the campaign's loop's newest).
Writes: ``Task.priority`` of the campaign's items (an audit event; no artifact).
"""

from __future__ import annotations

import statistics
from collections import Counter

import numpy as np
from pydantic import Field
from sqlalchemy import select

from clinalign import reward_model
from clinalign.audit import RunContext, record_event
from clinalign.schemas import PAIR_CHOICES, SINGLE_CHOICES
from clinalign.settings import StageConfig
from clinalign.store import Candidate, Judgement, Prompt, Task, campaign_by_name


class Config(StageConfig):
    campaign: str = Field(min_length=1)
    """Name of the campaign to reorder."""

    reward_model: int | None = None
    """Artifact id of the reward model; default: the newest in the campaign's loop."""


def uncertainty(preference: float, members_for: float) -> float:
    """From the calibrated P(A preferred) and the share of ensemble members that prefer A."""
    return (1.0 - abs(2.0 * preference - 1.0) + 2.0 * min(members_for, 1.0 - members_for)) / 2.0


def disagreement(votes: list[str]) -> float:
    usable = [v for v in votes if v in PAIR_CHOICES or v in SINGLE_CHOICES]
    if len(usable) < 2:
        return 0.0
    kinds = len(set(usable)) if len(set(usable)) > 1 else 2
    top = Counter(usable).most_common(1)[0][1] / len(usable)
    return min(1.0, (1.0 - top) / (1.0 - 1.0 / kinds))


def rank(model_uncertainty: dict[int, float], votes: dict[int, list[str]]) -> dict[int, float]:
    """Priority per task id: mean of model uncertainty (where the model scored it) and vote disagreement."""
    priorities = {}
    for task_id in model_uncertainty.keys() | votes.keys():
        parts = [disagreement(votes.get(task_id, []))]
        if task_id in model_uncertainty:
            parts.append(model_uncertainty[task_id])
        priorities[task_id] = sum(parts) / len(parts)
    return priorities


def prioritise(ctx: RunContext, config: Config) -> dict:
    with ctx.store.session() as session:
        campaign = campaign_by_name(session, config.campaign)
        ctx.join(session, campaign.run_id)
        model = ctx.input(session, "reward_model", config.reward_model)
        tasks = list(session.scalars(select(Task).where(Task.campaign_id == campaign.id)))
        ids = {c for t in tasks for c in (t.candidate_a_id, t.candidate_b_id) if c}
        texts = {c.id: c.text for c in session.scalars(select(Candidate).where(Candidate.id.in_(ids)))}
        prompts = {
            p.id: p.text for p in session.scalars(select(Prompt).where(Prompt.id.in_({t.prompt_id for t in tasks})))
        }
        votes: dict[int, list[str]] = {}
        for j in session.scalars(select(Judgement).where(Judgement.task_id.in_([t.id for t in tasks]))):
            votes.setdefault(j.task_id, []).append(j.choice)
    pairs = [(t, c) for t in tasks for c in (t.candidate_a_id, t.candidate_b_id) if c]
    scorer = reward_model.load(model.uri)
    scores = scorer.score([(prompts[t.prompt_id], texts[c]) for t, c in pairs])
    row = {(t.id, c): i for i, (t, c) in enumerate(pairs)}
    median = np.median(scores.members, axis=1) if pairs else np.zeros(0)  # per member
    model_uncertainty = {}
    for t in tasks:
        a = scores.members[:, row[t.id, t.candidate_a_id]]
        b = scores.members[:, row[t.id, t.candidate_b_id]] if t.candidate_b_id else median
        preference = float(scorer.preference(a.mean(), b.mean()))
        model_uncertainty[t.id] = uncertainty(preference, float((a > b).mean()))
    priorities = rank(model_uncertainty, votes)
    with ctx.store.session() as session:
        for task in session.scalars(select(Task).where(Task.campaign_id == campaign.id)):
            task.priority = priorities[task.id]
        record_event(session, "system", "campaign.prioritise", f"campaign:{campaign.id}", {"reward_model": model.id})
    values = sorted(priorities.values())
    figures = {"items": len(values), "priority_median": statistics.median(values) if values else None}
    ctx.metrics.update(figures)
    return figures
