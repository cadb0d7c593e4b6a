"""RLAIF: an AI judge writes the clinicians' shape under its own flagged account, never takes a clinician's
slot or counts in their figures, judges both orders, resumes, is audited, and is mixed into training data
only past an agreement floor and never into the held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, func, select, text, update

from clinalign import stages
from clinalign.accounts import AI_JUDGE_ROLE
from clinalign.annotate import ai_judge, queue
from clinalign.audit import seal, verify_chain
from clinalign.schemas import AXES, ClinalignError
from clinalign.store import AiJudgement, Artifact, Assignment, Campaign, Judgement, Store, User
from tests.live_server import serving


def _run(store: Store, folder: Path, **config) -> dict:
    return stages.run_stage("annotate.ai", store, folder, config).metrics


def _counts(store: Store) -> tuple[int, int]:
    with store.session() as session:
        return session.scalar(select(func.count(Judgement.id))), session.scalar(select(func.count(AiJudgement.id)))


def test_a_local_judge_writes_clinician_shaped_verdicts_apart_and_resumes(loop_copy, tiny_model):
    store, folder = loop_copy
    clinicians_before, _ = _counts(store)
    found = _run(store, folder, model=str(tiny_model), limit=4)
    assert found["judged"] == 4 and found["unparseable"] == 0
    assert set(found["agreement"]) == {"vs_consensus", "vs_clinicians", "between_clinicians"}
    assert found["agreement"]["between_clinicians"]["n"] > 0
    with store.session() as session:
        rows = list(session.scalars(select(AiJudgement)))
        judge = session.get(User, rows[0].user_id)
        assert judge.role == AI_JUDGE_ROLE and judge.profile["ai"] and not judge.active
        assert all(set(r.ratings_a) == set(AXES) == set(r.ratings_b) for r in rows)
        assert all(r.choice in ("A", "B", "tie") for r in rows)
        campaign = session.scalar(select(Campaign).order_by(Campaign.id))
    assert _counts(store)[0] == clinicians_before  # nothing in the clinicians' table
    assert queue.claim_next(store, campaign, judge) is None  # and no clinician's slot
    again = _run(store, folder, model=str(tiny_model), limit=3)
    assert again["new"] == 3 and again["judged"] == 7  # the judged four are skipped, not redone
    seal(store)
    assert verify_chain(store).ok
    with store.session() as session:
        session.execute(text("update ai_judgement set choice = 'B' where choice != 'B' and id = :i"), {"i": rows[0].id})
        session.execute(text("update ai_judgement set choice = 'A' where choice = 'B' and id = :i"), {"i": rows[0].id})
    report = verify_chain(store)
    assert not report.ok and f"ai_judgement {rows[0].id} was changed" in report.reason


def _fake_endpoint(answer) -> FastAPI:
    """An OpenAI-compatible chat endpoint whose reply is ``answer(prompt text)``."""
    app = FastAPI()
    app.state.seen = []

    @app.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        app.state.seen.append(body)
        reply = answer(body["messages"][-1]["content"])
        if reply is None:
            return JSONResponse({"error": "boom"}, status_code=500)
        return {"choices": [{"message": {"role": "assistant", "content": reply}}]}

    return app


def _verdict(choice: str) -> str:
    ratings = dict.fromkeys(AXES, 3)
    body = {"choice": choice, "ratings_a": ratings, "ratings_b": ratings, "tags_a": ["made_up_tag"], "rationale": "x"}
    return "```json\n" + json.dumps(body) + "\n```"


def test_a_judge_that_always_prefers_the_first_answer_is_caught_by_the_swap(loop_copy):
    store, folder = loop_copy
    app = _fake_endpoint(lambda _prompt: _verdict("A"))
    with serving(app) as url:
        found = _run(store, folder, backend="openai", endpoint=url + "/v1", model="fake-judge", limit=5)
    assert found["judged"] == 5 and len(app.state.seen) == 10  # both orders asked
    assert app.state.seen[0]["temperature"] == 0 and app.state.seen[0]["model"] == "fake-judge"
    with store.session() as session:
        assert {r.choice for r in session.scalars(select(AiJudgement))} == {"tie"}  # pure position bias
        assert session.scalar(select(User).where(User.username == "ai-judge-fake-judge")).role == AI_JUDGE_ROLE


def _rubric_judge(prompt: str) -> str:
    """Prefers the answer that sends the reader to emergency care (what the simulated panel rewards),
    else the longer one: a consistent judge, whichever order the answers come in."""
    a = prompt.split("Answer A:")[1].split("Answer B:")[0].lower()
    b = prompt.split("Answer B:")[1].split("Rate each answer")[0].lower()
    urgent = ("911", "emergency", "999", "ambulance")
    score_a, score_b = ((sum(w in text for w in urgent), len(text)) for text in (a, b))
    return _verdict("tie" if score_a == score_b else ("A" if score_a > score_b else "B"))


def test_unparseable_replies_are_counted_not_stored_and_a_dead_endpoint_is_one_line(loop_copy):
    store, folder = loop_copy
    with serving(_fake_endpoint(lambda _prompt: "I think A is better.")) as url:
        found = _run(store, folder, backend="openai", endpoint=url + "/v1", model="chatty", limit=3)
    assert found["unparseable"] == 3 and found["judged"] == 0 and _counts(store)[1] == 0
    with serving(_fake_endpoint(lambda _prompt: None)) as url:
        with pytest.raises(ClinalignError, match="HTTP 500"):
            _run(store, folder, backend="openai", endpoint=url + "/v1", model="broken", limit=1)
    with pytest.raises(ClinalignError, match="needs endpoint"):
        _run(store, folder, backend="openai", model="nowhere")


def test_agreement_figures_compare_with_consensus_each_clinician_and_the_ceiling():
    human = {1: [(10, "A"), (11, "A"), (12, "B")], 2: [(10, "B"), (11, "B"), (12, "B")], 3: [(10, "A"), (11, "tie")]}
    found = ai_judge.agreement_figures({1: "A", 2: "A", 3: "A"}, human)
    assert found["vs_consensus"]["value"] == pytest.approx(1 / 2) and found["vs_consensus"]["n"] == 2
    # clinician 10: A,B,A vs A,A,A -> 2/3; 11: A,B,tie -> 1/3; 12: B,B -> 0
    assert found["vs_clinicians"]["value"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert found["between_clinicians"]["value"] == pytest.approx((1 + 3 + 0) / 7)  # 3 + 3 + 1 pairs


def test_mixing_needs_the_floor_keeps_ai_out_of_figures_and_the_held_out_split(loop_copy):
    store, folder = loop_copy
    with store.session() as session:
        campaign = session.scalar(select(Campaign).order_by(Campaign.id))
        # Items the clinicians have not reached yet: the judge's verdicts could stand there.
        undecided = (
            session.execute(
                text(
                    "select t.id from task t join prompt p on p.id = t.prompt_id "
                    "where t.campaign_id = :c and p.split = 'train' order by t.id limit 6"
                ),
                {"c": campaign.id},
            )
            .scalars()
            .all()
        )
        session.execute(update(Assignment).where(Assignment.task_id.in_(undecided)).values(judgement_id=None))
        session.execute(delete(Judgement).where(Judgement.task_id.in_(undecided)))
        judgements_art = session.scalar(select(Artifact.id).where(Artifact.kind == "judgements"))
    with serving(_fake_endpoint(_rubric_judge)) as url:
        judged = _run(store, folder, backend="openai", endpoint=url + "/v1", model="rubric", judgements=judgements_art)
    with store.session() as session:
        ai_art = session.scalar(select(Artifact).where(Artifact.kind == "ai_judgements"))
        ai_id, agreement = ai_art.id, ai_art.meta["agreement"]["vs_consensus"]["value"]
    assert judged["judged"] > 0 and agreement is not None
    plain = stages.run_stage("preferences", store, folder, {"judgements": judgements_art}).metrics
    floor = {"judgements": judgements_art, "ai_judgements": ai_id, "min_ai_agreement": 1.0}
    with pytest.raises(ClinalignError, match="below min_ai_agreement"):  # a Wilson lower bound is below 1
        stages.run_stage("preferences", store, folder, floor)
    mixed = stages.run_stage(
        "preferences",
        store,
        folder,
        {"judgements": judgements_art, "ai_judgements": ai_id, "min_ai_agreement": 0.0, "ai_mix": 1.0},
    ).metrics
    assert 0 < mixed["ai_pairs"] <= plain["train_pairs"]
    assert mixed["train_pairs"] == plain["train_pairs"] + mixed["ai_pairs"]
    assert mixed["test_pairs"] == plain["test_pairs"]  # never held out
    for figure in ("alpha_choice", "fleiss_kappa_choice"):  # the clinicians' figures do not move
        assert mixed["agreement"].get(figure) == plain["agreement"].get(figure)
    assert mixed["agreement"]["ai_judge"]["mixed_pairs"] == mixed["ai_pairs"]
    with store.session() as session:
        plain_folder, mixed_folder = session.scalars(
            select(Artifact.uri).where(Artifact.kind == "preference_dataset").order_by(Artifact.id.desc()).limit(2)
        ).all()[::-1]

    def pairs(folder: str) -> list[dict]:
        return [json.loads(line) for line in (Path(folder) / "pairs.jsonl").read_text().splitlines()]

    ai_rows = [r for r in pairs(mixed_folder) if r["source"] == "ai"]
    assert len(ai_rows) == mixed["ai_pairs"] and all(r["split"] == "train" for r in ai_rows)
    # Only where the clinicians decided nothing: an AI verdict never overrides or doubles theirs.
    assert not {r["task_id"] for r in ai_rows} & {r["task_id"] for r in pairs(plain_folder)}
