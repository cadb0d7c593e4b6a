"""Write one self-contained HTML report of a loop: figures, plots, samples and lineage.

Reads: the newest (or given) ``eval_report`` artifact, the runs of every stage, the preference
agreement, the audit chain.
Writes: ``report.html`` (plots embedded as PNG, no external assets); artifact ``report``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from importlib import resources
from pathlib import Path

import numpy as np
from sqlalchemy import select

from clinalign.audit import RunContext, artifacts, lineage, record_event, require_artifact, seal, verify_chain
from clinalign.settings import StageConfig
from clinalign.store import Artifact, Run

log = logging.getLogger(__name__)

SAFETY_METRICS = {
    "red_flag_escalation_rate": ("Red-flag escalation (emergency prompts)", "higher is safer"),
    "personalised_prescribing_rate": ("Personalised prescribing", "lower is safer"),
    "unsafe_variant_preference_rate": ("Prefers a known unsafe answer", "lower is safer"),
    "mcq_accuracy": ("Multiple-choice accuracy", "higher is better"),
}


class Config(StageConfig):
    eval_report: int | None = None
    """Artifact id of the evaluation to report; default: the newest."""

    path: Path | None = None
    """Where to write the HTML; default: ``report.html`` in this run's folder."""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _loss_plot(curves: dict[str, list[dict]]) -> str | None:
    import matplotlib.pyplot as plt

    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3))
    for ax, (name, curve) in zip([axes] if len(curves) == 1 else axes, curves.items(), strict=True):
        ax.plot([p["step"] for p in curve], [p["loss"] for p in curve], color="#2b6cb0")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    return _png(fig)


def agreement_plot(agreement: dict, rm_accuracy: float | None = None) -> str:
    """Per-rater agreement with the rest of the panel (and gold accuracy), and alpha per axis: a PNG."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    raters = sorted((name, r) for name, r in agreement["per_rater"].items() if r["vs_rest"] is not None)
    xs = np.arange(len(raters))
    left.bar(xs - 0.2, [r["vs_rest"] for _, r in raters], width=0.4, color="#4a5568", label="vs rest of panel")
    gold = [r["gold_accuracy"] if r["gold_accuracy"] is not None else np.nan for _, r in raters]
    if not np.all(np.isnan(gold)):
        left.bar(xs + 0.2, gold, width=0.4, color="#d69e2e", label="gold accuracy")
    left.set_xticks(xs, [name for name, _ in raters])
    if rm_accuracy is not None:
        left.axhline(rm_accuracy, color="#c53030", linestyle="--", label=f"reward model ({rm_accuracy:.2f})")
    left.legend(loc="lower right", fontsize=8)
    left.axhline(0.5, color="#a0aec0", linewidth=0.8)
    left.set_ylim(0, 1)
    left.set_title("Each rater: agreement and calibration")
    left.tick_params(axis="x", rotation=30)
    alphas = {"choice": agreement["alpha_choice"], **agreement["alpha_axes"]}
    names = [k for k, v in alphas.items() if v is not None]
    right.bar(names, [alphas[k] for k in names], color="#2f855a")
    right.set_ylim(min(0, *[alphas[k] for k in names]) if names else 0, 1)
    right.set_title("Krippendorff's alpha")
    right.tick_params(axis="x", rotation=30)
    return _png(fig)


def _before_after_plot(summary: dict) -> str:
    import matplotlib.pyplot as plt

    metrics = [m for m in SAFETY_METRICS if summary[m]["before"] is not None]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    xs = range(len(metrics))
    ax.bar([x - 0.2 for x in xs], [summary[m]["before"] for m in metrics], width=0.4, label="before", color="#a0aec0")
    ax.bar([x + 0.2 for x in xs], [summary[m]["after"] for m in metrics], width=0.4, label="after", color="#2b6cb0")
    ax.set_xticks(list(xs), [SAFETY_METRICS[m][0] for m in metrics], rotation=12, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Before and after preference tuning (held-out prompts)")
    return _png(fig)


def run(ctx: RunContext, config: Config) -> dict:
    import jinja2
    import matplotlib

    matplotlib.use("Agg")

    seal(ctx.store)  # the chain the report vouches for includes every event recorded so far
    with ctx.store.session() as session:
        eval_art = require_artifact(session, "eval_report", config.eval_report)
        ctx.use(eval_art.id)
        evaluation = json.loads(Path(eval_art.uri).read_text())
        runs = list(session.scalars(select(Run).order_by(Run.id)))
        latest = {r.stage: r for r in runs if r.status == "succeeded"}
        prefs = artifacts(session, "preference_dataset")
        reward = session.get(Artifact, evaluation["summary"]["models"]["reward"])
        steps = lineage(session, eval_art.id)
        chain = verify_chain(session)
        lineage_rows = [
            {
                "depth": s.depth,
                "id": s.artifact.id,
                "kind": s.artifact.kind,
                "sha": (s.artifact.sha256 or "")[:12],
                "run": f"{s.run.id} {s.run.stage}" if s.run else "outside",
                "uri": s.artifact.uri,
            }
            for s in steps
        ]
        run_rows = [
            {
                "id": r.id,
                "stage": r.stage,
                "status": r.status,
                "seconds": r.seconds or 0.0,
                "config_hash": r.config_hash[:10],
                "code": r.code_version,
            }
            for r in runs
        ]
    summary = evaluation["summary"]
    agreement = prefs[0].meta["agreement"] if prefs else None
    rm_accuracy = reward.meta.get("test_accuracy") if reward else None
    curves = {
        stage: latest[stage].metrics.get("loss_curve", [])
        for stage in ("train.sft", "train.reward", "train.dpo")
        if stage in latest
    }
    template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
        (resources.files("clinalign") / "templates" / "report.html.j2").read_text(encoding="utf-8")
    )
    html = template.render(
        summary=summary,
        samples=evaluation["samples"][:8],
        metrics=SAFETY_METRICS,
        agreement=agreement,
        rm_accuracy=rm_accuracy,
        stage_metrics={k: r.metrics for k, r in latest.items()},
        runs=run_rows,
        lineage=lineage_rows,
        chain=chain,
        loss_png=_loss_plot(curves),
        before_after_png=_before_after_plot(summary),
        agreement_png=agreement_plot(agreement, rm_accuracy) if agreement else None,
    )
    path = config.path or ctx.out_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "report", path)
        record_event(session, "system", "report", f"artifact:{art.id}", {})
    log.info("report written to %s", path)
    ctx.metrics.update(path=str(path.resolve()))
    return ctx.metrics
