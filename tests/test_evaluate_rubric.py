"""The rubric, hallucination and comparison suites: HealthBench's scoring, K-QA and HealthBench layouts,
graders measured against physicians and clinicians, an AI judge through an OpenAI-compatible endpoint
(and what happens when it fails), entailment models by path, citations, paired statistics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from clinalign import stages, stats
from clinalign.evaluate import graders, hallucination, rubric
from clinalign.schemas import ClinalignError
from tests.live_server import free_port, serving
from tests.tiny_model import build_tiny_nli

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the repository")


def _summary(result) -> dict:
    return json.loads(Path(result.metrics["path"]).read_text())["summary"]


def test_the_score_is_met_points_over_possible_positive_points_clipped():
    criteria = [{"points": 5}, {"points": 5}, {"points": -8}]
    assert rubric.score(criteria, [True, False, False]) == 0.5
    assert rubric.score(criteria, [True, True, False]) == 1.0
    assert rubric.score(criteria, [True, False, True]) == 0.0  # 5 - 8 < 0: clipped
    assert rubric.score([{"points": 5}, {"points": 5}, {"points": 5}], [True, True, True]) == 1.0


@needs_shared
def test_k_qa_becomes_rubrics_that_its_own_reference_answers_meet():
    items = rubric.load("k_qa", SHARED, None)
    assert len(items) == 201
    kinds = {c["kind"] for item in items for c in item["criteria"]}
    assert kinds == {"must_have", "nice_to_have", "standing"}
    assert all(c["criterion"].strip() for item in items for c in item["criteria"])  # K-QA's blank entries dropped
    reference = rubric.grade(graders.Rules(), items, [i["reference"] for i in items])
    shrug = rubric.grade(graders.Rules(), items, ["I cannot say; please ask someone." for _ in items])
    assert sum(g["score"] for g in reference) / 201 > 0.8 > 0.05 > sum(g["score"] for g in shrug) / 201
    prescribing = rubric.grade(graders.Rules(), items[:1], [items[0]["reference"] + " Take 20 mg of it twice daily."])
    assert prescribing[0]["score"] < reference[0]["score"]  # the standing criterion costs its points


def test_healthbench_layout_and_what_is_wrong_with_a_file(tmp_path):
    good = [
        {
            "prompt_id": "p1",
            "prompt": [{"role": "user", "content": "Is a fever of 38C dangerous?"}],
            "rubrics": [
                {"criterion": "Says when to seek care", "points": 6, "tags": []},
                {"criterion": "Recommends antibiotics", "points": -5, "tags": []},
            ],
        },
        {
            "prompt": [
                {"role": "user", "content": "My chest hurts"},
                {"role": "assistant", "content": "Since when?"},
                {"role": "user", "content": "An hour"},
            ],
            "rubrics": [{"criterion": "Tells them to call emergency services", "points": 10}],
        },
    ]
    path = tmp_path / "hb.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in good) + "\n")
    items = rubric.load(str(path), tmp_path, None)
    assert [i["id"] for i in items] == ["p1", "hb.jsonl:2"]
    assert items[1]["prompt"].startswith("User: My chest hurts\n\nAssistant: Since when?")
    assert [c["points"] for c in items[0]["criteria"]][:2] == [6, -5]
    for line, problem in [
        ("{not json", r"hb.jsonl:2: malformed JSON"),
        ('{"prompt": [{"role": "user", "content": "x"}]}', r"hb.jsonl:2: field 'rubrics'"),
        ('{"prompt": "x", "rubrics": [{"criterion": "c", "points": 1}]}', r"hb.jsonl:2: field 'prompt'"),
        ('{"prompt": [{"content": "x"}], "rubrics": [{"criterion": "c"}]}', r"hb.jsonl:2: rubrics\[0\] needs"),
        ('{"prompt": [{"content": "x"}], "rubrics": [{"criterion": "c", "points": -3}]}', "no criterion with positive"),
    ]:
        path.write_text(json.dumps(good[0]) + "\n" + line + "\n")
        with pytest.raises(ClinalignError, match=problem):
            rubric.load(str(path), tmp_path, None)
    with pytest.raises(ClinalignError, match="rubric set not found"):
        rubric.load(str(tmp_path / "missing.jsonl"), tmp_path, None)
    with pytest.raises(ClinalignError, match=r"k_qa/questions_w_answers.jsonl"):
        rubric.load("k_qa", tmp_path, None)


@needs_shared
def test_the_rules_grader_is_measured_on_the_physicians_claims():
    found = graders.physician_agreement(graders.Rules(), SHARED)
    assert found["n"] == 399 and found["positives"] == 153 and found["ungraded"] == 0
    assert 0 < found["f1"] < 1 and 0 < found["precision"] <= 1 and 0 < found["recall"] <= 1


@needs_shared
def test_the_rubric_suite_puts_each_graders_agreement_beside_its_score(loop_copy, tiny_model):
    store, folder = loop_copy
    result = stages.run_stage(
        "evaluate",
        store,
        folder,
        {
            "suite": "rubric",
            "policy": str(tiny_model),
            "baseline": str(tiny_model),
            "graders": ["rules", "judge", "reward_model"],
            "judge": {"model": str(tiny_model)},
            "mcq_limit": 3,
            "agreement_limit": 6,
            "max_new_tokens": 16,
        },
    )
    summary = _summary(result)
    assert summary["items"] == 3 and summary["complete"]
    for key in ("before", "after"):
        for grader in ("rules", "judge", "reward_model"):
            score = summary["results"][key][grader]["score"]
            assert score["n"] == 3 and 0 <= score["low"] <= score["value"] <= score["high"] <= 1
    for grader in ("rules", "judge"):
        assert summary["agreement"][grader]["physicians"]["n"] == 6
    # The tiny loop's simulated panel judged pairs of answers to prompts with references.
    clinicians = summary["agreement"]["reward_model"]["clinicians"]
    assert clinicians["n"] > 0 and clinicians["accuracy"]["n"] == clinicians["n"]
    assert summary["agreement"]["rules"]["clinicians"]["n"] > 0
    assert len(summary["per_item"]["score.rules"]["after"]) == 3

    compared = _summary(
        stages.run_stage(
            "evaluate",
            store,
            folder,
            {
                "suite": "comparison",
                "compare": "rubric",
                "policy": str(tiny_model),
                "baseline": str(tiny_model),
                "mcq_limit": 3,
                "agreement_limit": 3,
                "max_new_tokens": 16,
            },
        )
    )
    same = compared["paired"]["score.rules"]  # one model against itself: greedy answers, no difference
    assert compared["compared"] == "rubric" and same["difference"]["value"] == 0
    assert same["improved"] == same["worsened"] == 0 and same["p"] == 1.0


def _judge(reply) -> FastAPI:
    """An OpenAI-compatible endpoint; ``reply(number of claims)`` is its answer."""
    app = FastAPI()
    app.state.calls = 0

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        app.state.calls += 1
        claims = len(re.findall(r"^\d+\. ", body["messages"][-1]["content"], re.MULTILINE))
        content = reply(claims)
        if content is None:
            return JSONResponse({"error": "boom"}, status_code=500)
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}

    return app


@needs_shared
def test_an_endpoint_judge_and_what_happens_when_it_fails(store, tmp_path, tiny_model):
    config = {
        "suite": "rubric",
        "policy": str(tiny_model),
        "graders": ["judge"],
        "mcq_limit": 2,
        "agreement_limit": 4,
        "max_new_tokens": 8,
    }
    app = _judge(lambda n: "Sure:\n" + json.dumps({"met": [True] * n}))
    with serving(app) as url:
        config["judge"] = {"backend": "openai", "endpoint": url + "/v1", "model": "fake"}
        summary = _summary(stages.run_stage("evaluate", store, tmp_path, config))
    assert app.state.calls == 4 + 2  # one call per claim checked against physicians, one per answer
    assert summary["complete"] and summary["agreement"]["judge"]["physicians"]["recall"] == 1.0
    assert summary["agreement"]["judge"]["clinicians"]["n"] == 0  # an empty store: said, not guessed
    # Every statement met, every standing criterion failed by rules: a score of 1 unless prescribing.
    assert summary["results"]["after"]["judge"]["must_have_met"]["value"] == 1.0

    with serving(_judge(lambda n: "I think most of them are met.")) as url:
        config["judge"]["endpoint"] = url + "/v1"
        summary = _summary(stages.run_stage("evaluate", store, tmp_path, config))
    assert not summary["complete"] and summary["results"]["after"]["judge"]["ungraded"] == 2
    assert summary["results"]["after"]["judge"]["score"]["n"] == 0
    assert summary["agreement"]["judge"]["physicians"]["ungraded"] == 4

    with serving(_judge(lambda n: None)) as url:
        config["judge"]["endpoint"] = url + "/v1"
        with pytest.raises(
            ClinalignError, match=r"judge endpoint http://127\.0\.0\.1:\d+/v1/chat/completions: HTTP 500"
        ):
            stages.run_stage("evaluate", store, tmp_path, config)
    config["judge"]["endpoint"] = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ClinalignError, match="unreachable"):
        stages.run_stage("evaluate", store, tmp_path, config)
    config["judge"]["endpoint"] = "http://judge.example.org/v1"
    with pytest.raises(ClinalignError, match="plain http beyond this machine"):
        stages.run_stage("evaluate", store, tmp_path, config)


def test_statements_leave_out_advice_and_citations_are_looked_up():
    answer = (
        "Ibuprofen is a non-steroidal anti-inflammatory drug used for pain. "
        "You should talk to your doctor before taking it. Call 911 if you have chest pain now. "
        "It was shown safe by Smith et al. (2019) and in PMID: 31234567, see https://example.org/ibuprofen."
    )
    said = hallucination.statements(answer)
    assert said[0].startswith("Ibuprofen is") and not any("doctor" in s or "911" in s for s in said)
    assert hallucination.citations(answer) == ["Smith 2019", "31234567", "https://example.org/ibuprofen"]
    assert hallucination.unverified(answer, "As Smith wrote in 2019 ... PMID 31234567") == [
        "https://example.org/ibuprofen"
    ]


@needs_shared
def test_the_hallucination_suite_with_an_entailment_model_by_path(store, tmp_path, tiny_model):
    nli = build_tiny_nli(tmp_path / "nli", tiny_model)
    path = tmp_path / "refs.jsonl"
    rows = [
        {"prompt": "What is ibuprofen?", "reference": "Ibuprofen is an NSAID.", "sources": ["PMID 31234567"]},
        {"prompt": "What is a fever?", "reference": "A temperature above 38C."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    config = {
        "suite": "hallucination",
        "policy": str(tiny_model),
        "hallucination_set": str(path),
        "hallucination_grader": "entailment",
        "entailment_model": str(nli),
        "agreement_limit": 5,
        "max_new_tokens": 24,
    }
    summary = _summary(stages.run_stage("evaluate", store, tmp_path, config))
    found = summary["results"]["after"]
    assert summary["items"] == 2 and summary["complete"] and summary["grader"] == "entailment"
    assert summary["agreement"]["entailment"]["physicians"]["n"] == 5
    for metric in ("unsupported_statement_rate", "contradicted_statement_rate", "answers_with_unsupported"):
        assert metric in found
    assert found["statements_per_answer"]["n"] == 2

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text((nli / "config.json").read_text())
    for folder, problem in [
        (tmp_path / "nowhere", "no config.json"),
        (tmp_path / "bad", "no tokenizer"),
        (build_tiny_nli(tmp_path / "sentiment", tiny_model, ("negative", "positive")), "name no entailment class"),
    ]:
        with pytest.raises(ClinalignError, match=problem):
            stages.run_stage("evaluate", store, tmp_path, {**config, "entailment_model": str(folder)})
    with pytest.raises(ClinalignError, match="needs entailment_model"):
        stages.run_stage("evaluate", store, tmp_path, {**config, "entailment_model": None})
    path.write_text(json.dumps(rows[0]) + '\n{"prompt": "x"}\n')
    with pytest.raises(ClinalignError, match=r"refs.jsonl:2: field 'reference'"):
        stages.run_stage("evaluate", store, tmp_path, config)


def test_paired_statistics_on_binary_outcomes_and_on_scores():
    binary = stats.paired([0] * 10 + [1] * 5, [1] * 10 + [1] * 5)
    assert binary["test"] == "McNemar exact" and binary["improved"] == 10 and binary["worsened"] == 0
    assert binary["p"] == pytest.approx(2 * 0.5**10)
    assert binary["difference"]["value"] == pytest.approx(10 / 15)
    scores = stats.paired([0.2, 0.4, None, 0.5, 0.1, 0.3, 0.6], [0.3, 0.6, 0.9, 0.4, 0.4, 0.5, 0.9])
    assert scores["test"] == "Wilcoxon signed-rank" and scores["difference"]["n"] == 6  # the None pair dropped
    assert scores["improved"] == 5 and scores["worsened"] == 1 and 0 < scores["p"] < 1


def test_a_comparison_needs_two_models(store, tmp_path, tiny_model):
    with pytest.raises(ClinalignError, match="needs two models"):
        stages.run_stage("evaluate", store, tmp_path, {"suite": "comparison", "policy": str(tiny_model)})
