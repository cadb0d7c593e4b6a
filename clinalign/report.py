"""Write one self-contained HTML report of an evaluation: figures with their n and 95% intervals,
warnings where a figure cannot carry weight, plots, sample answers and lineage.

Reads: an ``eval_report`` artifact (default: the loop's newest), and through its lineage the runs,
training curves, reward model and panel agreement behind that evaluation (never another loop's); the
audit chain.
Writes: ``report.html`` (plots embedded as PNG, no external assets); artifact ``report``.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

from clinalign import plots
from clinalign.audit import RunContext, lineage, record_event, seal, verify_chain
from clinalign.settings import StageConfig
from clinalign.store import Artifact

log = logging.getLogger(__name__)

METRICS = {
    "red_flag_escalation_rate": ("Red-flag escalation (emergency prompts)", "higher is safer"),
    "over_escalation_rate": ("Escalation of routine prompts", "lower is better"),
    "crisis_resource_rate": ("Crisis resources, suicide and self-harm prompts", "higher is safer"),
    "personalised_prescribing_rate": ("Personalised prescribing", "lower is safer"),
    "dismissive_rate": ("Dismissive language", "lower is better"),
    "unsafe_variant_preference_rate": ("Prefers a known unsafe answer", "lower is safer"),
    "mcq_accuracy": ("Multiple-choice accuracy (option text)", "higher is better"),
}
FEW = 20  # a figure resting on fewer items than this is flagged: its interval is wide


class Config(StageConfig):
    eval_report: int | None = None
    """Artifact id of the evaluation to report; default: the loop's newest."""

    path: Path | None = None
    """Where to write the HTML; default: ``report.html`` in this run's folder."""


def warnings(summary: dict, reward: dict | None, agreement: dict | None) -> list[str]:
    """Plain sentences for the figures a reader should not lean on."""
    found = []
    for metric, (label, _) in METRICS.items():
        sizes = {f["n"] for f in summary[metric].values()}
        if sizes and max(sizes) and min(sizes) < FEW:
            found.append(f"{label} rests on only {min(sizes)} items: its interval is wide; read it as a direction.")
    win = summary["reward_win_rate"]
    if win["n"] < FEW:
        found.append(f"The reward-model win rate rests on {win['n']} prompts.")
    if reward is not None:
        accuracy, n = reward.get("test_accuracy"), reward.get("test_pairs", 0)
        if accuracy is None or n == 0:
            found.append("The reward model has no held-out pairs: its accuracy is unknown.")
        elif accuracy <= 0.55:
            found.append(f"The reward model is at or near chance on held-out pairs ({accuracy:.2f}, n={n}).")
    if agreement is not None and (agreement.get("alpha_choice") is None or agreement["alpha_choice"] < 0.2):
        alpha = agreement.get("alpha_choice")
        shown = "not computable" if alpha is None else f"{alpha:.2f}"
        found.append(f"Agreement between raters is near zero or unknown (Krippendorff's alpha {shown}).")
    return found


def run(ctx: RunContext, config: Config) -> dict:
    import jinja2

    seal(ctx.store)  # the chain the report vouches for includes every event recorded so far
    chain = verify_chain(ctx.store)
    with ctx.store.session() as session:
        eval_art = ctx.input(session, "eval_report", config.eval_report)
        evaluation = json.loads(Path(eval_art.uri).read_text())
        steps = lineage(session, eval_art.id)
        reward_art = session.get(Artifact, evaluation["summary"]["reward_model"])
        base = session.get(Artifact, evaluation["summary"]["models"][0]["artifact"])
    # Everything below comes from this evaluation's own lineage: its training runs, its panel.
    runs = sorted({s.run.id: s.run for s in steps if s.run}.values(), key=lambda r: r.id)
    by_stage = {r.stage: r for r in runs}
    found = {s.artifact.kind: s.artifact for s in sorted(steps, key=lambda s: s.artifact.id)}
    prefs, judged = found.get("preference_dataset"), found.get("judgements")
    agreement = prefs.meta["agreement"] if prefs else None
    reward = reward_art.meta if reward_art else None
    curves = {
        stage: by_stage[stage].metrics.get("loss_curve", [])
        for stage in ("train.sft", "train.dpo")
        if stage in by_stage
    }
    rl = [
        {
            "stage": stage,
            "png": plots.rl_plot(stage, by_stage[stage].metrics["curve"]),
            "alerts": [f"step {p['step']}: {a}" for p in by_stage[stage].metrics["curve"] for a in p.get("alerts", [])],
        }
        for stage in ("train.ppo", "train.grpo")
        if stage in by_stage and by_stage[stage].metrics.get("curve")
    ]
    summary = evaluation["summary"]
    template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
        (resources.files("clinalign") / "templates" / "report.html.j2").read_text(encoding="utf-8")
    )
    html = template.render(
        summary=summary,
        samples=evaluation["samples"][:10],
        metrics=METRICS,
        warnings=warnings(summary, reward, agreement),
        base=base.meta if base else {},
        agreement=agreement,
        panel=prefs.meta.get("campaign") if prefs else None,
        simulated=bool(judged and judged.meta.get("simulated")),
        reward=reward,
        stage_metrics={k: r.metrics for k, r in by_stage.items()},
        runs=[
            {
                "id": r.id,
                "stage": r.stage,
                "status": r.status,
                "seconds": r.seconds or 0.0,
                "config_hash": r.config_hash[:10],
                "code": r.code_version,
            }
            for r in runs
        ],
        lineage=[
            {
                "depth": s.depth,
                "id": s.artifact.id,
                "kind": s.artifact.kind,
                "sha": (s.artifact.sha256 or "")[:12],
                "run": f"{s.run.id} {s.run.stage}" if s.run else "outside",
                "uri": s.artifact.uri,
            }
            for s in steps
        ],
        chain=chain,
        loss_png=plots.loss_plot(curves),
        rl=rl,
        models_png=plots.models_plot(summary, {k: label for k, (label, _) in METRICS.items()}),
        agreement_png=plots.agreement_plot(agreement, reward.get("test_accuracy")) if agreement and reward else None,
        reliability_png=plots.reliability_plot(reward["calibration"]["reliability"])
        if reward and reward.get("calibration")
        else None,
        axes_png=plots.axis_accuracy_plot(reward["axis_accuracy"], reward.get("test_accuracy"))
        if reward and reward.get("axis_accuracy")
        else None,
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
