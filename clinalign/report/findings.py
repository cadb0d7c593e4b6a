"""What the model card concludes from its record: the limitations this model's own figures show (a
simulated panel, raters who barely agree, a reward model near chance or poorly calibrated, figures on
few items, suites not run, a partial evaluation, no release) before the standing ones of the facts; how
to use the model; and, for each Good Machine Learning Practice principle, the evidence the record holds
(which field, what it says), or that it holds none.

Reads: the parts of a record being built (``card.build``) and the card facts.  Writes: nothing.
"""

from __future__ import annotations

from clinalign.report.figures import shown
from clinalign.report.record import Annotation, Facts, Guardrails, Oversight, Release, Result, RewardModel
from clinalign.store import Artifact

FEW = 20  # a figure resting on fewer items than this is read as a direction only (as in the report)


def limitations(facts: Facts, parts: dict) -> list[str]:
    """The limitations this model's own figures show, then the standing ones."""
    found = []
    annotation: Annotation | None = parts["annotation"]
    if annotation is None:
        found.append("No clinician judged this model's answers: nothing in its lineage was aligned by a panel.")
    elif annotation.simulated:
        found.append(
            f"SIMULATED PANEL: the {annotation.judgements} judgements that trained this model came from "
            f"{annotation.simulated_raters or annotation.raters} simulated raters (rule-following personas "
            f"with noise), not from clinicians; {annotation.real_clinicians} real clinicians took part."
        )
    if annotation is not None and (annotation.alpha_choice is None or annotation.alpha_choice < 0.2):
        alpha = "not computable" if annotation.alpha_choice is None else f"{annotation.alpha_choice:.2f}"
        found.append(f"Raters barely agree (Krippendorff's alpha {alpha}): the preferences are noisy.")
    reward: RewardModel | None = parts["reward_model"]
    if reward is not None:
        if reward.test_accuracy is None or reward.test_pairs == 0:
            found.append("The reward model has no held-out pairs: its accuracy is unknown.")
        elif reward.test_accuracy <= 0.55:
            found.append(
                f"The reward model is at or near chance on held-out pairs ({reward.test_accuracy:.2f}, "
                f"n={reward.test_pairs}): its rewards and win rates say little."
            )
        if reward.ece is not None and reward.ece > 0.1:
            found.append(f"The reward model is poorly calibrated (ECE {reward.ece:.2f}).")
    few = sorted({(r.label, r.figure.n) for r in parts["results"] if r.is_policy and 0 < r.figure.n < FEW})
    if few:
        listed = "; ".join(f"{label} (n={n})" for label, n in few[:8])
        more = f" and {len(few) - 8} more" if len(few) > 8 else ""
        found.append(f"{len(few)} figures rest on fewer than {FEW} items, so their intervals are wide: {listed}{more}.")
    groups = {r.group for r in parts["results"] if r.is_policy and r.figure.n}
    if "fairness" not in groups:
        found.append(
            "Not evaluated across demographic groups: no fairness figures (clinalign evaluate --suite fairness)."
        )
    for evaluation in parts["evaluations"]:
        if not evaluation.complete:
            found.append(
                f"eval_report {evaluation.artifact} ({evaluation.suite}) is INCOMPLETE: some items went ungraded, "
                "so its figures rest on fewer items than it was run on."
            )
    measured = {name for r in parts["results"] if r.is_policy and r.figure.n for name in r.metric.split(".")}
    if not {"harmful_refusal_rate", "phi_leak_rate"} <= measured:
        found.append("Harmful-request refusal and PHI leaks not measured (clinalign evaluate --suite safety).")
    if parts["license_fallback"]:
        found.append("The base model's licence is not recorded in its lineage: check it before any use.")
    if not parts["release"].history:
        found.append("Not released: it has not passed the safety gate against a served model (clinalign promote).")
    if not parts["audit_ok"]:
        found.append("The audit chain failed verification when this card was made (clinalign audit verify).")
    return found + [line for line in facts.limitations or [] if line]


