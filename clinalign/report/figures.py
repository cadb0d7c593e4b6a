"""Evaluation figures for the model card, found generically: any mapping in an evaluation's summary
that holds ``value``, ``n``, ``low`` and ``high`` is a figure (``stats.figure``), and any breakdown that
holds ``by_value`` and ``difference`` (fairlearn's ``MetricFrame``, as the fairness suite writes it) is
a gap, so a new suite's figures reach the card without a change here.

Reads: ``eval_report`` artifacts (their summaries, in ``meta``).  Writes: nothing.

The model a figure belongs to is the key of the summary's ``models`` on its path (``before``, ``after``,
``sft-1``); a figure on no model's path compares models (the win rate, a paired difference).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from clinalign.report.record import Figure, Result
from clinalign.schemas import ClinalignError
from clinalign.store import Artifact

# Known figures: (label, which way is better, CHAI key-metric group). Anything else is labelled from
# its path in the summary and grouped by its suite (``SUITE_GROUP``), then by the words in its name.
LABELS: dict[str, tuple[str, str, str]] = {
    "red_flag_escalation_rate": ("Red-flag escalation (emergency prompts)", "higher is safer", "safety"),
    "over_escalation_rate": ("Escalation of routine prompts", "lower is better", "safety"),
    "crisis_resource_rate": ("Crisis resources, suicide and self-harm prompts", "higher is safer", "safety"),
    "personalised_prescribing_rate": ("Personalised prescribing", "lower is safer", "safety"),
    "dismissive_rate": ("Dismissive language", "lower is better", "safety"),
    "unsafe_variant_preference_rate": ("Prefers a known unsafe answer", "lower is safer", "safety"),
    "mcq_accuracy": ("Multiple-choice accuracy (option text)", "higher is better", "efficacy"),
    "reward": ("Mean reward (safety-gated aggregate)", "higher is better", "efficacy"),
    "reward_win_rate": ("Reward-model win rate of the policy over the first model", "higher is better", "efficacy"),
    "harmful_refusal_rate": ("Refusal of harmful medical requests", "higher is safer", "safety"),
    "red_flag_escalation_recall": ("Red-flag escalation recall", "higher is safer", "safety"),
    "red_flag_specificity": ("Red-flag specificity (routine not escalated)", "higher is better", "safety"),
    "phi_leak_rate": ("PHI in answers", "lower is safer", "safety"),
    "answer_similarity": ("Answer similarity across counterfactual groups", "higher is fairer", "fairness"),
    "escalation_agreement": ("Same escalation across counterfactual groups", "higher is fairer", "fairness"),
    "difference": ("Paired difference, policy minus baseline", "", ""),
    "gap": ("Largest gap between groups (no interval)", "lower is fairer", "fairness"),
    "unsupported_statement_rate": ("Statements unsupported by the reference", "lower is safer", "safety"),
    "answers_with_unsupported": ("Answers with an unsupported statement", "lower is safer", "safety"),
    "unverified_citation_rate": ("Citations that could not be verified", "lower is safer", "safety"),
}
SUITE_GROUP = {
    "mcq": "efficacy",
    "rubric": "efficacy",
    "safety": "safety",
    "hallucination": "safety",
    "fairness": "fairness",
}
_WORDS = {
    "safety": ("unsafe", "harm", "escalat", "refus", "crisis", "leak", "prescrib", "hallucinat", "fabricat"),
    "fairness": ("fair", "counterfactual", "demographic", "gap", "similarity"),
}
_CONTAINERS = {"results", "benchmarks", "inner"}  # levels of a summary that only group figures


def _is_figure(node: object) -> bool:
    return isinstance(node, dict) and {"value", "n", "low", "high"} <= node.keys()


def _walk(node: object, path: tuple[str, ...], n: int | None = None):
    """(path, figure) for every figure and gap in a summary; lists (per-item rows) are not walked. A gap
    has no interval; its n is the nearest ``n`` above it."""
    if _is_figure(node):
        yield path, node
    elif isinstance(node, dict):
        if isinstance(node.get("by_value"), dict) and isinstance(node.get("difference"), int | float):
            yield (*path, "gap"), {"value": node["difference"], "n": n or 0, "low": None, "high": None}
            return
        inherited = node["n"] if isinstance(node.get("n"), int) else n
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)), inherited)


def _humane(part: str) -> str:
    return LABELS[part][0] if part in LABELS else part.replace("_", " ")


def _group(suite: str, parts: tuple[str, ...]) -> str:
    known = [LABELS[p][2] for p in parts if p in LABELS and LABELS[p][2]]
    if known:
        return known[-1]
    if suite in SUITE_GROUP:
        return SUITE_GROUP[suite]
    name = " ".join(parts).lower()
    return next((group for group, words in _WORDS.items() if any(w in name for w in words)), "efficacy")


def results(artifact: Artifact, policy_id: int) -> list[Result]:
    """Every figure of one evaluation, for every model it compares."""
    summary = artifact.meta
    suite = summary.get("suite", "loop")
    models = {m["key"]: m for m in summary.get("models", [])}
    prefix = f"{suite} of {summary['compared']}" if summary.get("compared") else suite
    found = []
    for path, figure in _walk({k: v for k, v in summary.items() if k != "models"}, ()):
        key = next((p for p in path if p in models), None)
        parts = tuple(p for p in path if p != key)
        # an outcome's key may itself be a path (``harmful_refusal_rate.guardrails_off``)
        shown = tuple(w for p in parts if p not in _CONTAINERS for w in p.split(".")) or parts
        label = " · ".join(_humane(p) for p in shown)
        direction = next((LABELS[p][1] for p in reversed(shown) if p in LABELS and LABELS[p][1]), "")
        found.append(
            Result(
                eval_report=artifact.id,
                suite=suite,
                metric=".".join(parts),
                label=label if suite == "loop" else f"{prefix}: {label}",
                group=_group(summary.get("compared", suite), shown),  # a comparison: its suite's group
                direction=direction,
                model=key or "comparison",
                model_label=models[key]["label"] if key else "comparison",
                is_policy=bool(key) and models[key]["artifact"] == policy_id,
                figure=Figure(**{k: figure[k] for k in ("value", "n", "low", "high")}),
            )
        )
    return found


def testing_data(summary: dict) -> str:
    """What an evaluation was run on, from the top level of its summary (counts and names)."""
    parts = []
    for key, value in summary.items():
        if key in ("suite", "models", "complete") or _is_figure(value):
            continue
        if isinstance(value, str | int | float):
            parts.append(f"{key.replace('_', ' ')}: {value}")
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            parts.append(f"{key.replace('_', ' ')}: {', '.join(value)}")
        elif isinstance(value, dict) and value and all(isinstance(v, str | int) for v in value.values()):
            parts.append(f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
    for name, bench in (summary.get("benchmarks") or {}).items():
        if isinstance(bench, dict) and "items" in bench:
            parts.append(f"{name}: {bench['items']} items")
    return "; ".join(parts) or "not described by the evaluation"


def evaluations(session: Session, policy_id: int) -> list[Artifact]:
    """Every evaluation whose models include the policy, oldest first."""
    found = session.scalars(select(Artifact).where(Artifact.kind == "eval_report").order_by(Artifact.id))
    return [a for a in found if any(m.get("artifact") == policy_id for m in a.meta.get("models", []))]


def policy_of(evaluation: Artifact) -> int:
    """The model an evaluation is about: its ``after`` (the last compared, in the loop's order)."""
    models = evaluation.meta.get("models") or []
    if not models:
        raise ClinalignError(f"eval_report {evaluation.id} names no models")
    return next((m for m in models if m["key"] == "after"), models[-1])["artifact"]


def shown(figure: Figure) -> str:
    """A figure as the card prints it: value [95% interval] (n)."""
    if figure.value is None:
        return "no items (n=0)"
    if figure.low is None or figure.high is None:
        return f"{figure.value:.3f} (n={figure.n}, no interval)"
    return f"{figure.value:.3f} [{figure.low:.2f}, {figure.high:.2f}] (n={figure.n})"
