"""Write one self-contained HTML report of an evaluation (figures with their n and 95% intervals,
warnings where a figure cannot carry weight, plots, sample answers and lineage) and the model card of
the policy it evaluated, from one canonical record.

Reads: the loop's ``eval_report`` (default: its newest that is not a suite's), and through its lineage
the runs, training curves, reward model and panel agreement behind that evaluation (never another
loop's); for the card (``card.py``): every ``eval_report`` of the same policy (the suites too), the
lineage of the policy and its reward model with their hashes, the panel's raters, the releases, the
guardrail policy and the card facts (``data/model_card.yaml``, under ``card``); the audit chain.
Writes: ``report.html`` (plots embedded as PNG, the model card embedded, no external assets) and,
beside it, ``model_card.md`` (Hugging Face), ``model_card.html`` and ``chai_model_card.json`` (CHAI);
artifacts ``report`` and ``model_card`` (one per file, with the record's sha256) and audit events.

A card whose required fields are not all filled stops the stage before any file is written
(``record.validated`` names each empty field).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from clinalign import guardrails, plots
from clinalign.audit import RunContext, lineage, loop_evaluation, record_event, seal, verify_chain
from clinalign.report import card, record, render
from clinalign.report.figures import LABELS
from clinalign.report.findings import FEW
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import Artifact

log = logging.getLogger(__name__)

# The loop's figures in the report's table, in this order; their labels are the card's (one table).
METRICS = {
    key: LABELS[key][:2]
    for key in (
        "red_flag_escalation_rate",
        "over_escalation_rate",
        "crisis_resource_rate",
        "personalised_prescribing_rate",
        "dismissive_rate",
        "unsafe_variant_preference_rate",
        "mcq_accuracy",
    )
}


class Config(StageConfig):
    eval_report: int | None = None
    """Artifact id of the loop's evaluation to report; default: the loop's newest (a suite's evaluation
    of the same policy is shown in the model card, not reported on its own)."""

    path: Path | None = None
    """Where to write the HTML; default: ``report.html`` in this run's folder. The model card's files go
    beside it."""

    card: Path | None = None
    """The site's card facts (developer, contact, intended and out-of-scope uses per stakeholder,
    standing limitations, GMLP...), a YAML laid key by key over the bundled ``data/model_card.yaml``."""

    policy: Path | None = None
    """The guardrail policy the model is served with (``clinalign serve --policy``); default: the shipped one."""


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


def _evaluation(ctx: RunContext, session, ref: int | None) -> Artifact:
    """The loop's evaluation to report: ``ref``, else the loop's newest that is not a suite's (the
    suites' evaluations of its policy reach the report through the model card)."""
    found = ctx.input(session, "eval_report", ref, keep=loop_evaluation)
    if "suite" in found.meta:
        raise ClinalignError(
            f"eval_report {ref} is the {found.meta['suite']} suite's: the report reads the loop's evaluation "
            "(`clinalign evaluate`), and its model card shows every suite run on the same policy"
        )
    return found


def run(ctx: RunContext, config: Config) -> dict:
    import jinja2
    from markupsafe import Markup

    seal(ctx.store)  # the chain the report vouches for includes every event recorded so far
    chain = verify_chain(ctx.store)
    facts = record.facts(config.card)
    rules = guardrails.load(config.policy) if config.policy is not None else guardrails.load()
    with ctx.store.session() as session:
        eval_art = _evaluation(ctx, session, config.eval_report)
        evaluation = json.loads(Path(eval_art.uri).read_text())
        steps = lineage(session, eval_art.id)
        reward_art = session.get(Artifact, evaluation["summary"]["reward_model"])
        base = session.get(Artifact, evaluation["summary"]["models"][0]["artifact"])
        # The card is built, and checked whole, before any file is written: an empty required field
        # stops the stage here, naming it.
        the_card = card.build(ctx, session, eval_art, facts, rules, chain)
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
    card_html = render.html_fragment(the_card)
    template = jinja2.Environment(
        loader=jinja2.PackageLoader("clinalign", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    ).get_template("report.html.j2")
    html = template.render(
        card_html=Markup(card_html),
        card_name=the_card.name,
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
    cards = render.write(the_card, path.parent)
    path.write_text(html, encoding="utf-8")
    digest = the_card.sha256()
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "report", path, {"model_card": digest})
        record_event(session, "system", "report", f"artifact:{art.id}", {})
        made = {
            kind: ctx.produce_path(
                session,
                "model_card",
                where,
                {"format": kind, "policy": the_card.policy_artifact, "record_sha256": digest},
            ).id
            for kind, where in cards.items()
        }
        payload = {"policy": the_card.policy_artifact, "record_sha256": digest, "artifacts": sorted(made.values())}
        record_event(session, "system", "model_card", f"artifact:{the_card.policy_artifact}", payload)
    log.info("report written to %s, model card beside it", path)
    ctx.metrics.update(
        path=str(path.resolve()),
        model_card={kind: str(where.resolve()) for kind, where in cards.items()},
        model_card_sha256=digest,
    )
    return ctx.metrics
