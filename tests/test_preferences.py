"""Agreement, consensus and the TRL export."""

import json

import pytest

from clinalign.preferences import consensus
from clinalign.preferences.agreement import agreement
from clinalign.schemas import AXES
from clinalign.store import Judgement

R = {axis: 3 for axis in AXES}


def judgement(task: int, user: int, choice: str, harm: int = 3) -> Judgement:
    return Judgement(task_id=task, user_id=user, choice=choice, ratings_a={**R, "harm_extent": harm}, ratings_b=R)


def test_consensus_needs_a_strict_majority():
    assert consensus(["A", "A", "B"], 2) == ("A", pytest.approx(1 / 3))
    assert consensus(["B", "B", "B"], 2) == ("B", 1.0)
    assert consensus(["A", "B", "tie"], 2) is None
    assert consensus(["A", "cannot_judge", "cannot_judge"], 2) is None  # one usable vote
    assert consensus(["A", "A", "tie", "tie"], 2) is None


def test_perfect_agreement_and_chance_agreement():
    same = [judgement(t, u, "A" if t % 2 else "B", harm=1 + t % 5) for t in range(20) for u in range(3)]
    stats = agreement(same)
    assert stats["alpha_choice"] == pytest.approx(1.0)
    assert stats["alpha_axes"]["harm_extent"] == pytest.approx(1.0)
    assert stats["alpha_axes"]["consensus"] is None  # every rating equal: alpha undefined, not faked
    assert stats["pairwise_agreement"] == 1.0 and stats["rater_vs_rest"] == 1.0
    import random

    rng = random.Random(3)
    noise = [judgement(t, u, rng.choice("AB")) for t in range(300) for u in range(3)]
    assert abs(agreement(noise)["alpha_choice"]) < 0.1


