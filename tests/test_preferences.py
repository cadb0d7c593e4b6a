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
    from clinalign.audit import latest_artifact

    with loop_store.session() as session:
        art = latest_artifact(session, "preference_dataset")
    rows = [json.loads(line) for line in (loop / "artifacts" / str(art.run_id) / "preferences" / "train.jsonl").open()]
    assert len(rows) == art.meta["train_pairs"] > 0
    row = rows[0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["rejected"][0]["role"] == "assistant" and 0 < row["margin"] <= 1
    assert art.meta["agreement"]["alpha_choice"] is not None
    assert set(art.meta["agreement"]["per_rater"]) <= {f"sim-rater-{i}" for i in range(1, 6)}
