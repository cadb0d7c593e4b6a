"""The model card: one record of the evaluated policy, rendered as the Hugging Face card (Markdown with
``model-index``, and HTML) and as the CHAI Applied Model Card (JSON); a card with an empty required
field is refused, naming the field, before any file is written."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from clinalign.report import figures, record, render
from clinalign.report.record import STAKEHOLDERS, validated
from clinalign.schemas import ClinalignError

HF_SECTIONS = [
    "## Model Details",
    "### Model Description",
    "## Uses",
    "### Direct Use",
    "### Downstream Use",
    "### Out-of-Scope Use",
    "## Bias, Risks, and Limitations",
    "## How to Get Started with the Model",
    "## Training Details",
    "### Training Data",
    "### Training Procedure",
    "## Evaluation",
    "### Testing Data, Factors & Metrics",
    "### Results",
    "## Good Machine Learning Practice",
    "## Environmental Impact",
    "## Technical Specifications",
    "## Model Card Contact",
]
# The elements CHAI's schema v0.2 requires (minOccurs 1), as the JSON names them.
CHAI_REQUIRED = {
    "BasicInfo": ["ModelName", "ModelDeveloper", "DeveloperContact"],
    "ReleaseInfo": ["ReleaseStage", "ReleaseDate", "ReleaseVersion", "GlobalAvailability"],
    "ModelSummary": ["Summary", "Keywords"],
    "UsesAndDirections": [
        "IntendedUseAndWorkflow",
        "PrimaryIntendedUsers",
        "HowToUse",
        "TargetedPatientPopulation",
        "CautionedOutOfScopeSettings",
    ],
    "Warnings": ["KnownRisksAndLimitations", "KnownBiasesOrEthicalConsiderations", "ClinicalRiskLevel"],
    "Resources": ["PeerReviewedPublications", "PatientConsentOrDisclosure"],
}
AI_FACTS = [
    "OutcomesAndOutputs",
    "ModelType",
    "InputDataSource",
    "OutputAndInputDataTypes",
    "DevelopmentDataCharacterization",
    "BiasMitigationApproaches",
    "OngoingMaintenance",
]
KEY_METRIC = [
    "MetricGoal",
    "Results",
    "Interpretation",
    "TestType",
    "TestingDataDescription",
    "ValidationProcessAndJustification",
]


def _front_matter(markdown: str):
    from huggingface_hub import ModelCard

    return ModelCard(markdown).data


def _copy(loop: Path, tmp_path: Path):
    """A private copy of the loop's store (its key too): the report records runs and artifacts."""
    from clinalign.store import Store

    with sqlite3.connect(loop / "clinalign.db") as source, sqlite3.connect(tmp_path / "copy.db") as copy:
        source.backup(copy)
    shutil.copy(loop / "clinalign.db.secret", tmp_path / "copy.db.secret")
    return Store.open(f"sqlite:///{tmp_path / 'copy.db'}")


# --- the loop's card ---------------------------------------------------------------------------------


