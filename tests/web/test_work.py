"""The clinician's screens and the assignment queue: real forms, then the database."""

from __future__ import annotations

import io
import re
import threading
import zipfile
from datetime import timedelta

from sqlalchemy import func, select, update

from clinalign.annotate import queue
from clinalign.schemas import JudgementIn
from clinalign.settings import Settings
from clinalign.store import Assignment, Campaign, Judgement, JudgementRevision, Prompt, Task, User, utcnow
from clinalign.web.app import create_app
from tests.web.conftest import AXES6, csrf, judgement_form, open_item


def _user(store, name: str) -> User:
    with store.session() as session:
        return session.scalar(select(User).where(User.username == name))


def _judge(store, user: User, assignment: Assignment, vote: JudgementIn) -> None:
    with store.session() as session:
        queue.submit(session, queue.owned(session, assignment.id, user), user, vote)


def _judge_all(store, campaign: Campaign, user: User, vote: JudgementIn) -> list[Assignment]:
    """Claim and judge until the queue has nothing left for ``user``, as the web app does."""
    done = []
    while (assignment := queue.claim_next(store, campaign, user)) is not None:
        _judge(store, user, assignment, vote)
        done.append(assignment)
    return done


def test_the_comparison_screen_hides_models_and_stores_the_choice_in_task_order(web):
    campaign = web.campaign()
    client = web.login("clin1")
    assignment, page = open_item(client, campaign)
    assert "Answer A" in page and "Answer B" in page and "Ctrl+Enter" in page
    assert "seed://model" not in page and "model" not in page.lower().split("<main>")[1].split("guidelines")[0]
    response = client.post(
        f"/items/{assignment}",
        data=judgement_form(page, "A", tags_b="misses_red_flag_escalation"),
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == f"/work/{campaign}/next"
    with web.store.session() as session:
        row = session.get(Assignment, assignment)
        judgement = session.get(Judgement, row.judgement_id)
        task = session.get(Task, row.task_id)
        shown_first = task.candidate_b_id if row.swapped else task.candidate_a_id
        from clinalign.store import Candidate

        # "A" was the answer displayed first; in task order that is B when the sides were swapped
        assert judgement.choice == ("B" if row.swapped else "A")
        assert session.get(Candidate, shown_first).text in page
        assert (judgement.tags_a if row.swapped else judgement.tags_b) == ["misses_red_flag_escalation"]
        assert set(judgement.ratings_a) == set(AXES6) and judgement.seconds is not None
    actions = [e.action for e in web.events()]
    assert "item.view" in actions and actions[-1] == "judgement.submit"


def test_sides_are_randomised_per_clinician(web):
    campaign = web.campaign(overlap=3)
    swaps = []
    for name in ("clin1", "clin2", "clin3"):
        client = web.login(name)
        for _ in range(12):
            assignment, page = open_item(client, campaign)
            if assignment is None:
                break
            client.post(f"/items/{assignment}", data=judgement_form(page, "tie"))
    with web.store.session() as session:
        swaps = [a.swapped for a in session.scalars(select(Assignment))]
    assert len(swaps) == 36 and 6 < sum(swaps) < 30


def test_a_double_submit_is_refused_and_stored_once(web):
    campaign = web.campaign()
    client = web.login("clin1")
    assignment, page = open_item(client, campaign)
    form = judgement_form(page)
    assert client.post(f"/items/{assignment}", data=form, follow_redirects=False).status_code == 303
    again = client.post(f"/items/{assignment}", data=form)
    assert again.status_code == 409 and "already submitted" in again.text
    with web.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Judgement)) == 1


def test_another_clinicians_item_is_not_found_and_nothing_is_stored(web):
    campaign = web.campaign()
    owner, intruder = web.login("clin1"), web.login("clin2")
    assignment, page = open_item(owner, campaign)
    _, own_page = open_item(intruder, campaign)
    assert intruder.get(f"/items/{assignment}").status_code == 404
    response = intruder.post(f"/items/{assignment}", data=judgement_form(own_page))
    assert response.status_code == 404 and "not assigned to you" in response.text
    assert intruder.get("/items/999999").status_code == 404
    with web.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Judgement)) == 0