def usage(policy: Artifact, release: Release, evaluation: int) -> list[str]:
    promote = (
        f"It is release {release.version}; `clinalign serve` serves the current release."
        if release.history
        else f"Release it first: `clinalign promote --set eval_report={evaluation}` (refused when a safety "
        "metric regressed against the model in service); `clinalign serve` serves only released models."
    )
    return [
        promote,
        "Give each client an API key for its audience, which sets the guardrails' scope: "
        "`clinalign keys add portal --audience patient` (patient, caregiver, clinician, educator or payer).",
        "Serve it behind the guardrails: `clinalign serve` (add `--policy FILE` for a site's policy and "
        "`--reward-model FOLDER` to send answers the reward model is unsure of to review); clients use the "
        "OpenAI-compatible `POST /v1/chat/completions`.",
        "Answers held for review (tier 2) come back as HTTP 202 with a holding text: poll "
        "`GET /v1/reviews/{id}`; clinicians approve, edit or reject them in the web app (`clinalign web`).",
        "Report wrong answers with `POST /v1/flags` or the web app; watch `clinalign monitor`; "
        "`clinalign feedback` turns clinicians' flags into the next round's cases.",
        f"The model folder ({policy.uri}) has no guardrails: load it directly only for research, never for "
        "anyone seeking care.",
    ]


def principles(facts: Facts, parts: dict) -> list[dict]:
    """The ten GMLP principles: how this project addresses each (facts), and the evidence in this
    model's record (the field, and what it holds)."""
    annotation: Annotation | None = parts["annotation"]
    reward: RewardModel | None = parts["reward_model"]
    rails: Guardrails = parts["guardrails"]
    oversight: Oversight = parts["oversight"]
    mine = [r for r in parts["results"] if r.is_policy]
    panel = (
        "annotation: none in this model's lineage (a gap)"
        if annotation is None
        else f"annotation: {annotation.raters} raters, {annotation.judgements} judgements on {annotation.tasks} "
        f"tasks, Krippendorff's alpha {_num(annotation.alpha_choice)}"
        + ("; SIMULATED panel, no clinician" if annotation.simulated else "")
    )
    hashed = [s for s in parts["lineage"] if s.sha256]
    safety = [r for r in mine if r.group == "safety" and r.figure.n]
    fairness = [r for r in mine if r.group == "fairness" and r.figure.n]
    evidence = {
        1: [panel, f"stakeholders: {', '.join(parts['stakeholders'])}, each with intended and out-of-scope uses"],
        2: [
            f"lineage: {len(hashed)} of {len(parts['lineage'])} artifacts with a sha256 content hash",
            f"audit: {parts['audit']}",
            f"training: every step with its run id and config hash ({len(parts['training'])} steps)",
        ],
        3: [*parts["data"][-3:]]
        + ([f"results ({len(fairness)} fairness figures): {_brief(fairness)}"] if fairness else [])
        + ([] if fairness else ["results: no fairness figures (a gap)"]),
        4: [line for line in parts["data"] if "prompt set" in line]
        or ["data: no curated prompt set in this model's lineage (a gap)"],
        5: [panel]
        + [f"evaluations: {e.suite} (artifact {e.artifact}): {e.testing_data}" for e in parts["evaluations"]],
        6: [
            f"algorithm: {parts['algorithm']} from {parts['base_model']}",
            "reward_model: none"
            if reward is None
            else f"reward_model: held-out accuracy "
            f"{_num(reward.test_accuracy)} (n={reward.test_pairs}), ECE {_num(reward.ece)}, "
            f"{len(reward.axis_accuracy)} axes",
        ],
        7: [
            f"guardrails: policy {rails.policy}, {rails.red_flag_categories} red-flag categories, scope for "
            f"{len(rails.audiences)} audiences",
            "oversight: "
            + "; ".join(f"tier {t.tier} ({', '.join(t.actions)}): {t.what_happens}" for t in oversight.tiers),
        ],
        8: [f"results ({len(safety)} safety figures of this model): {_brief(safety)}"]
        if safety
        else ["results: no safety figures (a gap)"],
        9: [
            f"limitations: {len(parts['limitations'])} stated",
            f"usage: {len(parts['usage'])} steps",
            "this card: Markdown, HTML and the CHAI Applied Model Card, from one record",
        ],
        10: [
            f"release: {parts['release'].stage}",
            "maintenance: `clinalign monitor`, `clinalign feedback`, the promotion gate and `clinalign rollback`",
        ],
    }
    given = {n: p for n, p in facts.gmlp.items() if p is not None}
    return [
        {"number": n, "principle": given[n].principle or "", "how": given[n].how or "", "evidence": evidence[n]}
        for n in range(1, 11)
        if n in given
    ]


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _brief(found: list[Result], most: int = 4) -> str:
    text = "; ".join(f"{r.label} {shown(r.figure)}" for r in found[:most])
    return text + (f"; and {len(found) - most} more" if len(found) > most else "")