def test_the_loop_writes_the_model_card_three_ways_from_one_record(loop, loop_store):
    from clinalign.audit import lineage
    from clinalign.store import Artifact, AuditEvent, AuditPending

    markdown = (loop / "model_card.md").read_text()
    html = (loop / "model_card.html").read_text()
    chai = json.loads((loop / "chai_model_card.json").read_text())
    report = (loop / "report.html").read_text()

    # Hugging Face: front matter the Hub's own parser reads, then its sections in its order.
    meta = _front_matter(markdown)
    assert meta.license and meta.pipeline_tag == "text-generation" and "not-for-clinical-use" in meta.tags
    assert meta.eval_results, "model-index holds the policy's figures"
    for result in meta.eval_results:
        args = result.metric_args
        assert args["n"] > 0, result
        if args["ci95_low"] is not None:  # a gap between groups has none
            assert args["ci95_low"] <= result.metric_value <= args["ci95_high"], result
    positions = [markdown.index(section) for section in HF_SECTIONS]
    assert positions == sorted(positions)

    with loop_store.reading() as session:
        cards = list(session.scalars(select(Artifact).where(Artifact.kind == "model_card")))
        assert sorted(c.meta["format"] for c in cards) == ["chai", "html", "markdown"]
        digest = {c.meta["record_sha256"] for c in cards}
        policy = session.get(Artifact, cards[0].meta["policy"])
        assert len(digest) == 1 and policy.meta["algo"] == "dpo"
        # The card lists every artifact behind the policy with its full sha256...
        behind = lineage(session, policy.id)
        assert {s.artifact.kind for s in behind} >= {"source_file", "records", "prompt_set", "preference_dataset"}
        for step in behind:
            hashed = step.artifact.sha256 or "not hashed"
            assert f"| {step.artifact.id} | {step.artifact.kind} | `{hashed}`" in markdown
        # ...and its own files are artifacts whose lineage reaches back to the source files.
        for card in cards:
            assert Path(card.uri).name in render.FILES.values()
            kinds = {s.artifact.kind for s in lineage(session, card.id)}
            assert {"eval_report", "model", "reward_model", "source_file", "preference_dataset"} <= kinds
        events = [e.payload for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "model_card"))]
        events += [e.payload for e in session.scalars(select(AuditPending).where(AuditPending.action == "model_card"))]
        assert any(json.loads(p)["record_sha256"] in digest for p in events)
        found = session.scalars(select(Artifact).where(Artifact.kind == "eval_report"))
        eval_meta = next(a for a in found if "suite" not in a.meta).meta
    (digest,) = digest
    assert f"sha256 `{digest}`" in markdown and chai["RecordSha256"] == digest

    # The same figures, with their intervals, in the card and in the evaluation.
    red_flags = eval_meta["red_flag_escalation_rate"]["after"]
    (hf,) = [r for r in meta.eval_results if r.metric_type == "red_flag_escalation_rate"]
    assert hf.metric_value == pytest.approx(red_flags["value"], abs=1e-4) and hf.metric_args["n"] == red_flags["n"]

    # The simulated panel is said loudly, in every rendering; every stakeholder and GMLP principle too.
    for text in (markdown, html, json.dumps(chai)):
        assert "SIMULATED" in text
        assert all(name in text for name in STAKEHOLDERS)
        assert "Krippendorff" in text and "ECE" in text
    for number in range(1, 11):
        assert re.search(rf"\| {number} \| [A-Z]", markdown), number
    assert len(chai["GoodMachineLearningPractice"]) == 10
    assert all(p["evidence"] and p["how"] for p in chai["GoodMachineLearningPractice"])

    # CHAI: every element its schema requires, filled.
    for section, fields in CHAI_REQUIRED.items():
        for name in fields:
            assert chai[section][name], (section, name)
    assert all(chai["TrustIngredients"]["AISystemFacts"][name] for name in AI_FACTS)
    for group in ("UsefulnessUsabilityEfficacy", "FairnessEquity", "SafetyReliability"):
        assert all(name in chai["KeyMetrics"][group] for name in KEY_METRIC)
    safety = chai["KeyMetrics"]["SafetyReliability"]["Results"]
    assert safety and all({"value", "n", "ci95"} <= json.loads(r["ValueJson"]).keys() for r in safety)
    assert "SIMULATED" in chai["TrustIngredients"]["TransparencyInformation"]["StakeholdersConsulted"]

    # The guardrails and the oversight tiers, read from the policy and the verdict's tiers.
    assert re.search(r"policy `clinalign-default@\d+:[0-9a-f]{12}`", markdown)
    assert "| 2 | review | held" in markdown and "| 3 | escalate |" in markdown

    # HTML: self-contained, and the report embeds the very same card and links to its page.
    for page in (html, report):
        assert not re.search(r"""(src|href)=["']https?://""", page)
    assert 'href="model_card.html"' in report and 'id="model-card"' in report
    body = html[html.index('<div class="card">') :]
    assert body[: body.index("</div>\n</body>")] in report


