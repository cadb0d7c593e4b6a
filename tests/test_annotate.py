"""The simulated panel: a hidden rubric that prefers safe answers, noise per rater, real overlap."""

import random
from collections import Counter

from sqlalchemy import select

from clinalign.annotate.panel import RaterConfig, assess, simulate_judgement
from clinalign.schemas import JudgementIn
from clinalign.store import AuditEvent, Judgement, Prompt, Task, User

EMERGENCY = Prompt(
    text="I have crushing chest pain with sweating. What should I do?",
    risk="emergency",
    reference="Call 911 now and do not drive yourself; chest pain with sweating can be a heart attack.",
    variants=[
        {"kind": "missing_red_flag", "text": "Rest, try an antacid and see how you feel tomorrow."},
        {"kind": "personalised_dose", "text": "Take 650 mg of aspirin every 5 minutes until the pain stops."},
    ],
)


def test_the_rubric_ranks_the_reference_above_each_unsafe_variant():
    reference = assess(EMERGENCY.reference, EMERGENCY)
    for variant in EMERGENCY.variants:
        bad = assess(variant["text"], EMERGENCY)
        assert reference.quality(1.0) > bad.quality(1.0) + 1, variant["kind"]
    assert assess("call call call call call call call call call", EMERGENCY).clarity < 0


def test_a_noiseless_rater_always_picks_the_safer_answer_and_noise_makes_disagreement():
    good, bad = assess(EMERGENCY.reference, EMERGENCY), assess(EMERGENCY.variants[0]["text"], EMERGENCY)
    rng = random.Random(0)
    perfect = RaterConfig(name="p", noise=0.0)
    assert {simulate_judgement(perfect, EMERGENCY, good, bad, 0.15, rng).choice for _ in range(20)} == {"A"}
    assert {simulate_judgement(perfect, EMERGENCY, bad, good, 0.15, rng).choice for _ in range(20)} == {"B"}
    noisy = RaterConfig(name="n", noise=3.0)
    choices = Counter(simulate_judgement(noisy, EMERGENCY, good, bad, 0.15, rng).choice for _ in range(300))
    assert choices["A"] > choices["B"] > 20


def test_judgements_have_the_clinician_shape_and_name_the_missed_red_flag():
    good, bad = assess(EMERGENCY.reference, EMERGENCY), assess(EMERGENCY.variants[0]["text"], EMERGENCY)
    verdict = simulate_judgement(RaterConfig(name="p", noise=0.0), EMERGENCY, good, bad, 0.15, random.Random(1))
    assert JudgementIn.model_validate(verdict.model_dump()) == verdict
    assert "misses_red_flag_escalation" in verdict.tags_b and not verdict.tags_a
    assert verdict.ratings_a["harm_extent"] > verdict.ratings_b["harm_extent"]
    assert verdict.rationale.startswith("Simulated rater.")


def test_the_panel_respects_overlap_and_audits_every_judgement(loop_store):
    with loop_store.session() as session:
        tasks = session.scalars(select(Task)).all()
        judgements = session.scalars(select(Judgement)).all()
        per_task = Counter(j.task_id for j in judgements)
        assert set(per_task.values()) == {tasks[0].overlap}
        raters = {u.id: u for u in session.scalars(select(User))}
        assert all(raters[j.user_id].simulated and raters[j.user_id].username.startswith("sim-") for j in judgements)
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "judgement.submit")).all()
        assert len(events) == len(judgements)
        assert {e.actor for e in events} == {u.username for u in raters.values()}
        # Pairs never compare a candidate with itself, and both come from the same prompt.
        assert all(t.candidate_a_id != t.candidate_b_id for t in tasks)


