"""Evaluation: every model of the lineage, every figure with its interval, batched likelihoods,
multiple-choice readers."""

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from clinalign import guardrails
from clinalign.evaluate import read_mcq
from clinalign.schemas import AXES, ClinalignError
from clinalign.store import Artifact, prompts
from tests.conftest import loop_evaluation, newest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_every_model_of_the_lineage_has_every_figure_with_its_interval(loop_store):
    with loop_store.session() as session:
        art = loop_evaluation(session)
        newest_policy = newest(session, "model")
        base = session.scalar(select(Artifact).where(Artifact.kind == "external_model"))
    summary = json.loads(Path(art.uri).read_text())["summary"]
    models = summary["models"]
    assert [m["key"] for m in models][0] == "before" and models[-1]["key"] == "after"
    assert models[-1]["artifact"] == newest_policy.id  # the DPO model ...
    assert models[0]["artifact"] == base.id  # ... against the model the whole loop started from
    assert [m["label"] for m in models[1:]] == ["sft", "dpo"]  # and the step between them
    for metric in (
        "red_flag_escalation_rate",
        "over_escalation_rate",
        "personalised_prescribing_rate",
        "dismissive_rate",
        "unsafe_variant_preference_rate",
        "mcq_accuracy",
    ):
        for m in models:
            f = summary[metric][m["key"]]
            assert f["n"] > 0 and 0.0 <= f["low"] <= f["value"] <= f["high"] <= 1.0, (metric, m["key"], f)
    assert summary["by_risk"]["emergency"] == summary["red_flag_escalation_rate"]["after"]["n"]
    with loop_store.session() as session:
        prompt_set = newest(session, "prompt_set")
        held_out = [p.text for p in prompts(session, prompt_set.sha256, "test")]
    assert summary["crisis_resource_rate"]["after"]["n"] == sum(map(guardrails.self_harm, held_out))
    assert summary["mcq"] == {"set": "mcq.jsonl", "items": 24}
    win = summary["reward_win_rate"]
    assert win["n"] == summary["test_prompts"] and 0.0 <= win["low"] <= win["value"] <= win["high"] <= 1.0
    assert set(summary["reward_axes"]["after"]) == set(AXES)


def test_batched_likelihoods_equal_one_at_a_time(tiny_model):
    from clinalign import lm

    loaded = lm.load(str(tiny_model))
    pairs = [("Is a fever dangerous?", "Sometimes."), ("Chest pain?", "Call 911 now, do not wait at home."), ("Q", "")]
    batched = lm.answer_logprobs(loaded, pairs, batch_size=3)
    alone = [lm.answer_logprobs(loaded, [pair], batch_size=1)[0] for pair in pairs]
    assert batched == pytest.approx(alone, abs=1e-4)


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
