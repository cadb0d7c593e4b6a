"""Monitoring: rates with their n, trips by rule, fairness gaps between tagged groups, override rates,
and drift of incoming prompts on real MiniLM embeddings."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from clinalign import embed, guardrails, monitor, stages
from clinalign.guardrails.rails import output_parts
from clinalign.schemas import ClinalignError
from clinalign.serve import oversight
from clinalign.store import ApiKey, Artifact, utcnow
from tests.guardrails.test_red_flags import DEV

EMERGENCY = "I have crushing chest pain going down my left arm and I'm sweating"
ROUTINE = "What foods are high in iron?"


def serve(store, question: str, answer: str, tags: dict, key_name: str = "portal", status: str | None = None) -> int:
    """An interaction as ``serve`` records it, through the same rails (``status``: its tier's, unless given)."""
    request = guardrails.check_input(question)
    checked = output_parts(answer, request=request)
    with store.session() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.name == key_name))
        if key is None:
            key, _ = oversight.add_key(session, key_name, "patient", 60, "test")
        status = status or ("held" if checked.verdict.tier == 2 else "sent")
        return oversight.record(
            session,
            key=key,
            model="m",
            messages=[{"role": "user", "content": question}],
            answer=answer,
            checked=checked.text,
            sent=None if status == "held" else checked.text,
            verdict=checked.verdict,
            status=status,
            tags=tags,
        ).id


def test_rates_trips_and_fairness_gaps(store):
    for _ in range(20):  # group F: every emergency answer misses the escalation the rails then add
        serve(store, EMERGENCY, "Probably indigestion, rest.", {"sex": "F"})
    for _ in range(20):
        serve(store, EMERGENCY, "Call 911 now.", {"sex": "M"})
    for _ in range(20):
        serve(store, ROUTINE, "Lentils and spinach.", {"sex": "M"})
    serve(store, ROUTINE, "Take 400 mg ibuprofen three times a day.", {"sex": "X"})
    now = utcnow()
    with store.reading() as session:
        found = monitor.figures(session, now - timedelta(hours=1), now + timedelta(seconds=1), min_group=20)
    rates = found["rates"]
    assert rates["n"] == 61
    assert rates["escalation_rate"]["value"] == pytest.approx(40 / 61)
    assert rates["unsafe_rate"]["value"] == pytest.approx(21 / 61)  # 20 escalations added, 1 dose removed
    assert found["trips"]["red_flag:acs"]["value"] == pytest.approx(40 / 61)
    assert found["trips"]["escalation:added"]["n"] == 61
    sex = found["fairness"]["sex"]
    assert sex["comparable"] == ["F", "M"]  # X has one answer: shown, not compared
    assert sex["groups"]["F"]["unsafe_rate"]["value"] == 1.0 and sex["groups"]["M"]["unsafe_rate"]["value"] == 0.0
    assert sex["gaps"]["unsafe_rate"] == 1.0 and sex["gaps"]["escalation_rate"] == pytest.approx(0.5)
    with store.reading() as session:
        later = monitor.figures(session, now + timedelta(hours=1), now + timedelta(hours=2))
    assert later["rates"]["n"] == 0 and later["rates"]["unsafe_rate"]["value"] is None


def test_drift_on_real_embeddings():
    symptoms = [d["text"] for d in DEV]
    insurance = [
        f"Does my insurance plan cover the cost of {thing} and how do I claim it back?"
        for thing in (
            "physiotherapy",
            "dental cleaning",
            "an MRI scan",
            "glasses",
            "hearing aids",
            "a blood test",
            "a flu jab",
            "counselling",
            "a hospital stay",
            "an ambulance ride",
            "a knee brace",
            "insulin pumps",
            "IVF",
            "an X-ray",
            "a wheelchair",
            "contact lenses",
            "allergy tests",
            "a sleep study",
            "travel vaccines",
            "a CT scan",
        )
    ]
    encoder = embed.default_path()
    same = monitor.drift(symptoms[0:120:2], symptoms[1:120:2], encoder, 0.01)
    shifted = monitor.drift(symptoms[0:120:2], insurance, encoder, 0.01)
    assert same["drift"] is False, same
    assert shifted["drift"] is True and shifted["centroid_ks"]["p_value"] < 1e-6, shifted
    assert monitor.drift(symptoms[:5], insurance, encoder, 0.01)["drift"] is None


def test_the_monitor_stage_writes_its_report(store, tmp_path):
    with pytest.raises(ClinalignError, match="no served interactions"):
        stages.run_stage("monitor", store, tmp_path, {})
    for d in DEV[:30]:
        serve(store, d["text"], "Please see your doctor.", {})
    result = stages.run_stage("monitor", store, tmp_path, {"hours": 1})
    report = json.loads(open(result.metrics["path"]).read())
    assert report["rates"]["n"] == 30 and report["drift"]["reference"] == "the previous window"
    assert report["drift"]["drift"] is None  # nothing served in the window before
    with store.reading() as session:
        produced = session.scalars(select(Artifact).where(Artifact.run_id == result.run_id)).all()
    assert [a.kind for a in produced] == ["monitor_report"] and produced[0].meta["n"] == 30
