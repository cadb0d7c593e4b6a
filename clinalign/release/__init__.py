"""The model registry: promotion of an evaluated model to the served release, gated on safety, and
rollback. ``clinalign serve`` serves the current release only.

Reads: an ``eval_report`` (default: the loop's newest evaluation that is not a suite's) and the
registry (``release`` artifacts).
Writes: a ``release`` artifact per promotion or rollback: the version, the model, the evaluation that
let it through, the margins it was held to, who did it (and an audit event).

The gate (``promote``): the evaluation must compare the candidate with the model currently released
(or, for the first release, with whatever baseline it was evaluated against), and no safety metric
may be worse in the candidate than in that baseline by more than its margin; a refusal names every
metric that regressed, with both figures and their n.
"""

from __future__ import annotations

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from clinalign.audit import RunContext, loop_evaluation, record_event
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import Artifact

# The safety metrics of ``evaluate``, and which way is better.
SAFETY: dict[str, str] = {
    "red_flag_escalation_rate": "higher",
    "crisis_resource_rate": "higher",
    "over_escalation_rate": "lower",
    "personalised_prescribing_rate": "lower",
    "dismissive_rate": "lower",
    "unsafe_variant_preference_rate": "lower",
}


class Config(StageConfig):
    eval_report: int | None = None
    """The evaluation of the candidate (default: the loop's newest)."""

    margins: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(SAFETY, 0.0))
    """How much worse than the released model each safety metric may be (absolute, as a rate). 0: no
    regression at all. A metric left out may not regress either."""

    note: str = Field(default="", max_length=2000)
    """Why this release (kept with it, shown by ``clinalign releases``)."""


def releases(session: Session) -> list[Artifact]:
    """Every release, oldest first."""
    return list(session.scalars(select(Artifact).where(Artifact.kind == "release").order_by(Artifact.id)))


def current(session: Session) -> Artifact | None:
    """The release being served: the newest promotion or rollback."""
    found = releases(session)
    return found[-1] if found else None


def regressions(summary: dict, margins: dict[str, float]) -> list[str]:
    """Each safety metric the evaluation's policy ("after") is worse on than its baseline ("before") by
    more than its margin, as a sentence."""
    found = []
    for metric, better in SAFETY.items():
        figures = summary.get(metric) or {}
        before, after = figures.get("before") or {}, figures.get("after") or {}
        if before.get("value") is None or after.get("value") is None:
            continue  # no items of that kind in the test split: nothing to compare
        worse = before["value"] - after["value"] if better == "higher" else after["value"] - before["value"]
        margin = margins.get(metric, 0.0)
        if worse > margin + 1e-12:
            found.append(
                f"{metric} went from {before['value']:.3f} (n={before['n']}) to {after['value']:.3f} "
                f"(n={after['n']}), {worse:.3f} worse, beyond its margin of {margin:g}"
            )
    return found


def promote(ctx: RunContext, config: Config) -> dict:
    unknown = sorted(set(config.margins) - set(SAFETY))
    if unknown:
        raise ClinalignError(f"margins: unknown safety metric(s) {unknown}; known: {', '.join(SAFETY)}")
    with ctx.store.session() as session:
        report = ctx.input(session, "eval_report", config.eval_report, keep=loop_evaluation)
        summary = report.meta
        by_key = {m["key"]: m for m in summary.get("models", [])}
        if "after" not in by_key or "before" not in by_key:
            raise ClinalignError(f"eval_report {report.id}: it does not compare a policy with a baseline")
        candidate, baseline = by_key["after"]["artifact"], by_key["before"]["artifact"]
        served = current(session)
        if served is not None and served.meta["model"] == candidate:
            raise ClinalignError(f"model {candidate} is already the current release (v{served.meta['version']})")
        if served is not None and served.meta["model"] != baseline:
            raise ClinalignError(
                f"eval_report {report.id} compares model {candidate} with model {baseline}, not with the current "
                f"release (v{served.meta['version']}, model {served.meta['model']}): evaluate it against that "
                f"(clinalign evaluate --model {candidate} --set baseline={served.meta['model']})"
            )
        if not any(summary.get(m) for m in SAFETY):
            raise ClinalignError(
                f"eval_report {report.id} has no safety figures (a benchmark suite?): promote on the loop's "
                "evaluation (clinalign evaluate), which measures them"
            )
        refused = regressions(summary, config.margins)
        if refused:
            record_event(session, "release", "release.refused", f"artifact:{candidate}", {"eval_report": report.id})
            raise ClinalignError("promotion refused: " + "; ".join(refused))
        model = session.get(Artifact, candidate)
        ctx.use(model.id)
        version = len(releases(session)) + 1
        meta = {
            "version": version,
            "action": "promote",
            "model": model.id,
            "model_uri": model.uri,
            "model_sha256": model.sha256,
            "eval_report": report.id,
            "baseline": baseline,
            "margins": {m: config.margins.get(m, 0.0) for m in SAFETY},
            "safety": {m: summary.get(m) for m in SAFETY},
            "note": config.note,
        }
        release = ctx.produce(session, "release", f"release://v{version}", model.sha256, meta)
        record_event(session, "release", "release.promote", f"artifact:{release.id}", {"version": version})
    return {"version": version, "model": meta["model"], "eval_report": report.id}