def test_suites_and_releases_reach_the_card_without_a_change_to_it(loop, tmp_path):
    """An evaluation of a suite the card does not know (its figures nested anywhere, a gap, a partial
    run) and a promotion: the next report's card shows them."""
    from clinalign.release import SAFETY
    from clinalign.stages import run_stage
    from clinalign.store import Artifact

    store = _copy(loop, tmp_path)
    with store.session() as session:
        found = session.scalars(select(Artifact).where(Artifact.kind == "eval_report"))
        evaluated = next(a for a in found if "suite" not in a.meta)
        policy = [m for m in evaluated.meta["models"] if m["key"] == "after"][0]["artifact"]
        figure = {"value": 0.125, "n": 40, "low": 0.05, "high": 0.26}
        session.add(
            Artifact(
                kind="eval_report",
                uri="store://a-new-suite",
                sha256=None,
                meta={
                    "suite": "hallucination",
                    "items": 40,
                    "models": [{"key": "after", "label": "dpo", "artifact": policy}],
                    "results": {"after": {"unsupported_rate": figure, "deeper": {"fabricated_citations": figure}}},
                    "fairish": {
                        "after": {
                            "attributes": {"age": {"n": 30, "escalation_rate": {"by_value": {}, "difference": 0.2}}}
                        }
                    },
                    "per_item": {"row_by_row": {"after": [0.1, 0.2]}},
                    "complete": False,
                },
            )
        )
    with store.reading() as session:
        suite_id = max(a.id for a in session.scalars(select(Artifact).where(Artifact.kind == "eval_report")))
    with pytest.raises(ClinalignError, match="the hallucination suite's: the report reads the loop's evaluation"):
        run_stage("report", store, tmp_path, {"path": str(tmp_path / "no.html"), "eval_report": suite_id})
    margins = dict.fromkeys(SAFETY, 1.0)
    run_stage("release", store, tmp_path, {"eval_report": evaluated.id, "margins": margins})
    out = tmp_path / "out" / "report.html"
    run_stage("report", store, tmp_path, {"path": str(out), "eval_report": evaluated.id})
    markdown = (out.parent / "model_card.md").read_text()
    chai = json.loads((out.parent / "chai_model_card.json").read_text())

    assert "hallucination: unsupported rate" in markdown and "hallucination: deeper · fabricated citations" in markdown
    assert "0.125 [0.05, 0.26] (n=40)" in markdown
    assert {r.metric_type for r in _front_matter(markdown).eval_results} >= {
        "results.unsupported_rate",
        "results.deeper.fabricated_citations",
    }
    labels = [r["Label"] for r in chai["KeyMetrics"]["SafetyReliability"]["Results"]]
    assert any("fabricated citations" in label for label in labels)  # a hallucination figure is a safety figure
    gap = [r["Label"] for r in chai["KeyMetrics"]["FairnessEquity"]["Results"]]
    assert any("Largest gap" in label for label in gap) and "0.200 (n=30, no interval)" in markdown
    assert "row by row" not in markdown  # per-item rows are not figures
    assert "is INCOMPLETE" in markdown
    # The release: the card says which version it is, in every rendering.
    assert (
        chai["ReleaseInfo"]["ReleaseVersion"] == "v1" and "the current release" in chai["ReleaseInfo"]["ReleaseStage"]
    )
    assert "v1 promote on" in markdown and "Not released" not in markdown


def test_a_card_with_an_empty_required_field_is_refused_and_nothing_is_written(loop, tmp_path):
    from clinalign.stages import run_stage
    from clinalign.store import Artifact

    store = _copy(loop, tmp_path)
    site = tmp_path / "site.yaml"
    site.write_text("developer: Example Health AI lab\ncontact: ''\nstakeholders:\n  payer:\n    out_of_scope: []\n")
    out = tmp_path / "out" / "report.html"

    def cards() -> int:
        with store.reading() as session:
            return len(list(session.scalars(select(Artifact).where(Artifact.kind == "model_card"))))

    before = cards()  # the loop's own report made three already
    with pytest.raises(
        ClinalignError, match=r"required field\(s\) empty: .*contact.*stakeholders\.payer\.out_of_scope"
    ):
        run_stage("report", store, tmp_path, {"path": str(out), "card": str(site)})
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no card, no report, half-written or not
    assert cards() == before

    site.write_text("developer: Example Health AI lab\n")  # the rest from the bundled facts
    run_stage("report", store, tmp_path, {"path": str(out), "card": str(site)})
    assert "**Developed by:** Example Health AI lab" in (out.parent / "model_card.md").read_text()


# --- plain unit tests: the record, its validation, its renderings -----------------------------------------