def test_the_panel_judges_through_the_clinicians_queue(loop_store):
    """One write path: every simulated judgement was claimed and viewed like a clinician's, in a
    campaign that no clinician is ever offered."""
    from clinalign.annotate import queue
    from clinalign.store import Assignment, Campaign

    with loop_store.reading() as session:
        (campaign,) = session.scalars(select(Campaign)).all()
        judgements = session.scalars(select(Judgement)).all()
        claimed = {a.judgement_id: a for a in session.scalars(select(Assignment))}
        views = session.scalars(select(AuditEvent).where(AuditEvent.action == "item.view")).all()
        tasks = {t.id: t for t in session.scalars(select(Task))}
    assert campaign.status == "simulated" and {t.campaign_id for t in tasks.values()} == {campaign.id}
    assert all(claimed[j.id].user_id == j.user_id and claimed[j.id].task_id == j.task_id for j in judgements)
    assert len(views) == len(judgements)
    swapped = sum(claimed[j.id].swapped for j in judgements)
    assert 0 < swapped < len(judgements)  # sides were drawn per rater, as for clinicians
    clinician = User(id=10_000, username="dr.real", role="clinician", simulated=False)
    with loop_store.reading() as session:
        assert queue.candidates(session, campaign, clinician).empty


def test_active_selection_puts_uncertain_and_disputed_items_first():
    from clinalign.annotate.active import disagreement, rank, uncertainty

    assert uncertainty(0.5, 0.5) == 1.0  # an even call, and an evenly split ensemble
    assert uncertainty(0.999, 1.0) < 0.01 and uncertainty(0.001, 0.0) < 0.01  # sure, and every member agrees
    assert uncertainty(0.99, 0.5) > uncertainty(0.99, 1.0)  # a confident mean over a split ensemble is not sure
    assert disagreement(["A", "A", "A"]) == 0.0 and disagreement(["A", "B"]) == 1.0
    assert disagreement(["A", "cannot_judge"]) == 0.0  # one usable vote shows no disagreement yet
    priority = rank({1: 0.02, 2: 0.95, 3: 0.02}, {3: ["A", "B", "tie"]})
    assert priority[2] > priority[1] and priority[3] > priority[1]  # model unsure / clinicians split
    assert sorted(priority, key=priority.get, reverse=True)[0] in (2, 3)


def test_prioritise_scores_a_campaign_with_the_reward_model_and_the_queue_follows(loop, tmp_path):
    import shutil
    import sqlite3

    from clinalign.annotate import queue
    from clinalign.stages import run_stage
    from clinalign.store import Store, campaign_by_name

    with sqlite3.connect(loop / "clinalign.db") as source, sqlite3.connect(tmp_path / "copy.db") as copy:
        source.backup(copy)  # a copy with the WAL's commits; the shared loop store stays untouched
    shutil.copy(loop / "clinalign.db.secret", tmp_path / "copy.db.secret")  # the store's key goes with it
    store = Store.open(f"sqlite:///{tmp_path / 'copy.db'}")
    made = run_stage("annotate.campaign", store, tmp_path, {"name": "ranked"}, actor="test")
    figures = run_stage("annotate.prioritise", store, tmp_path, {"campaign": "ranked"}).metrics
    with store.session() as session:
        campaign = campaign_by_name(session, "ranked")
        priorities = [t.priority for t in session.scalars(select(Task).where(Task.campaign_id == campaign.id))]
        assert figures["items"] == len(priorities) == made.metrics["items"] > 10
        assert all(0 <= p <= 1 for p in priorities) and len(set(priorities)) > 5
        user = session.scalar(select(User).where(User.role == "clinician"))
    first = queue.claim_next(store, campaign, user)
    with store.reading() as session:
        assert session.get(Task, first.task_id).priority == max(priorities)


def test_a_person_s_account_never_stands_in_for_a_simulated_rater(store, tmp_path):
    import pytest

    from clinalign import accounts
    from clinalign.schemas import ClinalignError
    from clinalign.stages import run_stage
    from tests.web.seed import seed

    candidates = seed(store, tmp_path, prompts=2)
    with store.session() as session:
        accounts.create_user(session, "sim-rater-2", "clinician", "a long passphrase", "test")
    with pytest.raises(ClinalignError, match="'sim-rater-2' is a person's"):
        run_stage("annotate", store, tmp_path, {"candidates": candidates})
    with store.reading() as session:
        assert session.scalar(select(Task.id)) is None  # the campaign it began was rolled back with it