def test_bad_values_get_a_4xx_that_names_the_field_as_the_form_does_and_store_nothing(web):
    campaign = web.campaign()
    client = web.login("clin1")
    assignment, page = open_item(client, campaign)
    consensus = "Answer A: Agreement with scientific consensus"
    cases = {
        "out of range": (judgement_form(page, rating="9"), 422, f"{consensus} (at most 5)"),
        "not a number": (judgement_form(page, rating="four"), 422, f"{consensus} (a whole number)"),
        "huge number": (judgement_form(page, rating="9" * 30), 422, f"{consensus} (at most 5)"),
        "unknown choice": (judgement_form(page, choice="maybe"), 422, "Choice (one of the options offered)"),
        "unknown tag": (judgement_form(page, tags_a="rude"), 422, "Answer A: error tags"),
        "missing axis": ({k: v for k, v in judgement_form(page).items() if k != "b_empathy"}, 400, "empathy"),
        "single-mode choice": (judgement_form(page, choice="good"), 400, "does not fit"),
        "rationale too long": (judgement_form(page, rationale="x" * 5000), 422, "Rationale (at most 4000 characters)"),
    }
    for name, (form, status, says) in cases.items():
        response = client.post(f"/items/{assignment}", data=form)
        assert response.status_code == status and says in response.text, (name, response.text)
        assert "Traceback" not in response.text
        for developer_words in ("ratings_a", "literal[", "tags_a", "string_too_long"):
            assert developer_words not in response.text, name
    oversize = client.post(f"/items/{assignment}", data=judgement_form(page, rewrite="x" * 300_000))
    assert oversize.status_code == 413
    with web.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Judgement)) == 0


def test_a_single_answer_form_error_names_the_answer_without_a_letter(web):
    campaign = web.campaign(name="thumbs", mode="single", overlap=1)
    client = web.login("clin1")
    assignment, page = open_item(client, campaign)
    response = client.post(f"/items/{assignment}", data=judgement_form(page, "good", rating="0", sides="a"))
    assert response.status_code == 422 and "Answer: Empathy (at least 1)" in response.text


def test_my_judgements_lists_each_question_and_times_in_utc(web):
    campaign = web.campaign()
    client = web.login("clin1")
    assignment, page = open_item(client, campaign)
    client.post(f"/items/{assignment}", data=judgement_form(page))
    with web.store.reading() as session:
        question = session.scalar(
            select(Prompt.text)
            .join(Task, Task.prompt_id == Prompt.id)
            .join(Assignment)
            .where(Assignment.id == assignment)
        )
    history = client.get(f"/work/{campaign}/history").text
    assert question[:60] in history
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", history)


def test_cannot_judge_needs_no_ratings(web):
    campaign = web.campaign()
    client = web.login("clin1")
    assignment, page = open_item(client, campaign)
    response = client.post(
        f"/items/{assignment}", data={"csrf": csrf(page), "choice": "cannot_judge"}, follow_redirects=False
    )
    assert response.status_code == 303


def test_a_clinician_edits_a_judgement_and_the_earlier_version_is_kept(web):
    campaign = web.campaign()
    client = web.login("clin1")
    assignment, page = open_item(client, campaign)
    client.post(f"/items/{assignment}", data=judgement_form(page, "A"))
    history = client.get(f"/work/{campaign}/history")
    with web.store.session() as session:
        judgement_id = session.get(Assignment, assignment).judgement_id
    assert f"/judgements/{judgement_id}/edit" in history.text
    edit_page = client.get(f"/judgements/{judgement_id}/edit")
    assert 'value="A" data-key="a" required checked' in edit_page.text  # prefilled as the clinician saw it
    response = client.post(
        f"/judgements/{judgement_id}/edit",
        data=judgement_form(edit_page.text, "both_unacceptable", rating="2"),
        follow_redirects=False,
    )
    assert response.status_code == 303
    with web.store.session() as session:
        assert session.get(Judgement, judgement_id).choice == "both_unacceptable"
        revisions = list(session.scalars(select(JudgementRevision)))
        assert len(revisions) == 1 and revisions[0].content["choice"] in ("A", "B")
    assert len(web.events("judgement.edit")) == 1
    other = web.login("clin2")
    assert other.get(f"/judgements/{judgement_id}/edit").status_code == 404


def test_each_item_gets_exactly_overlap_judgements_then_the_queue_is_empty(web):
    campaign = web.campaign(overlap=2)
    counts = {}
    for name in ("clin1", "clin2", "clin3"):
        client = web.login(name)
        counts[name] = 0
        while True:
            assignment, page = open_item(client, campaign)
            if assignment is None:
                assert "Nothing left" in page
                break
            client.post(f"/items/{assignment}", data=judgement_form(page))
            counts[name] += 1
    assert sum(counts.values()) == 24 and counts["clin3"] == 0  # 12 items x 2, finished by the first two
    with web.store.session() as session:
        per_task = session.execute(select(Judgement.task_id, func.count()).group_by(Judgement.task_id)).all()
    assert len(per_task) == 12 and {n for _, n in per_task} == {2}


