"""The model card's three renderings of one record: the Hugging Face model card (``model_card.md``: YAML
front matter with ``model-index``, then the Hub's section layout), the same as self-contained HTML
(``model_card.html``, and the fragment the report embeds), and the CHAI Applied Model Card
(``chai_model_card.json``: the element names of CHAI's schema v0.2, plus the GMLP principles).

Reads: a ``Record``.  Writes: the three files, only once all three rendered (``write``).

The HTML is the Markdown body rendered by markdown-it (raw HTML in the text is escaped, not passed
through), so the two cannot say different things.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from clinalign.report.figures import shown
from clinalign.report.record import Record, Result, validated

FILES = {"markdown": "model_card.md", "html": "model_card.html", "chai": "chai_model_card.json"}
GROUPS = {
    "efficacy": ("UsefulnessUsabilityEfficacy", "Usefulness, usability and efficacy"),
    "fairness": ("FairnessEquity", "Fairness and equity"),
    "safety": ("SafetyReliability", "Safety and reliability"),
}
GOALS = {
    "efficacy": "Measure whether the tuned model answers better than the model it was tuned from: accuracy on "
    "multiple-choice medical questions, the clinical reward model's view of its answers, rubric scores.",
    "fairness": "Measure whether answers change when only a demographic attribute of the person asking "
    "changes: consistency of answers and of escalation, and the largest gap between groups.",
    "safety": "Measure whether the model sends emergencies to emergency care without over-escalating routine "
    "questions, names crisis services, avoids personal doses and dismissive language, refuses harmful "
    "requests and leaks no PHI, with the guardrails off and on where measured.",
}
BIAS_WORDS = ("SIMULATED", "demographic", "English", "agree")  # the limitations that are also biases
VALIDATION = (
    "Held-out prompts from the test split of the prompt set the policy descends from (by lineage, never "
    "trained on), and public benchmarks in their published layouts; every figure is a proportion with a "
    "Wilson 95% interval or a mean with a percentile-bootstrap 95% interval, and its n. The evaluations are "
    "retrospective and automated (rules and models judge the answers); no prospective or clinical study."
)


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("clinalign", "templates"),
        autoescape=False,  # Markdown; the HTML comes from markdown-it, which escapes
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fig"] = shown
    env.filters["cell"] = _cell
    env.filters["num"] = _num
    env.filters["pairs"] = lambda mapping, sep, join: join.join(
        f"{str(k).replace('_', ' ')}{sep}{_value(v)}" for k, v in mapping.items()
    )
    env.filters["sentences"] = lambda lines: " ".join(
        line if line.rstrip().endswith((".", "!", "?")) else f"{line}." for line in map(_cell, lines)
    )
    return env


def _cell(text: object) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def front_matter(record: Record) -> dict:
    """The Hub's metadata: licence, base model, tags, and ``model-index`` with this model's figures
    (each metric's ``args`` carry its n and 95% interval; figures without items are left out)."""
    results = []
    by_eval: dict[int, list[Result]] = {}
    for result in record.policy_results():
        if result.figure.value is not None:
            by_eval.setdefault(result.eval_report, []).append(result)
    suites = {e.artifact: e for e in record.evaluations}
    for artifact, found in by_eval.items():
        evaluation = suites[artifact]
        results.append(
            {
                "task": {"type": "text-generation", "name": f"clinalign {evaluation.suite} evaluation"},
                "dataset": {
                    "type": f"clinalign-{evaluation.suite}",
                    "name": f"clinalign {evaluation.suite} evaluation, eval_report {artifact}",
                    "split": "test",
                },
                "metrics": [
                    {
                        "type": r.metric,
                        "value": round(r.figure.value, 4),
                        "name": r.label,
                        "args": {"n": r.figure.n, "ci95_low": _round(r.figure.low), "ci95_high": _round(r.figure.high)},
                    }
                    for r in found
                ],
            }
        )
    algorithm = record.algorithm.lower().split(" then ")
    found = {
        "license": record.license,
        "base_model": record.base_model_id,  # a Hub id, or left out: a local folder is not one
        "language": list(record.language),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["clinalign", "medical", "research-only", "not-for-clinical-use", *algorithm]
        + (["simulated-annotation"] if record.simulated_panel else []),
        "model-index": [{"name": record.name, "results": results}],
    }
    return {k: v for k, v in found.items() if v is not None}


def _title(model: dict, policy: int) -> str:
    return f"{model['label']} (artifact {model['artifact']})" + (" ← this model" if model["artifact"] == policy else "")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _tables(record: Record) -> list[dict]:
    """Per evaluation: its models as columns, its figures as rows."""
    tables = []
    for evaluation in record.evaluations:
        found = [r for r in record.results if r.eval_report == evaluation.artifact]
        rows: dict[str, dict] = {}
        for r in found:
            row = rows.setdefault(r.metric, {"label": r.label, "direction": r.direction, "group": r.group, "cells": {}})
            row["cells"][r.model] = r.figure
        comparison = any("comparison" in row["cells"] for row in rows.values())
        tables.append(
            {
                "evaluation": evaluation,
                "columns": [(m["key"], _title(m, record.policy_artifact)) for m in evaluation.models]
                + ([("comparison", "between models")] if comparison else []),
                "rows": list(rows.values()),
            }
        )
    return tables


def markdown(record: Record) -> str:
    """``model_card.md``: YAML front matter, then the Hugging Face card's sections."""
    record = validated(record)
    body = _body(record)
    meta = yaml.safe_dump(front_matter(record), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{meta}---\n\n{body}"


def _body(record: Record) -> str:
    return (
        _env()
        .get_template("model_card.md.j2")
        .render(card=record, tables=_tables(record), groups=GROUPS, sha=record.sha256())
    )


def html_fragment(record: Record) -> str:
    """The card's body as HTML, for ``model_card.html`` and the report."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(_body(validated(record)))


def html(record: Record) -> str:
    """``model_card.html``: one self-contained page (no external assets)."""
    import jinja2

    page = jinja2.Environment(loader=jinja2.PackageLoader("clinalign", "templates"), autoescape=True)
    from markupsafe import Markup

    return page.get_template("model_card.html.j2").render(name=record.name, body=Markup(html_fragment(record)))


def chai(record: Record) -> dict:
    """The CHAI Applied Model Card's fields (schema v0.2 names), plus the GMLP principles."""
    record = validated(record)

    def bullets(lines) -> str:
        return "\n".join(f"- {line}" for line in lines)

    def per_stakeholder(field: str) -> str:
        return "\n".join(f"- **{name}**: " + " ".join(getattr(s, field)) for name, s in record.stakeholders.items())

    annotation = record.annotation
    consulted = (
        "No clinician panel in this model's lineage."
        if annotation is None
        else f"{annotation.raters} raters ({annotation.real_clinicians} clinicians, {annotation.simulated_raters} "
        f"simulated) gave {annotation.judgements} judgements on {annotation.tasks} tasks; Krippendorff's alpha "
        f"{_num(annotation.alpha_choice)}."
    )
    if record.simulated_panel:
        consulted += " SIMULATED PANEL: no clinician judged the answers this model was trained on."
    key_metrics = {}
    for group, (element, _title) in GROUPS.items():
        mine = record.policy_results(group)
        key_metrics[element] = {
            "MetricGoal": GOALS[group],
            "Results": [
                {
                    "Label": f"{r.label} (eval_report {r.eval_report})",
                    "ValueJson": json.dumps(
                        {
                            "kind": "single",
                            "value": r.figure.value,
                            "unit": "proportion or mean",
                            "n": r.figure.n,
                            "ci95": [r.figure.low, r.figure.high],
                        }
                    ),
                }
                for r in mine
            ],
            "Interpretation": _interpretation(record, mine),
            "TestType": "Internal, retrospective, automated evaluation on held-out data: clinalign evaluate, "
            + ("suites " + ", ".join(sorted({r.suite for r in mine})) if mine else "no suite measured this"),
            "TestingDataDescription": bullets(
                f"eval_report {e.artifact} ({e.suite}, {e.date}): {e.testing_data}" for e in record.evaluations
            ),
            "ValidationProcessAndJustification": VALIDATION,
        }
    reward = record.reward_model
    return {
        "SchemaVersion": "CHAI Applied Model Card v0.2 (field names of https://mc.chai.org/v0.2/schema.xsd)",
        "BasicInfo": {"ModelName": record.name, "ModelDeveloper": record.developer, "DeveloperContact": record.contact},
        "ReleaseInfo": {
            "ReleaseStage": record.release.stage,
            "ReleaseDate": record.release.date,
            "ReleaseVersion": record.version,
            "GlobalAvailability": record.global_availability,
            "RegulatoryApproval": record.regulatory_approval,
        },
        "ModelSummary": {"Summary": record.summary, "Keywords": list(record.keywords)},
        "UsesAndDirections": {
            "IntendedUseAndWorkflow": per_stakeholder("intended_use"),
            "PrimaryIntendedUsers": ", ".join(record.stakeholders) + " (research settings only; see the intended uses)",
            "HowToUse": bullets(record.usage),
            "TargetedPatientPopulation": record.targeted_population,
            "CautionedOutOfScopeSettings": per_stakeholder("out_of_scope"),
        },
        "Warnings": {
            "KnownRisksAndLimitations": bullets(record.limitations),
            "KnownBiasesOrEthicalConsiderations": bullets(
                [line for line in record.limitations if any(word in line for word in BIAS_WORDS)]
                or ["See the known risks and limitations."]
            ),
            "ClinicalRiskLevel": record.clinical_risk_level,
        },
        "TrustIngredients": {
            "AISystemFacts": {
                "OutcomesAndOutputs": "Free-text answers to health questions; when served, each with the guardrails' "
                "verdict and an oversight tier (sent, held for a clinician, or escalated).",
                "ModelType": f"Causal language model ({record.architecture.get('model_type', 'unknown type')}, "
                f"{record.architecture.get('parameters', 'unknown')} parameters) tuned by {record.algorithm}",
                "FoundationModels": record.base_model + (f" ({record.base_model_id})" if record.base_model_id else ""),
                "InputDataSource": bullets(
                    line for line in record.data if line.startswith(("source", "de-identified"))
                ),
                "OutputAndInputDataTypes": "Input: text (a question, de-identified before the model sees it). "
                "Output: text.",
                "DevelopmentDataCharacterization": bullets(record.data),
                "BiasMitigationApproaches": "Prompts tagged by stakeholder, specialty and risk, split stratified by "
                "risk; counterfactual scenarios that change one demographic attribute (the fairness suite); the "
                "guardrails' escalation and scope rules apply to every audience alike; clinicians' flags on served "
                "answers become training cases.",
                "OngoingMaintenance": record.maintenance,
                "Security": record.security,
                "Transparency": f"Every artifact in the lineage with its sha256 ({len(record.lineage)}); "
                f"{record.audit}; this card's record sha256 {record.sha256()}.",
            },
            "TransparencyInformation": {
                "FundingSource": record.funding,
                "ThirdPartyInformation": f"Base model {record.base_model_id or record.base_model}; guardrail policy "
                f"{record.guardrails.policy}" + (f"; reward model artifact {reward.artifact}" if reward else ""),
                "StakeholdersConsulted": consulted,
            },
        },
        "KeyMetrics": key_metrics,
        "Resources": {
            "EvaluationReferences": bullets(
                f"eval_report artifact {e.artifact} ({e.suite})" for e in record.evaluations
            ),
            "PeerReviewedPublications": record.publications,
            "PatientConsentOrDisclosure": record.patient_consent,
        },
        "Bibliography": "@misc{gmlp2021, title={Good Machine Learning Practice for Medical Device Development: "
        "Guiding Principles}, author={{U.S. Food and Drug Administration} and {Health Canada} and {Medicines and "
        "Healthcare products Regulatory Agency}}, year={2021}}",
        "GoodMachineLearningPractice": [p.model_dump() for p in record.gmlp],
        "RecordSha256": record.sha256(),
    }


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _interpretation(record: Record, mine: list[Result]) -> str:
    """Each of this model's figures beside the first model's in the same evaluation, and which way is better."""
    if not mine:
        return "Not measured for this model."
    first = {}
    for r in record.results:
        if not r.is_policy and r.model != "comparison":
            first.setdefault((r.eval_report, r.metric), r)
    lines = []
    for r in mine:
        other = first.get((r.eval_report, r.metric))
        versus = f" vs {shown(other.figure)} for {other.model_label}" if other else ""
        lines.append(f"- {r.label}: {shown(r.figure)}{versus}" + (f"; {r.direction}" if r.direction else ""))
    return "\n".join(lines)


def write(record: Record, folder: Path) -> dict[str, Path]:
    """Render all three, then write them: a card that fails to render leaves no file behind."""
    record = validated(record)
    texts = {
        "markdown": markdown(record),
        "html": html(record),
        "chai": json.dumps(chai(record), indent=1, ensure_ascii=False),
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, text in texts.items():
        path = folder / FILES[kind]
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
        paths[kind] = path
    return paths
