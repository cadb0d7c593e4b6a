"""Evaluation: before/after figures, baseline by lineage, multiple-choice readers."""

import json
from pathlib import Path

import pytest

from clinalign.evaluate import read_mcq
from clinalign.schemas import ClinalignError
from tests.conftest import newest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_the_report_holds_every_figure_for_both_models(loop_store):
    with loop_store.session() as session:
        art = newest(session, "eval_report")
        newest_policy = newest(session, "model")
    summary = json.loads(Path(art.uri).read_text())["summary"]
    for metric in (
        "red_flag_escalation_rate",
        "personalised_prescribing_rate",
        "unsafe_variant_preference_rate",
        "mcq_accuracy",
    ):
        for side in ("before", "after"):
            assert 0.0 <= summary[metric][side] <= 1.0, (metric, side)
    assert 0.0 <= summary["reward_win_rate"] <= 1.0
    assert summary["models"]["after"] == newest_policy.id  # the newest policy is the DPO model
    assert summary["models"]["before"] != summary["models"]["after"]  # baseline found by lineage
    assert summary["mcq_items"] == 24


def test_mcq_layouts(tmp_path):
    ours = tmp_path / "ours.jsonl"
    ours.write_text(json.dumps({"question": "q?", "options": ["a", "b"], "answer": 1}) + "\n")
    medqa = tmp_path / "medqa.jsonl"
    medqa.write_text(
        json.dumps({"question": "q?", "options": {"A": "x", "B": "y", "C": "z"}, "answer_idx": "C"}) + "\n"
    )
    mmlu = tmp_path / "mmlu.csv"
    mmlu.write_text('"A question, with a comma?",one,two,three,four,B\n')
    assert read_mcq(ours)[0]["answer"] == 1
    assert read_mcq(medqa)[0] == {"question": "q?", "options": ["x", "y", "z"], "answer": 2}
    assert read_mcq(mmlu)[0]["options"] == ["one", "two", "three", "four"] and read_mcq(mmlu)[0]["answer"] == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q?", "options": ["a", "b"], "answer": 7}) + "\n")
    with pytest.raises(ClinalignError, match=r"bad\.jsonl:1: field 'answer'"):
        read_mcq(bad)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")
def test_public_benchmarks_read_from_shared_data():
    mmlu = read_mcq(SHARED / "mmlu_medical" / "test" / "clinical_knowledge_test.csv")
    medqa = read_mcq(SHARED / "medagents_bench" / "medqa" / "test.jsonl")
    assert len(mmlu) > 200 and all(len(i["options"]) == 4 for i in mmlu)
    assert len(medqa) > 50 and all(0 <= i["answer"] < len(i["options"]) for i in medqa)