def test_blind_mode_nobody_sees_another_clinicians_judgement(web):
    campaign = web.campaign()
    first = web.login("clin1")
    assignment, page = open_item(first, campaign)
    first.post(f"/items/{assignment}", data=judgement_form(page, rationale="SECRET-RATIONALE-123"))
    second = web.login("clin2")
    for _ in range(12):
        assignment, page = open_item(second, campaign)
        assert "SECRET-RATIONALE-123" not in page
        second.post(f"/items/{assignment}", data=judgement_form(page))


def test_specialty_routing_sends_cardiology_items_to_the_cardiologist_only(web):
    campaign = web.campaign(routing="true")
    generalist, cardiologist = _user(web.store, "clin1"), _user(web.store, "clin4")
    vote = JudgementIn(choice="cannot_judge", ratings_a={})
    seen = {}
    for user in (generalist, cardiologist):
        with web.store.reading() as session:
            camp = session.get(Campaign, campaign)
            assert queue.progress(session, camp, user)[1] == (4 if user is generalist else 8)
        judged = [a.task_id for a in _judge_all(web.store, camp, user, vote)]
        with web.store.reading() as session:
            seen[user.username] = set(session.scalars(select(Task.specialty).where(Task.id.in_(judged))))
    assert seen == {"clin1": {"general"}, "clin4": {"cardiology", "general"}}