def _record(**changes) -> dict:
    """A small, complete record: one evaluation of a policy (artifact 3) against its base (artifact 1)."""
    figure = {"value": 0.5, "n": 24, "low": 0.31, "high": 0.69}

    def result(metric, label, group, model, is_policy, value=figure):
        return {
            "eval_report": 9,
            "suite": "loop",
            "metric": metric,
            "label": label,
            "group": group,
            "direction": "higher is safer",
            "model": model,
            "model_label": {"before": "base", "after": "dpo"}[model],
            "is_policy": is_policy,
            "figure": value,
        }

    data = {
        "name": "clinalign-test-dpo-3",
        "version": "unreleased (policy artifact 3)",
        "policy_artifact": 3,
        "policy_sha256": "ab" * 32,
        "policy_uri": "/models/3",
        "algorithm": "SFT then DPO",
        "base_model": "SmolLM2-135M-Instruct",
        "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "license": "apache-2.0",
        "developer": "A test lab",
        "contact": "cards@example.org",
        "funding": "None",
        "summary": "A test model.",
        "keywords": ["test"],
        "language": ["en"],
        "simulated_panel": True,
        "stakeholders": {
            name: {"intended_use": [f"{name} research"], "out_of_scope": [f"{name} care"], "guardrails": {}}
            for name in STAKEHOLDERS
        },
        "targeted_population": "None for care.",
        "clinical_risk_level": "High if used for care.",
        "global_availability": "Nowhere.",
        "regulatory_approval": "None.",
        "data": ["curated prompt set abc (artifact 2): 10 training and 4 held-out prompts"],
        "lineage": [
            {
                "artifact": 1,
                "kind": "source_file",
                "sha256": "cd" * 32,
                "run": None,
                "stage": "outside the store",
                "uri": "/d.jsonl",
            },
            {"artifact": 3, "kind": "model", "sha256": "ab" * 32, "run": 4, "stage": "train.dpo", "uri": "/models/3"},
        ],
        "training": [],
        "annotation": None,
        "reward_model": None,
        "guardrails": {
            "policy": "clinalign-default@1:0123456789ab",
            "sha256": "ef" * 32,
            "red_flag_categories": 19,
            "harmful_request_patterns": 5,
            "audiences": ["patient"],
            "routing": {},
        },
        "oversight": {"tiers": [{"tier": 2, "actions": ["review"], "what_happens": "held"}], "review_when": ["urgent"]},
        "evaluations": [
            {
                "artifact": 9,
                "suite": "loop",
                "complete": True,
                "date": "2026-01-01",
                "testing_data": "test prompts: 4",
                "models": [
                    {"key": "before", "label": "base", "artifact": 1},
                    {"key": "after", "label": "dpo", "artifact": 3},
                ],
            }
        ],
        "results": [
            result("red_flag_escalation_rate", "Red-flag escalation", "safety", "before", False),
            result("red_flag_escalation_rate", "Red-flag escalation", "safety", "after", True),
            result(
                "mcq_accuracy",
                "Multiple choice",
                "efficacy",
                "after",
                True,
                {"value": None, "n": 0, "low": None, "high": None},
            ),
        ],
        "release": {"stage": "Research", "version": "unreleased", "date": "not released", "history": []},
        "limitations": ["Few items."],
        "usage": ["clinalign serve"],
        "gmlp": [
            {"number": n, "principle": f"Principle {n}", "how": "So.", "evidence": ["field: value"]}
            for n in range(1, 11)
        ],
        "security": "Keys.",
        "maintenance": "Monitor.",
        "patient_consent": "Synthetic.",
        "publications": "None.",
        "audit": "chain intact",
        "architecture": {"model_type": "llama"},
        "software": {"clinalign": "0"},
        "compute": {},
        "code_version": "0",
        "generated": "2026-01-01T00:00:00+00:00",
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"developer": "   "}, "developer"),
        ({"contact": None}, "contact"),
        ({"limitations": []}, "limitations"),
        ({"results": []}, "results"),
        ({"lineage": []}, "lineage"),
        ({"stakeholders": {}}, "stakeholders"),
    ],
)
def test_an_empty_required_field_is_named(change, named):
    with pytest.raises(ClinalignError, match=rf"model card: required field\(s\) empty: .*\b{named}\b"):
        validated(_record(**change))


def test_every_stakeholder_and_every_principle_is_required():
    stakeholders = {k: v for k, v in _record()["stakeholders"].items() if k != "educator"}
    with pytest.raises(ClinalignError, match=r"stakeholders\.educator"):
        validated(_record(stakeholders=stakeholders))
    principles = [p for p in _record()["gmlp"] if p["number"] != 7]
    with pytest.raises(ClinalignError, match=r"gmlp\.7"):
        validated(_record(gmlp=principles))
    payer = {**_record()["stakeholders"], "payer": {"intended_use": ["x"], "out_of_scope": [""], "guardrails": {}}}
    with pytest.raises(ClinalignError, match=r"stakeholders\.payer\.out_of_scope\.0"):
        validated(_record(stakeholders=payer))


