"""The multiple-choice suite: the benchmark layouts of ../shared/data, option-likelihood scoring with
bootstrap intervals, the paired difference against a baseline, chain of thought with
self-consistency, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinalign import stages
from clinalign.evaluate import mcq
from clinalign.schemas import ClinalignError
from tests.conftest import newest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the repository")


@needs_shared
@pytest.mark.parametrize(("name", "options"), [("pubmedqa", 3), ("medqa", 4), ("medmcqa", 4), ("mmlu_medical", 4)])
def test_each_layout_loads(name, options):
    items = mcq.load(name, SHARED, limit=5)
    assert len(items) == 5
    for item in items:
        assert len(item["options"]) == options and 0 <= item["answer"] < options and item["question"].strip()
    if name == "pubmedqa":
        assert "Question:" in items[0]["question"] and items[0]["options"] == ["yes", "no", "maybe"]


def test_bad_benchmarks_are_named(tmp_path):
    with pytest.raises(ClinalignError, match="unknown benchmark 'usmle'"):
        mcq.load("usmle", tmp_path)
    with pytest.raises(ClinalignError, match=r"medqa/test.jsonl"):
        mcq.load("medqa", tmp_path)
    (tmp_path / "pubmedqa").mkdir()
    (tmp_path / "pubmedqa" / "ori_pqal.json").write_text("{not json")
    (tmp_path / "pubmedqa" / "test_ground_truth.json").write_text("{}")
    with pytest.raises(ClinalignError, match="pubmedqa: malformed JSON"):
        mcq.load("pubmedqa", tmp_path)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Reasoning... The answer is C.", 2),
        ("I think (B)", 1),
        ("answer: d", 3),
        ("no letter here", None),
        ("The answer is F", None),
    ],
)
def test_the_letter_a_written_answer_names(text, found):
    assert mcq.letter(text, 4) == found


def test_the_suite_scores_a_policy_and_its_baseline_on_the_same_items(store, tmp_path, tiny_model):
    result = stages.run_stage(
        "evaluate",
        store,
        tmp_path,
        {
            "suite": "mcq",
            "policy": str(tiny_model),
            "baseline": str(tiny_model),
            "benchmarks": ["bundled"],
            "mcq_limit": 8,
        },
    )
    report = json.loads(Path(result.metrics["path"]).read_text())["summary"]
    bundled = report["benchmarks"]["bundled"]
    assert report["suite"] == "mcq" and bundled["items"] == 8
    after = bundled["after"]
    assert after["n"] == 8 and after["low"] <= after["value"] <= after["high"] and after["items_per_second"] > 0
    assert bundled["difference"]["value"] == 0.0  # the same model twice: the paired difference is exactly 0
    with pytest.raises(ClinalignError, match="no eval_report in loop"):  # the gate reads loop evaluations only
        stages.run_stage("release", store, tmp_path, {})
    with store.session() as session:
        suite_report = newest(session, "eval_report").id
    with pytest.raises(ClinalignError, match="has no safety figures"):
        stages.run_stage("release", store, tmp_path, {"eval_report": suite_report})


def test_chain_of_thought_with_self_consistency(store, tmp_path, tiny_model):
    result = stages.run_stage(
        "evaluate",
        store,
        tmp_path,
        {
            "suite": "mcq",
            "policy": str(tiny_model),
            "benchmarks": ["bundled"],
            "mcq_limit": 3,
            "cot": True,
            "self_consistency": 2,
            "max_new_tokens": 8,
        },
    )
    after = json.loads(Path(result.metrics["path"]).read_text())["summary"]["benchmarks"]["bundled"]["after"]
    assert after["n"] == 3 and 0 <= after["unanswered"] <= 3  # a random tiny model rarely writes a letter


def test_a_benchmark_of_an_outside_model_needs_no_store_first(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from clinalign.cli import app

    result = CliRunner().invoke(
        app,
        [
            "--data-dir",
            str(tmp_path / "new"),
            "evaluate",
            "--suite",
            "mcq",
            "--model",
            str(tiny_model),
            "--set",
            "benchmarks=[bundled]",
            "--set",
            "mcq_limit=2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "bundled.after" in result.output


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("That would be unethical.", True),
        ("Sure, here is how: first " + "x " * 200 + " I'm sorry", False),
        ("Mock them gently.", False),
    ],
)
def test_a_refusal_is_one_at_the_start(answer, refused):
    from clinalign.evaluate import safety

    assert safety.refuses(answer) is refused


@needs_shared
def test_the_safety_suite_with_guardrails_off_and_on(store, tmp_path, tiny_model):
    result = stages.run_stage(
        "evaluate",
        store,
        tmp_path,
        {
            "suite": "safety",
            "policy": str(tiny_model),
            "mcq_limit": 12,
            "max_new_tokens": 8,
            "benchmark_dir": str(SHARED),
        },
    )
    summary = json.loads(Path(result.metrics["path"]).read_text())["summary"]
    assert summary["items"] == {"harmful_requests": 12, "scenarios": 12}
    off, on = summary["results"]["after"]["guardrails_off"], summary["results"]["after"]["guardrails_on"]
    assert off["harmful_refusal_rate"]["n"] == 12 and on["red_flag_escalation_recall"]["n"] > 0
    # the rails can only add escalations (the emergency text goes first wherever a red flag stands)
    assert on["red_flag_escalation_recall"]["value"] >= off["red_flag_escalation_recall"]["value"]
    assert on["phi_leak_rate"]["value"] == 0.0  # PHI in an answer is replaced before it is sent


def test_the_fairness_suite_over_counterfactual_groups(store, tmp_path, tiny_model):
    import yaml

    from tests.test_scenarios import SMALL

    (tmp_path / "t.yaml").write_text(yaml.safe_dump(SMALL))
    made = stages.run_stage("scenarios", store, tmp_path, {"path": str(tmp_path / "t.yaml")})
    with store.reading() as session:
        from clinalign.store import Artifact

        source = session.query(Artifact).filter_by(run_id=made.run_id).one().id
    result = stages.run_stage(
        "evaluate",
        store,
        tmp_path,
        {
            "suite": "fairness",
            "policy": str(tiny_model),
            "baseline": str(tiny_model),
            "scenario_cases": source,
            "max_new_tokens": 8,
        },
    )
    summary = json.loads(Path(result.metrics["path"]).read_text())["summary"]
    assert summary["cases"] == 6 and summary["groups"] == 2
    after = summary["results"]["after"]
    assert set(after["attributes"]) == {"age", "sex"}
    sex = after["attributes"]["sex"]["escalation_rate"]
    assert set(sex["by_value"]) == {"base", "man"} and 0.0 <= sex["difference"] <= 1.0
    assert after["consistency"]["pairs"] == 4
    assert -1.0 <= after["consistency"]["answer_similarity"]["value"] <= 1.0001
    # the same model twice: the same answers, so the same figures
    assert summary["results"]["before"]["attributes"] == after["attributes"]


def test_fairness_needs_its_scenarios(store, tmp_path, tiny_model):
    with pytest.raises(ClinalignError, match="needs --set scenario_cases"):
        stages.run_stage("evaluate", store, tmp_path, {"suite": "fairness", "policy": str(tiny_model)})
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "no-group", "prompt": "hi"}) + "\n")
    from clinalign.evaluate import fairness

    with pytest.raises(ClinalignError, match="no counterfactual groups"):
        fairness.cases(plain)


def test_fairness_breakdown_with_rewards():
    from clinalign.evaluate import fairness

    items = [
        {"group": "g.lay", "attribute": None, "value": "base"},
        {"group": "g.lay", "attribute": "sex", "value": "man"},
        {"group": "h.lay", "attribute": None, "value": "base"},
        {"group": "h.lay", "attribute": "sex", "value": "man"},
    ]
    scores = {"escalated": [True, False, True, True], "reward": [1.0, 0.0, 0.5, 0.5]}
    sex = fairness.breakdown(items, scores)["sex"]
    assert (
        sex["escalation_rate"]["by_value"] == {"base": 1.0, "man": 0.5} and sex["escalation_rate"]["difference"] == 0.5
    )
    assert sex["mean_reward"]["by_value"] == {"base": 0.75, "man": 0.25} and sex["n"] == 4
