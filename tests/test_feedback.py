"""Feedback: flags on served answers become cases, and the loop runs on them end to end:
promote -> serve -> flag -> feedback -> ingest -> ... -> annotate -> preferences -> train -> evaluate
-> promote -> serve."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from clinalign import guardrails, release, rewards, stages
from clinalign.accounts import create_user
from clinalign.schemas import ClinalignError
from clinalign.serve import oversight
from clinalign.serve.backends import LocalModel
from clinalign.serve.chat import create_app
from clinalign.store import Artifact, Flag, Run, Store
from tests.tiny_model import TINY_LOOP

QUESTIONS = [
    (
        "I have had a mild cough for three days, what can I do at home?",
        "Rest, fluids and honey help a cough; see a doctor if it lasts three weeks.",
    ),
    (
        "My ankle is a little swollen after a twist, how should I look after it?",
        "Rest it, use ice and raise the ankle; see a clinician if you cannot walk on it.",
    ),
    (
        "What can I do about occasional heartburn after big meals?",
        "Eat smaller meals, avoid late eating and ask a pharmacist about antacids.",
    ),
    (
        "How can I sleep better when I am stressed about work?",
        "Keep regular hours, avoid screens late and try a wind-down routine.",
    ),
    (
        "I get tension headaches at my desk, any tips?",
        "Take breaks, check your posture and drink water; see a GP if they change.",
    ),
    (
        "Is it fine to exercise with a mild cold?",
        "Gentle exercise is usually fine if symptoms are above the neck; rest if feverish.",
    ),
    (
        "How do I look after a small kitchen burn on my finger?",
        "Cool it under running water for 20 minutes and cover it loosely.",
    ),
    (
        "My child has a mild sore throat but is drinking well, what helps?",
        "Fluids, rest and soft foods help; see a doctor if drinking becomes hard.",
    ),
    ("What helps mild constipation?", "More fibre, fluids and activity usually help within a few days."),
    (
        "How can I ease mild lower back stiffness in the morning?",
        "Gentle stretching and staying active help; see a clinician if it worsens.",
    ),
]


def run(store, data_dir, stage, loop=None, **config) -> stages.Result:
    return stages.run_stage(stage, store, data_dir, config, loop=loop)


def test_feedback_needs_flags(store, tmp_path):
    with pytest.raises(ClinalignError, match="no flags to feed back"):
        run(store, tmp_path, "feedback")


def test_the_loop_closes_from_served_answers_to_a_retrained_evaluated_model(loop, tmp_path):
    with sqlite3.connect(loop / "clinalign.db") as source, sqlite3.connect(tmp_path / "clinalign.db") as copy:
        source.backup(copy)  # the loop's store as committed (a file copy would miss its write-ahead log)
    shutil.copy(loop / "clinalign.db.secret", tmp_path / "clinalign.db.secret")  # and its signing key
    store = Store.open(f"sqlite:///{tmp_path / 'clinalign.db'}")
    with store.reading() as session:
        policy = session.scalars(select(Artifact).where(Artifact.kind == "model").order_by(Artifact.id.desc())).first()
        judge = session.scalars(select(Artifact).where(Artifact.kind == "reward_model")).first()
    with store.session() as session:
        _key, secret = oversight.add_key(session, "portal", "patient", 1000, "test")
    # The tiny models' figures are noise, so the gate gets wide margins here; tests/test_release.py tests it.
    wide = {"margins": dict.fromkeys(release.SAFETY, 1.0)}
    first = run(store, tmp_path, "release", **wide).metrics  # promote: the loop's evaluated policy is v1
    assert first == {"version": 1, "model": policy.id, "eval_report": first["eval_report"]}
    scorer = rewards.Local(judge.uri)  # the loop's own reward model routes answers it is unsure of to review
    with store.reading() as session:
        served = release.current(session).meta["model_uri"]  # serve: what `clinalign serve` serves, the release
    http = TestClient(create_app(store, LocalModel(served, "policy"), guardrails.load(), scorer=scorer))
    http.headers["Authorization"] = f"Bearer {secret}"
    with store.session() as session:
        clinician = create_user(session, "dr.flag", "clinician", None, "test")
        session.flush()
        session.expunge(clinician)
    for question, correction in QUESTIONS:  # serve, then a clinician flags each answer with a correction
        body = http.post(
            "/v1/chat/completions",
            json={"model": "policy", "max_tokens": 16, "messages": [{"role": "user", "content": question}]},
        ).json()
        with store.session() as session:
            oversight.flag(
                session,
                body["clinalign"]["interaction"],
                error_tags=["factually_incorrect"],
                correction=correction,
                user=clinician,
            )
    client_flag = http.post("/v1/flags", json={"interaction": 1, "error_tags": ["overconfident"], "correction": "x"})
    assert client_flag.status_code == 200  # a client's flag is kept, but is not training data by default

    fed = run(store, tmp_path, "feedback").metrics  # feedback: flags -> cases in ingest's format
    assert (fed["cases"], fed["flags"], fed["corrected"]) == (len(QUESTIONS), len(QUESTIONS), len(QUESTIONS))
    cases = [json.loads(line) for line in open(fed["path"])]
    assert [c["reference"] for c in cases] == [correction for _, correction in QUESTIONS]
    # the served answer is the known-unsafe variant (the tiny model may have said nothing at all)
    assert all(v["kind"] == "hallucination" and v["text"].strip() for c in cases for v in c["variants"])
    with store.reading() as session:
        assert all((f.feedback_run_id is not None) == (f.user_id is not None) for f in session.scalars(select(Flag)))
    with pytest.raises(ClinalignError, match="no flags"):  # each flag is fed back once
        run(store, tmp_path, "feedback")

    ingested = run(store, tmp_path, "ingest", path=fed["path"])  # the next round, on the flagged cases
    with store.reading() as session:
        new_loop = session.get(Run, ingested.run_id).loop_id
    for stage, config in [
        ("deidentify", {}),
        ("curate", {"test_fraction": 0.3}),
        ("generate", {**TINY_LOOP["generate"], "model": str(policy.id)}),
        ("annotate", TINY_LOOP["annotate"]),
        ("preferences", {}),
        ("train.dpo", {**TINY_LOOP["train.dpo"], "base": str(policy.id)}),
        ("evaluate", {**TINY_LOOP["evaluate"], "baseline": str(policy.id), "reward_model": judge.id}),
    ]:
        run(store, tmp_path, stage, loop=new_loop, **config)
    with store.reading() as session:
        runs = session.scalars(select(Run).where(Run.loop_id == new_loop).order_by(Run.id)).all()
        report = session.scalars(
            select(Artifact).where(Artifact.kind == "eval_report").order_by(Artifact.id.desc())
        ).first()
    assert [r.stage for r in runs] == [
        "ingest",
        "deidentify",
        "curate",
        "generate",
        "annotate",
        "preferences",
        "train.dpo",
        "evaluate",
    ]
    assert all(r.status == "succeeded" for r in runs)
    assert report.run_id == runs[-1].id and len(report.meta["models"]) >= 2
    second = run(store, tmp_path, "release", loop=new_loop, eval_report=report.id, **wide).metrics  # promote
    with store.reading() as session:
        now_served = release.current(session)
        assert now_served.meta["version"] == 2 and now_served.meta["baseline"] == policy.id
        assert now_served.meta["model"] == second["model"] != policy.id  # the model trained on the flags
    again = TestClient(create_app(store, LocalModel(now_served.meta["model_uri"], "v2"), guardrails.load()))
    again.headers["Authorization"] = http.headers["Authorization"]
    answer = again.post(
        "/v1/chat/completions",
        json={"model": "v2", "max_tokens": 8, "messages": [{"role": "user", "content": QUESTIONS[0][0]}]},
    )
    assert answer.status_code in (200, 202) and "clinalign" in answer.json()  # and back to serving
