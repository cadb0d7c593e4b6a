"""Reward model: it learned the panel's preferences."""

import json
from pathlib import Path

from clinalign.lm import reward_scores
from tests.conftest import newest


def test_the_reward_model_agrees_with_the_panel_majority_above_chance(loop_store):
    with loop_store.session() as session:
        reward = newest(session, "reward_model")
        dataset = newest(session, "preference_dataset")
    rows = [json.loads(line) for line in (Path(dataset.uri) / "train.jsonl").open()]
    prompts = [r["prompt"][0]["content"] for r in rows]
    chosen = reward_scores(reward.uri, list(zip(prompts, [r["chosen"][0]["content"] for r in rows], strict=True)))
    rejected = reward_scores(reward.uri, list(zip(prompts, [r["rejected"][0]["content"] for r in rows], strict=True)))
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
    assert accuracy > 0.6, accuracy  # chance is 0.5
    assert 0.0 <= reward.meta["test_accuracy"] <= 1.0 and reward.meta["test_pairs"] > 0
