"""Adjudication: disputed items reach the reviewer, whose decision becomes the consensus."""

from __future__ import annotations

import io
import json
import zipfile

from sqlalchemy import select

from clinalign.store import Adjudication
from tests.web.conftest import csrf, judgement_form, open_item, safer_side


def _split_votes(web, campaign: int) -> None:
    """clin1 picks the safer answer, clin2 the riskier one, clin3 says tie: no majority anywhere."""
    for name, pick in (("clin1", "safer"), ("clin2", "riskier"), ("clin3", "tie")):
        client = web.login(name)
        while (found := open_item(client, campaign))[0] is not None:
            safer = safer_side(found[1])
            side = {"safer": safer, "riskier": {"A": "B", "B": "A"}[safer], "tie": "tie"}[pick]
            client.post(f"/items/{found[0]}", data=judgement_form(found[1], side, rationale=f"{name} reasoning"))


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
    from clinalign.store import Judgement

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