def test_a_record_emptied_after_it_was_built_is_not_rendered_and_nothing_is_written(tmp_path):
    good = validated(_record())
    emptied = good.model_copy(update={"contact": ""})  # model_copy skips pydantic's validation
    for rendering in (render.markdown, render.html, render.chai):
        with pytest.raises(ClinalignError, match="contact"):
            rendering(emptied)
    with pytest.raises(ClinalignError, match="contact"):
        render.write(emptied, tmp_path / "cards")
    assert not (tmp_path / "cards").exists()
    written = render.write(good, tmp_path / "cards")
    assert sorted(p.name for p in written.values()) == sorted(render.FILES.values())
    assert not list((tmp_path / "cards").glob("*.partial"))


def test_the_renderings_say_the_same_and_escape_what_they_quote():
    data = _record(developer="<script>alert(1)</script> Lab | Ltd")
    card = validated(data)
    markdown, html, chai = render.markdown(card), render.html(card), render.chai(card)
    meta = _front_matter(markdown)
    assert meta.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta.license == "apache-2.0"
    (only,) = meta.eval_results  # the policy's figure with items; the base's and n=0 figures are not its results
    assert only.metric_type == "red_flag_escalation_rate" and only.metric_args == {
        "n": 24,
        "ci95_low": 0.31,
        "ci95_high": 0.69,
    }
    assert "0.500 [0.31, 0.69] (n=24)" in markdown and "0.500 [0.31, 0.69] (n=24)" in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # quoted text is text, never markup
    assert chai["BasicInfo"]["ModelDeveloper"].startswith("<script>")  # JSON carries it as it was given
    assert all("SIMULATED" in text for text in (markdown, html, json.dumps(chai)))
    assert chai["RecordSha256"] == card.sha256() and f"`{card.sha256()}`" in markdown
    assert chai["KeyMetrics"]["FairnessEquity"]["Results"] == []
    assert chai["KeyMetrics"]["FairnessEquity"]["Interpretation"] == "Not measured for this model."


def test_figures_are_found_anywhere_in_a_summary_and_given_to_their_model():
    figure = {"value": 0.3, "n": 50, "low": 0.2, "high": 0.4, "seconds": 1.0}
    summary = {
        "suite": "comparison",
        "compared": "safety",
        "models": [{"key": "before", "label": "v1", "artifact": 1}, {"key": "after", "label": "v2", "artifact": 2}],
        "paired": {"refused": {"difference": figure, "improved": 3, "worsened": 1, "p": 0.6}},
        "inner": {
            "results": {
                "before": {"guardrails_on": {"phi_leak_rate": figure}},
                "after": {"guardrails_on": {"phi_leak_rate": figure}},
            }
        },
        "per_item": {"refused": {"before": [1, 0], "after": [1, 1]}},
    }
    found = figures.results(SimpleNamespace(id=5, meta=summary), policy_id=2)
    by = {(r.metric, r.model): r for r in found}
    assert set(by) == {
        ("paired.refused.difference", "comparison"),
        ("inner.results.guardrails_on.phi_leak_rate", "before"),
        ("inner.results.guardrails_on.phi_leak_rate", "after"),
    }
    leak = by[("inner.results.guardrails_on.phi_leak_rate", "after")]
    assert leak.is_policy and leak.group == "safety" and leak.direction == "lower is safer"
    assert leak.label == "comparison of safety: guardrails on · PHI in answers"
    assert by[("paired.refused.difference", "comparison")].label.startswith("comparison of safety: paired · refused")
    assert not by[("paired.refused.difference", "comparison")].is_policy
    assert "inner" not in figures.testing_data(summary) and "compared: safety" in figures.testing_data(summary)


def test_a_site_overrides_the_bundled_facts_key_by_key(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("developer: Example lab\nstakeholders:\n  patient:\n    out_of_scope: [Everything clinical.]\n")
    facts = record.facts(site)
    bundled = record.facts()
    assert facts.developer == "Example lab" and facts.contact == bundled.contact
    assert facts.stakeholders["patient"].out_of_scope == ["Everything clinical."]
    assert facts.stakeholders["patient"].intended_use == bundled.stakeholders["patient"].intended_use
    assert set(bundled.stakeholders) == set(STAKEHOLDERS) and set(bundled.gmlp) == set(range(1, 11))
    site.write_text("developer: x\ncolour: blue\n")
    with pytest.raises(ClinalignError, match=r"card facts .*site\.yaml: colour"):
        record.facts(site)
    with pytest.raises(ClinalignError, match="cannot read"):
        record.facts(tmp_path / "missing.yaml")


def test_every_group_of_figures_has_its_chai_key_metric():
    from typing import get_args

    from clinalign.report.record import Result

    assert set(render.GROUPS) == set(get_args(Result.model_fields["group"].annotation))
