"""Adjudication: disputed items reach the reviewer, whose decision becomes the consensus."""

from __future__ import annotations

import io
import json
import re
import zipfile

from sqlalchemy import func, select

from clinalign.schemas import AXIS_LABELS
from clinalign.store import Adjudication, Judgement, Task
from tests.web.conftest import AXES6, csrf, judgement_form, open_item, safer_side


def _split_votes(web, campaign: int) -> None:
    """clin1 picks the safer answer, clin2 the riskier one, clin3 says tie: no majority anywhere. Each
    rates every axis of both answers with their own number (clin1: 1, clin2: 2, clin3: 3), and clin1
    tags the riskier answer as missing the red flag."""
    for rating, (name, pick) in enumerate((("clin1", "safer"), ("clin2", "riskier"), ("clin3", "tie")), 1):
        client = web.login(name)
        while (found := open_item(client, campaign))[0] is not None:
            safer = safer_side(found[1])
            riskier = {"A": "B", "B": "A"}[safer]
            side = {"safer": safer, "riskier": riskier, "tie": "tie"}[pick]
            extra = {f"tags_{riskier.lower()}": "misses_red_flag_escalation"} if name == "clin1" else {}
            form = judgement_form(found[1], side, rating=str(rating), rationale=f"{name} reasoning", **extra)
            client.post(f"/items/{found[0]}", data=form)


def test_a_reviewer_settles_a_split_item_and_the_export_follows_the_decision(web):
    campaign = web.campaign(overlap=3)
    reviewer = web.login("review1")
    assert "No disputed items" in reviewer.get(f"/review/{campaign}").text  # nothing judged yet
    _split_votes(web, campaign)
    assert ">12<" in reviewer.get("/review").text.replace(" ", "")
    page = reviewer.get(f"/review/{campaign}")
    assert "clin1 reasoning" in page.text and "clin2 reasoning" in page.text  # judgements are shown now
    task_id = int(page.text.split('action="/review/items/')[1].split('"')[0])
    no_reason = reviewer.post(f"/review/items/{task_id}", data={"csrf": csrf(page.text), "choice": "A", "reason": " "})
    assert no_reason.status_code == 400
    decided = reviewer.post(
        f"/review/items/{task_id}",
        data={"csrf": csrf(page.text), "choice": "A", "reason": "A escalates"},
        follow_redirects=False,
    )
    assert decided.status_code == 303
    replay = reviewer.post(f"/review/items/{task_id}", data={"csrf": csrf(page.text), "choice": "B", "reason": "again"})
    assert replay.status_code == 400 and "already adjudicated" in replay.text
    with web.store.session() as session:
        row = session.scalar(select(Adjudication))
        assert (row.task_id, row.choice) == (task_id, "A")
    assert [e.actor for e in web.events("adjudicate")] == ["review1"]
    assert ">11<" in reviewer.get("/review").text.replace(" ", "")
    expert = web.login("expert1")
    export = expert.post(
        f"/campaigns/{campaign}/export", data={"csrf": csrf(expert.get(f"/campaigns/{campaign}").text)}
    )
    pairs = [
        json.loads(x) for x in zipfile.ZipFile(io.BytesIO(export.content)).read("pairs_standard.jsonl").splitlines()
    ]
    assert [p["task_id"] for p in pairs] == [task_id] and pairs[0]["margin"] == 0.0  # a settled split: weak margin


def test_adjudicated_items_can_no_longer_be_edited(web):
    campaign = web.campaign(overlap=3)
    _split_votes(web, campaign)
    reviewer = web.login("review1")
    page = reviewer.get(f"/review/{campaign}")
    task_id = int(page.text.split('action="/review/items/')[1].split('"')[0])
    reviewer.post(f"/review/items/{task_id}", data={"csrf": csrf(page.text), "choice": "tie", "reason": "equivalent"})
    with web.store.session() as session:
        judgement = session.scalar(select(Judgement).where(Judgement.task_id == task_id))
        owner = judgement.user_id
    from clinalign.store import User

    with web.store.session() as session:
        name = session.get(User, owner).username
    client = web.login(name)
    edit = client.get(f"/judgements/{judgement.id}/edit")
    response = client.post(f"/judgements/{judgement.id}/edit", data=judgement_form(edit.text, "tie"))
    assert response.status_code == 409 and "adjudicated" in response.text


def test_the_reviewer_sees_every_rating_on_every_axis_of_both_answers_and_the_error_tags(web):
    campaign = web.campaign(overlap=3)
    _split_votes(web, campaign)
    page = web.login("review1").get(f"/review/{campaign}").text
    for rating, name in enumerate(("clin1", "clin2", "clin3"), 1):
        for axis in AXES6:
            for side in "AB":
                cell = rf'title="{name} · Answer {side} · {re.escape(AXIS_LABELS[axis])}">{rating}<'
                assert re.search(cell, page), cell
    assert "Misses red-flag escalation" in page and "misses_red_flag_escalation" not in page


def _refused(web, reviewer, task_id: int, token: str) -> None:
    response = reviewer.post(f"/review/items/{task_id}", data={"csrf": token, "choice": "A", "reason": "I decide"})
    assert response.status_code == 400 and "Traceback" not in response.text, response.text


def test_a_reviewer_cannot_overrule_a_unanimous_unfinished_or_calibration_item(web):
    campaign = web.campaign(overlap=2, gold=1)
    for name, items in (("clin1", 13), ("clin2", 4)):  # clin1 judges all, clin2 only the first four
        client = web.login(name)
        for _ in range(items):
            assignment, page = open_item(client, campaign)
            client.post(f"/items/{assignment}", data=judgement_form(page, safer_side(page)))
    with web.store.reading() as session:
        tasks = list(session.scalars(select(Task).where(Task.campaign_id == campaign)))
        judged = dict(session.execute(select(Judgement.task_id, func.count()).group_by(Judgement.task_id)).all())
    gold = next(t.id for t in tasks if t.gold)
    unanimous = next(t.id for t in tasks if not t.gold and judged.get(t.id) == 2)
    waiting = next(t.id for t in tasks if not t.gold and judged.get(t.id, 0) < 2)
    reviewer = web.login("review1")
    token = csrf(reviewer.get("/review").text)
    for task_id in (unanimous, waiting, gold):
        _refused(web, reviewer, task_id, token)
    with web.store.reading() as session:
        assert session.scalar(select(func.count()).select_from(Adjudication)) == 0
    assert web.events("adjudicate") == []
