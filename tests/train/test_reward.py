"""The multi-axis clinical reward model: heads that learn their axes, a safety gate, an ensemble whose
spread means something, calibration, length kept out, and the loop's own model above chance."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from clinalign import embed, reward_model
from clinalign.schemas import AXES
from clinalign.train import reward
from tests.conftest import newest

SAFE = "Call 911 now and do not drive yourself: this can be a heart attack."
UNSAFE = ["Rest at home and see how you feel tomorrow.", "It is probably indigestion; try an antacid."]
QUESTIONS = [
    f"{who} has crushing chest pain {when}. What should {pronoun} do?"
    for who, pronoun in (("My father", "he"), ("I", "I"), ("My neighbour", "she"), ("A colleague", "they"))
    for when in ("for 20 minutes", "since lunch", "with sweating", "spreading to the left arm", "and feels faint")
]


def _items(length_bias: bool = False, seed: int = 0) -> list[dict]:
    """Items whose consensus prefers the escalating answer; with ``length_bias``, whichever answer is
    longer also wins where both are unsafe (the judges' taste for length, which must not be learned)."""
    rng = random.Random(seed)
    rows = []
    for i, question in enumerate(QUESTIONS * 3):
        split = "test" if i % 4 == 0 else "train"
        if length_bias and i % 2:
            short, long = UNSAFE[0], UNSAFE[1] + " Drink water, keep warm and rest for the rest of the day too."
            a, b = (long, short) if rng.random() < 0.5 else (short, long)
            choice = "A" if a == long else "B"
            ratings = dict.fromkeys(AXES, 2.0), dict.fromkeys(AXES, 2.0)
        else:
            safe_first = rng.random() < 0.5
            a, b = (SAFE, rng.choice(UNSAFE)) if safe_first else (rng.choice(UNSAFE), SAFE)
            choice = "A" if safe_first else "B"
            good = {**dict.fromkeys(AXES, 4.5), "empathy": 2.0}  # safe but curt
            bad = {**dict.fromkeys(AXES, 1.5), "empathy": 4.5}  # kind but unsafe
            ratings = (good, bad) if safe_first else (bad, good)
        row = {"task_id": i, "split": split, "prompt": question, "answer_a": a, "answer_b": b}
        row.update(consensus=choice, margin=0.5)
        for axis in AXES:
            row[f"a_{axis}"], row[f"b_{axis}"] = ratings[0][axis], ratings[1][axis]
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def encoder() -> str:
    return embed.default_path()


def _trained(rows, encoder, **settings):
    config = reward.Config(members=3, steps=150, **settings)
    data = reward._Data(rows, encoder)
    net, drawn = reward._train(data, config)
    return data, config, net, reward._temperature(net, data, config, drawn)


def test_heads_learn_their_axes_and_safety_gates_the_aggregate(encoder):
    rows = _items()
    data, config, net, temperature = _trained(rows, encoder)
    figures = reward._figures(net, data, config, temperature, [], {})
    assert figures["test_accuracy"] == 1.0 and figures["test_pairs"] == 15
    assert figures["axis_accuracy"]["harm_extent"]["accuracy"] == 1.0
    assert figures["axis_accuracy"]["empathy"]["accuracy"] == 1.0  # the unsafe answer was the kinder one
    with torch.no_grad():
        axes = net(data.x).mean(0)
    empathy = AXES.index("empathy")
    kind_and_unsafe = [2 * i + (r["consensus"] == "A") for i, r in enumerate(rows)]  # the rejected answers
    assert (axes[kind_and_unsafe, empathy] > 0.5).all()  # the empathy head saw their kindness ...
    # ... and the aggregate still ranks them below the curt safe ones: safety is a gate, not a weight.
    total = reward_model.aggregate(axes, list(AXES), config.safety_axes, config.weights, config.tau)
    assert (total[[2 * i + (r["consensus"] == "B") for i, r in enumerate(rows)]] > total[kind_and_unsafe]).all()


def test_the_gate_cannot_be_bought_back_by_other_axes():
    axes, safety, weights = list(AXES), ["harm_extent", "harm_likelihood"], {"empathy": 1.0}
    harmful = torch.tensor([[-1.0 if a in safety else 1.0 for a in axes]])  # harmful, perfect elsewhere
    plain = torch.tensor([[0.3 if a in safety else -0.2 for a in axes]])  # safe, mediocre
    gated = reward_model.aggregate(torch.cat([harmful, plain]), axes, safety, weights, 0.1)
    assert gated[0] < gated[1] and gated[0] < -0.9  # no amount of quality lifts a harmful answer


def test_calibration_figures_and_the_temperature_fit():
    p = np.array([0.9, 0.9, 0.1, 0.1, 0.6])
    y = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    found = reward._calibration(p, y, bins=10)
    assert found["brier"] == pytest.approx((0.01 * 4 + 0.36) / 5)
    assert found["ece"] == pytest.approx((4 * 0.1 + 0.6) / 5)
    # Gaps drawn so that P(chosen first) = sigmoid(gap / 2): the fit finds a temperature near 2.
    rng = np.random.default_rng(0)
    gap = rng.normal(0, 3, 20000)
    agree = rng.random(20000) < 1 / (1 + np.exp(-gap / 2.0))
    grid = np.exp(np.linspace(np.log(0.01), np.log(100.0), 400))
    nll = [np.logaddexp(0.0, -np.where(agree, gap, -gap) / t).mean() for t in grid]
    assert 1.8 < grid[int(np.argmin(nll))] < 2.2


def test_the_length_penalty_keeps_length_out_of_the_reward(encoder):
    rows = _items(length_bias=True)
    found = {}
    for penalty in (0.0, 5.0):
        data, config, net, temperature = _trained(rows, encoder, length_penalty=penalty)
        found[penalty] = reward._figures(net, data, config, temperature, [], {})["length_correlation"]
    assert abs(found[5.0]) < abs(found[0.0]), found


def test_the_ensemble_disagrees_where_the_judges_did(encoder):
    """Where the panel's choices contradict each other the bootstrap members learn different things:
    their spread is wider there than where the panel was consistent."""
    rows = _items()
    for row in rows:  # the questions about a neighbour or a colleague: every other pair's label is flipped
        if row["prompt"].startswith(("My neighbour", "A colleague")) and row["task_id"] % 2:
            row["consensus"] = {"A": "B", "B": "A"}[row["consensus"]]
    data, config, net, _ = _trained(rows, encoder)
    with torch.no_grad():
        members = reward_model.aggregate(net(data.x), list(AXES), config.safety_axes, config.weights, config.tau)
    gap_spread = (members[:, 0::2] - members[:, 1::2]).std(0)
    contested = torch.tensor([r["prompt"].startswith(("My neighbour", "A colleague")) for r in rows])
    assert gap_spread[contested].mean() > gap_spread[~contested].mean()


def test_the_loop_s_reward_model_agrees_with_the_panel_above_chance(loop_store):
    with loop_store.session() as session:
        model = newest(session, "reward_model")
        dataset = newest(session, "preference_dataset")
    rows = [json.loads(line) for line in (Path(dataset.uri) / "train.jsonl").open()]
    scorer = reward_model.load(model.uri)
    prompts = [r["prompt"][0]["content"] for r in rows]
    chosen = scorer.score(list(zip(prompts, [r["chosen"][0]["content"] for r in rows], strict=True)))
    rejected = scorer.score(list(zip(prompts, [r["rejected"][0]["content"] for r in rows], strict=True)))
    accuracy = float((chosen.aggregate > rejected.aggregate).mean())
    assert accuracy > 0.6, accuracy  # chance is 0.5 (these are its training pairs: a floor, not a claim)
    assert set(chosen.axes) == set(AXES) and chosen.spread.shape == chosen.aggregate.shape
    p = scorer.preference(chosen.aggregate, rejected.aggregate)
    assert ((p > 0) & (p < 1)).all()
    meta = model.meta
    assert 0.0 <= meta["test_accuracy"] <= 1.0 and meta["test_pairs"] > 0 and meta["members"] == 3
    assert set(meta["axis_accuracy"]) == set(AXES) and meta["per_clinician"]
    assert 0.0 <= meta["calibration"]["ece"] <= 1.0 and -1.0 <= meta["length_correlation"] <= 1.0
    assert reward_model.load(model.uri).score([]).aggregate.size == 0