def test_the_export_is_in_trl_conversational_format(loop_store, loop):
    from tests.conftest import newest

    with loop_store.session() as session:
        art = newest(session, "preference_dataset")
    rows = [json.loads(line) for line in (loop / "artifacts" / str(art.run_id) / "preferences" / "train.jsonl").open()]
    assert len(rows) == art.meta["train_pairs"] > 0
    row = rows[0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["rejected"][0]["role"] == "assistant" and 0 < row["margin"] <= 1
    assert art.meta["agreement"]["alpha_choice"] is not None
    assert set(art.meta["agreement"]["per_rater"]) <= {f"sim-rater-{i}" for i in range(1, 6)}


def test_gwet_ac1_stays_high_where_kappa_collapses_under_a_dominant_category():
    from clinalign.preferences.agreement import cohen_pairs, gwet_ac1

    # Two raters, 10 items: 8 agreed "good", 2 split. Worked by hand from Gwet (2008), eq. 18:
    # pa = 0.8, pi(good) = 0.9, pe = 2 * 0.9 * 0.1 = 0.18, AC1 = 0.62 / 0.82.
    items = [["good", "good"]] * 8 + [["good", "bad"], ["bad", "good"]]
    assert gwet_ac1(items, ("good", "bad")) == pytest.approx(0.62 / 0.82)
    by_user = {"r1": {i: item[0] for i, item in enumerate(items)}, "r2": {i: item[1] for i, item in enumerate(items)}}
    assert cohen_pairs(by_user, ("good", "bad"))["r1|r2"] == pytest.approx((0.8 - 0.82) / 0.18)  # the paradox


def test_fleiss_kappa_matches_the_published_worked_example():
    from clinalign.preferences.agreement import fleiss

    # Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories.
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    categories = ("c1", "c2", "c3", "c4", "c5")
    items = [[c for c, n in zip(categories, row, strict=True) for _ in range(n)] for row in table]
    kappa, used = fleiss(items, categories)
    assert used == 10 and kappa == pytest.approx(0.210, abs=5e-4)


def test_per_rater_gold_accuracy_and_agreement_with_consensus():
    votes = {1: ["A", "A", "B"], 2: ["B", "B", "B"], 3: ["A", "cannot_judge", "A"]}
    judgements = [judgement(t, u, c) for t, cs in votes.items() for u, c in enumerate(cs)]
    stats = agreement(
        judgements, {0: "ann", 1: "bob", 2: "cat"}, gold={2: "B", 3: "B"}, consensus={1: "A", 2: "B", 3: "A"}
    )
    assert stats["per_rater"]["ann"]["gold_accuracy"] == 0.5 and stats["per_rater"]["ann"]["gold_items"] == 2
    assert stats["per_rater"]["bob"]["gold_items"] == 1  # "cannot judge" is not a wrong answer
    assert stats["per_rater"]["cat"]["vs_consensus"] == pytest.approx(2 / 3)
    assert stats["fleiss_kappa"] is not None and stats["ac1_choice"] is not None


def test_decide_and_the_kto_and_sft_tables():
    from clinalign.preferences import decide
    from clinalign.preferences.export import Decided, tables
    from clinalign.store import Candidate, Prompt, Task

    assert decide(["good", "good", "bad"], 2) == ("good", pytest.approx(1 / 3))
    assert decide(["both_unacceptable", "both_unacceptable", "A"], 2)[0] == "both_unacceptable"
    prompt = Prompt(id=1, text="Call Jane Doe on 555-123-4567?", split="train", risk="urgent")
    cands = {1: Candidate(id=1, text="good answer"), 2: Candidate(id=2, text="bad answer")}
    pair = Task(id=1, prompt_id=1, candidate_a_id=1, candidate_b_id=2)
    both_bad = Task(id=2, prompt_id=1, candidate_a_id=1, candidate_b_id=2)
    single = Task(id=3, prompt_id=1, candidate_a_id=2, candidate_b_id=None)
    decided = [
        Decided(pair, "B", 0.2, False),
        Decided(both_bad, "both_unacceptable", 1.0, False),
        Decided(single, "bad", 1, False),
    ]
    rewrite = Judgement(
        id=9,
        task_id=1,
        user_id=1,
        choice="B",
        ratings_a=R,
        ratings_b=R,
        tags_a=[],
        tags_b=[],
        rationale="",
        rewrite="Better: call 555-987-6543 now.",
    )
    rows = tables(
        decided, {t.id: t for t in (pair, both_bad, single)}, [rewrite], {1: prompt}, cands, {1: "dr.a"}, "c1"
    )
    assert rows["pairs_standard"] == [
        {
            "prompt": rows["pairs_standard"][0]["prompt"],
            "chosen": "bad answer",
            "rejected": "good answer",
            "margin": 0.2,
            "task_id": 1,
            "prompt_id": 1,
            "split": "train",
            "risk": "urgent",
            "source": "clinicians",
        }
    ]
    assert "555-123-4567" not in rows["pairs_standard"][0]["prompt"]  # residual PHI scan on the way out
    assert [(r["completion"], r["label"]) for r in rows["kto"]] == [
        ("bad answer", True),
        ("good answer", False),
        ("good answer", False),
        ("bad answer", False),
        ("bad answer", False),
    ]
    assert rows["sft_rewrites"][0]["messages"][1]["role"] == "assistant"
    assert "555-987-6543" not in rows["sft_rewrites"][0]["messages"][1]["content"]
    assert rows["judgements"][0]["a_consensus"] == 3 and rows["judgements"][0]["rater"] == "dr.a"


def test_figures_that_cannot_be_computed_yet_are_none_not_a_crash():
    one_each = [judgement(t, t % 3, "A" if t % 2 else "B") for t in range(6)]  # overlap 1: no item judged twice
    stats = agreement(one_each)
    assert stats["alpha_choice"] is None and stats["fleiss_kappa"] is None and stats["ac1_choice"] is None
    assert all(v is None for v in stats["alpha_axes"].values()) and stats["pairwise_agreement"] is None
    same_value = [judgement(1, 0, "A"), judgement(1, 1, "A"), judgement(2, 0, "B")]  # pairable, one value
    assert agreement(same_value)["alpha_choice"] is None


def _campaign(store, tmp_path, **settings):
    from clinalign.stages import run_stage
    from tests.web.seed import seed

    candidates = seed(store, tmp_path, prompts=4)
    settings = {"name": "c", "candidates": candidates, **settings}
    made = run_stage("annotate.campaign", store, tmp_path, settings, actor="expert1")
    return made.metrics["campaign"]


def _judge(store, campaign_id: int, username: str, choice: str) -> int | None:
    """One item judged by ``username`` through the queue (``"gold"``: a calibration item's expected
    answer, else ``choice``); its task id, None when nothing is left."""
    from sqlalchemy import select

    from clinalign.annotate import queue
    from clinalign.schemas import JudgementIn
    from clinalign.store import Assignment, Campaign, Task, User

    with store.reading() as session:
        campaign = session.get(Campaign, campaign_id)
        user = session.scalar(select(User).where(User.username == username))
    assignment = queue.claim_next(store, campaign, user)
    if assignment is None:
        return None
    with store.session() as session:
        expected = session.get(Task, assignment.task_id).gold
        shown = expected if choice == "gold" and expected else "A" if choice == "gold" else choice
        judgement = JudgementIn(choice=shown, ratings_a=R, ratings_b=R)
        queue.submit(session, session.get(Assignment, assignment.id), user, judgement, campaign)
    return assignment.task_id


def test_overlap_one_gives_stats_and_an_export_before_any_figure_exists(store, tmp_path):
    from clinalign import preferences
    from clinalign.stages import run_stage

    campaign = _campaign(store, tmp_path, overlap=1)
    for _ in range(3):
        _judge(store, campaign, "clin1", "A")
    with store.reading() as session:
        figures = preferences.stats(session, preferences.Config(campaign="c"))
    assert figures["judgements"] == 3 and figures["alpha_choice"] is None
    exported = run_stage("preferences", store, tmp_path, {"campaign": "c", "min_votes": 1}).metrics
    assert exported["judgements"] == 3 and exported["train_pairs"] + exported["test_pairs"] == 3


def test_only_disputed_items_can_be_adjudicated(store, tmp_path):
    from sqlalchemy import select

    from clinalign import preferences
    from clinalign.schemas import ClinalignError
    from clinalign.store import Adjudication, Campaign, Task, User

    campaign = _campaign(store, tmp_path, overlap=3, gold=1)
    with store.reading() as session:
        reviewer = session.scalar(select(User).where(User.username == "review1"))
        tasks = list(session.scalars(select(Task).where(Task.campaign_id == campaign).order_by(Task.id)))
        untouched = next(t.id for t in tasks if t.gold is None)

    def refused(task_id: int, why: str) -> None:
        with pytest.raises(ClinalignError, match=why), store.session() as session:
            preferences.adjudicate(session, task_id, reviewer, "A", "a reason")

    refused(untouched, "not disputed")  # nobody has judged it yet
    votes = {"clin1": "A", "clin2": "tie", "clin3": "both_unacceptable"}  # every item split three ways
    for name, choice in votes.items():
        while _judge(store, campaign, name, "gold" if choice == "A" else choice) is not None:
            pass
    with store.reading() as session:
        gold = session.scalar(select(Task.id).where(Task.campaign_id == campaign, Task.gold.is_not(None)))
        queue = [t.id for t, _ in preferences.disputed(session, session.get(Campaign, campaign))]
    assert gold not in queue and len(queue) == len(tasks) - 1  # calibration items never reach a reviewer
    refused(gold, "calibration item")
    with store.session() as session:
        preferences.adjudicate(session, queue[0], reviewer, "A", "A escalates")
    refused(queue[0], "already adjudicated")
    with store.reading() as session:
        assert session.scalar(select(Adjudication.task_id)) == queue[0]


def test_a_unanimous_item_is_not_adjudicated(store, tmp_path):
    from sqlalchemy import select

    from clinalign import preferences
    from clinalign.schemas import ClinalignError
    from clinalign.store import User

    campaign = _campaign(store, tmp_path, overlap=2)
    task = _judge(store, campaign, "clin1", "tie")  # a tie reads the same whichever side each was shown
    _judge(store, campaign, "clin2", "tie")  # the queue gives clin2 the item closest to its overlap: the same one
    with store.reading() as session:
        reviewer = session.scalar(select(User).where(User.username == "review1"))
    with pytest.raises(ClinalignError, match="not disputed"), store.session() as session:
        preferences.adjudicate(session, task, reviewer, "B", "overrule")
