"""Monitoring: safety measured in use, over a window of served interactions.

Reads: ``Interaction`` and ``Flag`` rows (de-identified); for drift, a reference set of prompts (a
``prompt_set`` artifact, by default the window of the same length before this one).
Writes: ``monitor.json`` (artifact ``monitor_report``), which the web app's monitoring page shows.

Figures, each a rate with its n and Wilson 95% interval:

* guardrail trip rates by rule and category; the unsafe rate (answers the output rails had to change
  for safety: a dose removed, emergency guidance added the model left out, PHI replaced...); the
  escalation (tier 3), hold (tier 2) and flag rates; clinicians' override rate per tier;
* fairness: the same rates per value of every demographic tag clients send (``metadata``), and the
  largest gap between groups large enough to compare;
* drift of incoming prompts: all-MiniLM-L6-v2 embeddings of the window against the reference, tested
  with SciPy's two-sample Kolmogorov-Smirnov test on each prompt's cosine similarity to the
  reference centroid, and per embedding dimension (Bonferroni-corrected).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clinalign import stats
from clinalign.audit import RunContext
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import Flag, Interaction, Prompt, utcnow

# Reasons the output rails give when they had to change the model's own answer for safety.
UNSAFE_RULES = {
    "personalised_prescribing",
    "off_label",
    "definitive_diagnosis",
    "phi_leak",
    "escalation",
    "crisis_resources",
    "poison_control",
    "urgent_care",
}


class Config(StageConfig):
    hours: float = Field(default=168.0, gt=0)
    """The window: interactions of the last this many hours (default a week)."""

    reference: int | None = None
    """A ``prompt_set`` artifact whose prompts are the drift reference; default: the window of the same
    length just before this one."""

    min_group: int = Field(default=20, ge=1)
    """Fairness gaps compare only groups with at least this many interactions."""

    drift_alpha: float = Field(default=0.01, gt=0, lt=1)
    """Significance level of the drift tests."""

    max_prompts: int = Field(default=2000, ge=10)
    """At most this many prompts per side are embedded for drift (the newest)."""

    encoder: str | None = None
    """Sentence encoder folder for drift (default: the bundled all-MiniLM-L6-v2)."""


def _question(interaction: Interaction) -> str:
    users = [m["content"] for m in interaction.messages if m["role"] == "user"]
    return users[-1] if users else ""


def _unsafe(interaction: Interaction) -> bool:
    return any(
        r["rule"] in UNSAFE_RULES and (r["rule"] != "escalation" or r.get("category") == "added")
        for r in interaction.reasons
    )


def rates(interactions: list[Interaction], flagged: set[int]) -> dict:
    """The safety rates of a set of interactions."""
    n = len(interactions)
    return {
        "n": n,
        "unsafe_rate": stats.proportion(sum(map(_unsafe, interactions)), n),
        "escalation_rate": stats.proportion(sum(i.tier == 3 for i in interactions), n),
        "hold_rate": stats.proportion(sum(i.tier == 2 for i in interactions), n),
        "block_rate": stats.proportion(sum(i.status == "blocked" for i in interactions), n),
        "flag_rate": stats.proportion(sum(i.id in flagged for i in interactions), n),
    }


def trips(interactions: list[Interaction]) -> dict[str, dict]:
    """Share of interactions on which each rule (and category) fired."""
    counted: Counter = Counter()
    for interaction in interactions:
        counted.update({f"{r['rule']}:{r.get('category', '')}".rstrip(":") for r in interaction.reasons})
    return {name: stats.proportion(hits, len(interactions)) for name, hits in counted.most_common()}


def fairness(interactions: list[Interaction], flagged: set[int], min_group: int) -> dict[str, dict]:
    """Per demographic tag: the rates of each group, and the largest gap between groups of ``min_group``
    or more (None when fewer than two such groups)."""
    by_tag: dict[str, dict[str, list[Interaction]]] = defaultdict(lambda: defaultdict(list))
    for interaction in interactions:
        for tag, value in (interaction.tags or {}).items():
            by_tag[tag][value].append(interaction)
    found = {}
    for tag, groups in sorted(by_tag.items()):
        figures = {value: rates(members, flagged) for value, members in sorted(groups.items())}
        comparable = {v: f for v, f in figures.items() if f["n"] >= min_group}
        gaps = {}
        for measure in ("unsafe_rate", "escalation_rate", "hold_rate", "flag_rate"):
            values = [f[measure]["value"] for f in comparable.values()]
            gaps[measure] = max(values) - min(values) if len(values) >= 2 else None
        found[tag] = {"groups": figures, "gaps": gaps, "comparable": sorted(comparable)}
    return found


def drift(reference: list[str], current: list[str], encoder: str, alpha: float) -> dict:
    """Two-sample tests on sentence embeddings (see the module docstring); ``drift`` is True when either
    test rejects at ``alpha``."""
    import numpy as np
    from scipy.stats import ks_2samp

    from clinalign import embed

    if len(reference) < 10 or len(current) < 10:
        return {
            "n_reference": len(reference),
            "n_current": len(current),
            "drift": None,
            "note": "fewer than 10 prompts on a side: no test",
        }
    ref = np.asarray(embed.embed(reference, encoder))
    cur = np.asarray(embed.embed(current, encoder))
    total = ref.sum(axis=0)
    centroid = total / np.linalg.norm(total)
    # Each reference prompt is compared with the centroid of the others: against a centroid it helped
    # make, the reference would look closer than any new sample (in 384 dimensions, by a lot).
    others = total - ref
    ref_similarity = (ref * others).sum(axis=1) / np.linalg.norm(others, axis=1)
    cur_similarity = cur @ centroid
    centroid_test = ks_2samp(ref_similarity, cur_similarity)
    dims = ref.shape[1]
    per_dim = np.array([ks_2samp(ref[:, d], cur[:, d]).pvalue for d in range(dims)])
    drifted = int((per_dim < alpha / dims).sum())
    return {
        "n_reference": len(reference),
        "n_current": len(current),
        "centroid_similarity": {
            "reference_mean": float((ref @ centroid).mean()),
            "current_mean": float((cur @ centroid).mean()),
        },
        "centroid_ks": {"statistic": float(centroid_test.statistic), "p_value": float(centroid_test.pvalue)},
        "dimensions_drifted": drifted,
        "dimensions": dims,
        "drift": bool(centroid_test.pvalue < alpha or drifted > 0),
    }


def override_rates(session: Session, since: datetime | None = None, until: datetime | None = None) -> dict[int, dict]:
    """Per tier: how often clinicians overrode the machine. Tier 2: edited or rejected among reviewed;
    tiers 1 and 3: answers sent that a clinician flagged."""
    scope = [Interaction.created_at >= since] if since else []
    scope += [Interaction.created_at < until] if until else []
    decided_statuses = ("approved", "edited", "rejected")
    flagged = select(Flag.interaction_id).where(Flag.user_id.is_not(None))
    found = {}
    for tier in (1, 2, 3):
        if tier == 2:
            base = [Interaction.tier == 2, Interaction.status.in_(decided_statuses), *scope]
            overriding = [Interaction.status.in_(("edited", "rejected"))]
        else:
            base = [Interaction.tier == tier, Interaction.status == "sent", *scope]
            overriding = [Interaction.id.in_(flagged)]
        n = session.scalar(select(func.count()).where(*base))
        overridden = session.scalar(select(func.count()).where(*base, *overriding))
        found[tier] = {"n": n, "overridden": overridden, "rate": overridden / n if n else None}
    return found


def window(session: Session, since: datetime, until: datetime) -> list[Interaction]:
    query = select(Interaction).where(Interaction.created_at >= since, Interaction.created_at < until)
    return list(session.scalars(query.order_by(Interaction.id)))


def figures(session: Session, since: datetime, until: datetime, min_group: int = 20) -> dict:
    """Everything but drift, for a window (the web page computes these live)."""
    interactions = window(session, since, until)
    ids = [i.id for i in interactions]
    flagged = set(session.scalars(select(Flag.interaction_id).where(Flag.interaction_id.in_(ids)))) if ids else set()
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "rates": rates(interactions, flagged),
        "trips": trips(interactions),
        "override": override_rates(session, since, until),
        "fairness": fairness(interactions, flagged, min_group),
    }


def run(ctx: RunContext, config: Config) -> dict:
    from clinalign import embed

    until = utcnow()
    since = until - timedelta(hours=config.hours)
    with ctx.store.session() as session:
        found = figures(session, since, until, config.min_group)
        if found["rates"]["n"] == 0:
            raise ClinalignError(f"no served interactions in the last {config.hours:g} hours")
        current = [_question(i) for i in window(session, since, until)][-config.max_prompts :]
        if config.reference is not None:
            prompt_set = ctx.input(session, "prompt_set", config.reference)
            version = prompt_set.meta.get("dataset_version")
            reference = list(session.scalars(select(Prompt.text).where(Prompt.dataset_version == version)))
            where = f"prompt set {prompt_set.id}"
        else:
            reference = [_question(i) for i in window(session, since - (until - since), since)]
            where = "the previous window"
        reference = reference[-config.max_prompts :]
        found["drift"] = {
            "reference": where,
            **drift(reference, current, config.encoder or embed.default_path(), config.drift_alpha),
        }
        path = ctx.out_dir / "monitor.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(found, indent=1))
        ctx.produce_path(session, "monitor_report", path, {"n": found["rates"]["n"], "drift": found["drift"]["drift"]})
    summary = {
        "interactions": found["rates"]["n"],
        "unsafe_rate": found["rates"]["unsafe_rate"]["value"],
        "escalation_rate": found["rates"]["escalation_rate"]["value"],
        "drift": found["drift"]["drift"],
        "path": str(path),
    }
    return summary
