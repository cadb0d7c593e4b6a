"""The clinicians' oversight pages: the tier 2 queue, decisions with reasons, flags, override rates."""

from __future__ import annotations

from sqlalchemy import select

from clinalign import monitor
from clinalign.store import Flag, Interaction
from tests.test_monitor import serve
from tests.web.conftest import csrf


def test_a_clinician_edits_a_held_answer_and_the_reason_is_kept(web):
    held = serve(web.store, "What helps nerve pain?", "Gabapentin is sometimes used off-label for this.", {})
    clinician = web.login("clin1")
    queue = clinician.get("/oversight")
    assert f"/oversight/{held}" in queue.text and "off label" in queue.text
    page = clinician.get(f"/oversight/{held}")
    refused = clinician.post(
        f"/oversight/{held}/decide",
        data={"csrf": csrf(page.text), "decision": "edit", "text": "Ask your GP.", "reason": ""},
    )
    assert refused.status_code == 422 and "say why" in refused.text
    done = clinician.post(
        f"/oversight/{held}/decide",
        data={"csrf": csrf(page.text), "decision": "edit", "text": "Ask your GP about options.", "reason": "off-label"},
    )
    assert done.status_code == 200 and "Nothing is waiting" in done.text
    with web.store.reading() as session:
        row = session.get(Interaction, held)
        assert (row.status, row.sent, row.review_reason) == ("edited", "Ask your GP about options.", "off-label")
        assert monitor.override_rates(session)[2]["rate"] == 1.0
    assert web.events("serve.review.edit")


def test_an_escalated_answer_cannot_be_edited_into_silence(web):
    held = serve(
        web.store,
        "I have crushing chest pain and sweating",
        "Gabapentin is sometimes used off-label.",
        {},
        status="held",
    )
    with web.store.session() as session:  # an escalated case held by a reviewer's policy, say
        session.get(Interaction, held).escalate = True
    clinician = web.login("clin1")
    page = clinician.get(f"/oversight/{held}")
    response = clinician.post(
        f"/oversight/{held}/decide",
        data={"csrf": csrf(page.text), "decision": "edit", "text": "Rest at home.", "reason": "simpler"},
    )
    assert response.status_code == 422 and "emergency care" in response.text
    with web.store.reading() as session:
        assert session.get(Interaction, held).status == "held"


def test_flags_on_a_sent_answer(web):
    sent = serve(web.store, "I have a runny nose", "You definitely have a cold.", {})
    reviewer = web.login("review1")
    page = reviewer.get(f"/oversight/{sent}")
    assert "Flag this answer" in page.text
    none = reviewer.post(f"/oversight/{sent}/flag", data={"csrf": csrf(page.text)})
    assert none.status_code == 422
    flagged = reviewer.post(
        f"/oversight/{sent}/flag",
        data={
            "csrf": csrf(page.text),
            "error_tags": ["overconfident"],
            "correction": "It sounds like a cold; see a GP if...",
        },
    )
    assert flagged.status_code == 200 and "Overconfident" in flagged.text
    with web.store.reading() as session:
        [found] = session.scalars(select(Flag)).all()
        assert found.error_tags == ["overconfident"] and found.interaction_id == sent
        assert monitor.override_rates(session)[1] == {"n": 1, "overridden": 1, "rate": 1.0}


def test_data_experts_do_not_see_served_answers(web):
    assert web.login("expert1").get("/oversight").status_code == 403