def test_a_lapsed_claim_frees_its_slot_and_the_late_submission_is_refused_not_duplicated(web):
    campaign = web.campaign(overlap=1)
    slow, fast = _user(web.store, "clin1"), _user(web.store, "clin2")
    with web.store.reading() as session:
        camp = session.get(Campaign, campaign)
    held = queue.claim_next(web.store, camp, slow)
    with web.store.session() as session:
        session.execute(
            update(Assignment).where(Assignment.id == held.id).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    vote = JudgementIn(choice="tie", ratings_a=dict.fromkeys(AXES6, 3), ratings_b=dict.fromkeys(AXES6, 3))
    taken = [a.id for a in _judge_all(web.store, camp, fast, vote)]
    assert len(taken) == 12 and taken[-1] == held.id  # unclaimed slots first, the lapsed one last
    with web.store.session() as session:
        late = session.get(Assignment, held.id)
        try:
            queue.submit(session, late, slow, vote)
            raise AssertionError("the late submission was accepted")
        except queue.NotFound:
            pass


def test_a_plan_gone_stale_is_read_again_instead_of_saying_nothing_is_left(web, monkeypatch):
    monkeypatch.setattr(queue, "_CANDIDATES", 3)  # plans of three tasks, so others can take them all
    campaign = web.campaign(overlap=1)
    late, quick = _user(web.store, "clin1"), _user(web.store, "clin2")
    with web.store.reading() as session:
        camp = session.get(Campaign, campaign)
        stale = queue.candidates(session, camp, late)
    vote = JudgementIn(choice="cannot_judge", ratings_a={})
    for _ in stale.fresh:  # the other clinician takes every task in the plan first
        _judge(web.store, quick, queue.claim_next(web.store, camp, quick), vote)
    with web.store.session() as session:
        assert queue.take(session, stale, late) is None
    reads, read = [], queue.candidates

    def first_read_is_stale(*args):  # as if the other clinician had claimed between the read and the claim
        reads.append(args)
        return stale if len(reads) == 1 else read(*args)

    monkeypatch.setattr(queue, "candidates", first_read_is_stale)
    assignment = queue.claim_next(web.store, camp, late)
    assert len(reads) == 2 and assignment is not None and assignment.task_id not in stale.fresh
    assert [e.subject for e in web.events("item.view") if e.actor == "clin1"] == [f"assignment:{assignment.id}"]


def _race(store, campaign_id: int, users: list[User], rounds: int) -> list[Exception]:
    errors = []
    barrier = threading.Barrier(len(users))
    vote = JudgementIn(choice="A", ratings_a=dict.fromkeys(AXES6, 4), ratings_b=dict.fromkeys(AXES6, 2))

    def worker(user: User) -> None:
        try:
            barrier.wait()
            with store.reading() as session:
                camp = session.get(Campaign, campaign_id)
            for _ in range(rounds):
                assignment = queue.claim_next(store, camp, user)
                if assignment is None:
                    return
                _judge(store, user, assignment, vote)
        except Exception as err:  # noqa: BLE001 - collected and asserted on below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_clinicians_never_exceed_the_overlap(any_web):
    web = any_web
    from clinalign import accounts

    campaign = web.campaign(overlap=2)
    with web.store.session() as session:
        users = [accounts.create_user(session, f"race{i}", "clinician", None, "test") for i in range(8)]
    errors = _race(web.store, campaign, users, rounds=12)
    assert errors == []
    with web.store.session() as session:
        per_task = dict(session.execute(select(Judgement.task_id, func.count()).group_by(Judgement.task_id)).all())
        slots = session.execute(select(Assignment.task_id, func.count()).group_by(Assignment.task_id)).all()
    assert max(per_task.values()) <= 2 and sum(per_task.values()) == 24  # every item filled, none beyond 2
    assert all(n <= 2 for _, n in slots)


PHI_RATIONALE = "Rang the patient on (617) 555-0123 about MRN 4839201"
PHI_REWRITE = "Call 911 now. Your GP is on 617-555-0199, MRN: 00482913."
PHI_TRACES = ("555-0123", "4839201", "555-0199", "00482913")


def _split_with_phi(web, campaign: int) -> int:
    """clin1 types PHI into the rationale and rewrite of the first item; clin2 and clin3 disagree with
    them, so the item waits for a reviewer (three different verdicts: a split whichever sides each was
    shown). Returns clin1's judgement id."""
    for name, choice in (("clin1", "A"), ("clin2", "tie"), ("clin3", "both_unacceptable")):
        client = web.login(name)
        assignment, page = open_item(client, campaign)
        extra = {"rationale": PHI_RATIONALE, "rewrite": PHI_REWRITE} if name == "clin1" else {}
        assert client.post(f"/items/{assignment}", data=judgement_form(page, choice, **extra)).status_code == 200
        if name == "clin1":
            with web.store.reading() as session:
                judgement_id = session.get(Assignment, assignment).judgement_id
    return judgement_id


def _no_trace(text: str) -> bool:
    return not any(trace in text for trace in PHI_TRACES)


def _exported(web, campaign: int) -> str:
    expert = web.login("expert1")
    token = csrf(expert.get(f"/campaigns/{campaign}").text)
    archive = zipfile.ZipFile(io.BytesIO(expert.post(f"/campaigns/{campaign}/export", data={"csrf": token}).content))
    return "".join(archive.read(name).decode("latin-1") for name in archive.namelist())


def test_phi_typed_into_a_rationale_or_rewrite_is_stored_and_shown_only_scrubbed(web):
    campaign = web.campaign(overlap=3)
    judgement_id = _split_with_phi(web, campaign)
    with web.store.reading() as session:
        stored = session.get(Judgement, judgement_id)
    assert "[PHONE]" in stored.rationale and "[MRN]" in stored.rationale and _no_trace(stored.rationale)
    assert "[PHONE]" in stored.rewrite and "[MRN]" in stored.rewrite and _no_trace(stored.rewrite)
    assert stored.original is None  # the site did not ask to keep what was typed
    review = web.login("review1").get(f"/review/{campaign}").text
    assert "Rang the patient on [PHONE]" in review and _no_trace(review)
    assert _no_trace(web.login("clin1").get(f"/judgements/{judgement_id}/edit").text)
    exported = _exported(web, campaign)
    assert "[PHONE]" in exported and _no_trace(exported)
    client = web.login("clin1")  # an edit is scrubbed the same way
    page = client.get(f"/judgements/{judgement_id}/edit").text
    client.post(
        f"/judgements/{judgement_id}/edit", data=judgement_form(page, "A", rationale="now (617) 555-0123 MRN 4839201")
    )
    with web.store.reading() as session:
        edited = session.get(Judgement, judgement_id)
        assert _no_trace(edited.rationale) and edited.original is None
        assert all(_no_trace(str(r.content)) for r in session.scalars(select(JudgementRevision)))


def test_with_originals_kept_the_typed_text_is_stored_aside_and_never_shown(web):
    web.app = create_app(Settings(data_dir=web.data_dir, keep_clinician_originals=True), web.store)
    campaign = web.campaign(overlap=3)
    judgement_id = _split_with_phi(web, campaign)
    with web.store.reading() as session:
        stored = session.get(Judgement, judgement_id)
    assert stored.original == {"rationale": PHI_RATIONALE, "rewrite": PHI_REWRITE}
    assert _no_trace(stored.rationale) and _no_trace(stored.rewrite)
    assert _no_trace(web.login("review1").get(f"/review/{campaign}").text)
    client = web.login("clin1")
    page = client.get(f"/judgements/{judgement_id}/edit").text
    assert _no_trace(page) and _no_trace(client.get(f"/work/{campaign}/history").text)
    assert _no_trace(_exported(web, campaign))
    typed = "edited: ring (617) 555-0123"
    client.post(f"/judgements/{judgement_id}/edit", data=judgement_form(page, "A", rationale=typed))
    with web.store.reading() as session:
        assert session.get(Judgement, judgement_id).original == {"rationale": typed, "rewrite": None}
