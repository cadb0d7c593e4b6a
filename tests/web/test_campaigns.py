"""Campaigns from the data expert's side: creation, the PHI gate, the dashboard, exports."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from sqlalchemy import func, select

from clinalign.store import Artifact, Campaign, Run, Store, Task
from tests.web.conftest import Web, csrf, judgement_form, open_item, safer_side
from tests.web.seed import seed


def _judge_all(web: Web, campaign: int, choices: dict[str, str]) -> None:
    for name, choice in choices.items():
        client = web.login(name)
        while True:
            assignment, page = open_item(client, campaign)
            if assignment is None:
                break
            safer = safer_side(page)
            side = safer if choice == "safer" else {"A": "B", "B": "A"}[safer]
            client.post(
                f"/items/{assignment}",
                data=judgement_form(page, side, rewrite="Call 911 now." if name == "clin1" else ""),
            )


def test_a_campaign_from_the_form_has_its_items_gold_and_rules(web):
    campaign = web.campaign(name="round 1", overlap=2, gold=3, routing="true", axes=["consensus", "harm_extent"])
    with web.store.session() as session:
        row = session.get(Campaign, campaign)
        tasks = list(session.scalars(select(Task).where(Task.campaign_id == campaign)))
        assert (row.overlap, row.routing, row.axes, row.created_by) == (
            2,
            True,
            ["consensus", "harm_extent"],
            "expert1",
        )
        assert len(tasks) == 15 and sum(1 for t in tasks if t.gold) == 3
        assert {t.gold for t in tasks if t.gold} <= {"A", "B"} and all(t.specialty for t in tasks)
    assert [e.actor for e in web.events("campaign.create")] == ["expert1"]
    again = web.post_campaign("round 1", overlap=2, axes=["consensus"])
    assert again.status_code == 400 and "already exists" in again.text
    bad_axis = web.post_campaign("r2", overlap=2, axes=["wit"])
    assert bad_axis.status_code == 400 and "subset" in bad_axis.text
    bad_mode = web.post_campaign("r3", mode="triple")
    assert bad_mode.status_code == 422 and "Kind" in bad_mode.text


def test_only_deidentified_records_can_enter_a_campaign(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'phi.db'}")
    web = Web(store, tmp_path, seed(store, tmp_path, deidentified=False))
    response = web.post_campaign("x", overlap=2, axes=["consensus"])
    assert response.status_code == 400 and "not de-identified" in response.text
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 0


def test_single_answer_campaign_takes_thumbs_and_exports_kto(web):
    campaign = web.campaign(name="thumbs", mode="single", overlap=2)
    client = web.login("clin1")
    assignment, page = open_item(client, campaign)
    assert "Answer B" not in page and "Good" in page
    pair_vote = client.post(f"/items/{assignment}", data=judgement_form(page, "A", sides="a"))
    assert pair_vote.status_code == 400
    assert (
        client.post(
            f"/items/{assignment}", data=judgement_form(page, "good", sides="a"), follow_redirects=False
        ).status_code
        == 303
    )
    for name in ("clin1", "clin2"):
        c = web.login(name)
        while (found := open_item(c, campaign))[0] is not None:
            c.post(f"/items/{found[0]}", data=judgement_form(found[1], "bad", sides="a"))
    expert = web.login("expert1")
    export = expert.post(
        f"/campaigns/{campaign}/export", data={"csrf": csrf(expert.get(f"/campaigns/{campaign}").text)}
    )
    archive = zipfile.ZipFile(io.BytesIO(export.content))
    kto = [json.loads(line) for line in archive.read("kto.jsonl").decode().splitlines()]
    assert len(kto) >= 20 and set(kto[0]) >= {"prompt", "completion", "label"}


def test_dashboard_export_and_datasets(web):
    campaign = web.campaign(overlap=3, gold=2)
    _judge_all(web, campaign, {"clin1": "safer", "clin2": "safer", "clin3": "riskier"})
    expert = web.login("expert1")
    page = expert.get(f"/campaigns/{campaign}")
    assert page.status_code == 200
    for figure in ("Krippendorff", "Fleiss", "Gwet", "Cohen", "Gold accuracy", "data:image/png;base64,"):
        assert figure in page.text
    export = expert.post(f"/campaigns/{campaign}/export", data={"csrf": csrf(page.text)})
    assert export.status_code == 200 and export.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(export.content))
    names = set(archive.namelist())
    for table in ("pairs", "pairs_standard", "kto", "sft_rewrites", "judgements", "train"):
        assert {f"{table}.parquet", f"{table}.jsonl"} <= names, table
    pairs = [json.loads(line) for line in archive.read("pairs_standard.jsonl").decode().splitlines()]
    assert len(pairs) == 12 and all(p["margin"] == pytest.approx(1 / 3) for p in pairs)  # 2 of 3 for one side
    assert all("911" in p["chosen"] for p in pairs)  # side randomisation undone: the safer answer wins
    flat = [json.loads(line) for line in archive.read("judgements.jsonl").decode().splitlines()]
    assert len(flat) == 42 and {"a_harm_extent", "b_empathy", "rater", "gold"} <= set(flat[0])
    sft = [json.loads(line) for line in archive.read("sft_rewrites.jsonl").decode().splitlines()]
    assert len(sft) == 14 and sft[0]["messages"][1]["content"] == "Call 911 now."
    assert [e.actor for e in web.events("export")] == ["expert1"]
    from clinalign.preferences.export import load
    from tests.conftest import newest

    with web.store.session() as session:
        folder = newest(session, "preference_dataset").uri
    from pathlib import Path

    dataset = load(Path(folder))
    assert dataset["pairs"].num_rows == 12 and dataset["kto"].num_rows == 24


def test_the_dashboard_counts_items_decided_with_real_numbers(web):
    campaign = web.campaign(overlap=3)
    expert = web.login("expert1")
    page = expert.get(f"/campaigns/{campaign}").text
    assert "0 of 36 judgements" in page and "0 of 12 items decided (0 by a reviewer)" in page
    _judge_all(web, campaign, {"clin1": "safer", "clin2": "safer", "clin3": "riskier"})
    page = expert.get(f"/campaigns/{campaign}").text
    assert "36 of 36 judgements" in page and "12 of 12 items decided (0 by a reviewer)" in page
    assert "built-in method" not in page


def test_a_routed_campaign_warns_when_a_specialty_has_too_few_clinicians(web):
    routed = web.campaign("routed", routing="true", overlap=3)
    page = web.login("expert1").get(f"/campaigns/{routed}").text
    assert "4 cardiology item(s) can reach only 1 active clinician(s)" in page  # clin4 alone
    assert "4 dermatology item(s) can reach only 0 active clinician(s)" in page
    assert "general item(s)" not in page  # four clinicians see general items
    plain = web.campaign("plain", overlap=3)
    assert "Specialty routing:" not in web.login("expert1").get(f"/campaigns/{plain}").text


def test_a_campaign_with_overlap_one_and_few_judgements_shows_and_exports(web):
    campaign = web.campaign(overlap=1)
    client = web.login("clin1")
    for _ in range(3):
        assignment, page = open_item(client, campaign)
        client.post(f"/items/{assignment}", data=judgement_form(page, safer_side(page)))
    expert = web.login("expert1")
    page = expert.get(f"/campaigns/{campaign}")
    assert page.status_code == 200 and "not yet" in page.text and "3 of 12 judgements" in page.text
    export = expert.post(f"/campaigns/{campaign}/export", data={"csrf": csrf(page.text)})
    assert export.status_code == 200 and export.headers["content-type"] == "application/zip"
    assert "judgements.jsonl" in zipfile.ZipFile(io.BytesIO(export.content)).namelist()


def test_the_candidate_list_says_how_many_answers_and_which_loop_and_run_made_them(web):
    with web.store.reading() as session:
        made = session.get(Artifact, web.candidates)
        run = session.get(Run, made.run_id)
    page = web.login("expert1").get("/campaigns/new").text
    option = re.search(rf'<option value="{web.candidates}">(.*?)</option>', page).group(1)
    assert "24 answers" in option and "?" not in option
    assert f"loop {run.loop_id or run.id}" in option and f"run {run.id}" in option and option.endswith(" UTC")


def test_campaign_form_errors_name_the_fields_as_the_form_does(web):
    cases = {
        "Kind (one of the options offered)": {"mode": "triple"},
        "Clinicians per item (overlap) (at most 20)": {"overlap": 99},
        "Calibration (gold) items (a whole number)": {"gold": "some"},
        "Adjudicate when the minority share exceeds (at most 1)": {"disagreement": 7},
    }
    for says, fields in cases.items():
        response = web.post_campaign("named", **fields)
        assert response.status_code == 422 and says in response.text, (fields, response.text)
        assert "body." not in response.text and "literal" not in response.text
    assert "Name (at least 1 character)" in web.post_campaign("  ").text
    with web.store.reading() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 0
