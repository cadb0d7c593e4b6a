"""Reward-hacking alerts: a reward rising with a runaway KL or ballooning answers, and a reward model
whose favourite answers break the rules; a run told to stop on an alert saves nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from clinalign import stages
from clinalign.schemas import ClinalignError
from clinalign.store import Artifact, Store
from clinalign.train.monitor import Monitor, MonitorSettings, disagreement


def test_alerts_fire_only_when_the_reward_rises_with_a_runaway():
    monitor = Monitor(MonitorSettings(max_kl=10.0, max_length_growth=2.0, max_disagreement=0.5))
    assert monitor.check({"score": 0.0, "kl": 0.0, "length": 20.0}) == []
    assert monitor.check({"score": 0.5, "kl": 5.0, "length": 30.0}) == []  # learning, within bounds
    found = monitor.check({"score": 0.9, "kl": 12.0, "length": 45.0})
    assert len(found) == 2 and "KL 12.0 > 10.0" in found[0] and "length 45" in found[1]
    assert monitor.check({"score": -0.5, "kl": 50.0, "length": 90.0}) == []  # falling reward: not gaming it
    split = monitor.check({"score": -1.0, "rm_rules_disagreement": 0.75})
    assert len(split) == 1 and "disagree" in split[0]


def test_disagreement_is_the_share_of_the_models_favourites_the_rules_penalise():
    assert disagreement([0.9, 0.8, 0.1, 0.0], [-1.0, 0.0, 0.0, -1.0]) == 0.5
    assert disagreement([0.9, 0.8, 0.1, 0.0], [0.0, 0.0, -1.0, -1.0]) == 0.0
    assert disagreement([0.3], [0.0]) is None


@pytest.mark.parametrize("stage", ["train.ppo", "train.grpo"])
def test_a_run_told_to_stop_on_an_alert_stops_and_saves_nothing(loop: Path, tmp_path: Path, stage, monkeypatch):
    target = tmp_path / "loop"
    shutil.copytree(loop, target)
    store = Store.open(f"sqlite:///{target / 'clinalign.db'}")
    with store.session() as session:
        models = session.scalar(select(func.count()).where(Artifact.kind == "model"))
    # Whether a tiny random policy's reward rises within a few steps is chance: the alert is forced here
    # (when it fires is the test above); what is tested is that the run stops on it and saves nothing.
    monkeypatch.setattr(Monitor, "check", lambda self, record, **keys: ["reward up while KL 9.9 > 1.0 (forced)"])
    if stage == "train.ppo":
        settings = {"steps": 4, "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8}
    else:
        settings = {
            "trl": {"max_steps": 4, "num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 8}
        }
    with pytest.raises(ClinalignError, match=r"reward up while KL 9\.9 > 1\.0 \(forced\); stopped at step 1;"):
        stages.run_stage(stage, store, target, {**settings, "lora": {"layers": None}, "monitor": {"stop": True}})
    with store.session() as session:
        assert session.scalar(select(func.count()).where(Artifact.kind == "model")) == models
