"""A training run killed with kill -9 (PPO, written here; SFT, through TRL's trainer) continues from its
last checkpoint when re-run with the same config, and ends where an uninterrupted run with the same
seed ends (to float precision); a half-written checkpoint is never taken."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import select

from clinalign import stages
from clinalign.store import Artifact, Run, Store

SETTINGS = {
    "steps": 8,
    "batch_size": 4,
    "minibatch_size": 2,
    "max_new_tokens": 8,
    "save_every": 1,
    "lora": {"layers": None},
}


def _copy(loop: Path, target: Path) -> Store:
    shutil.copytree(loop, target)
    return Store.open(f"sqlite:///{target / 'clinalign.db'}")


def _policy(store: Store, run_id: int) -> tuple[list[dict], dict]:
    with store.session() as session:
        art = session.scalar(select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == "model"))
    folder = Path(art.uri)
    history = json.loads((folder / "log_history.json").read_text())
    weights = {}
    for shard in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(shard)))
    return history, weights


def _child(target: Path, stage: str = "train.ppo", settings: dict = SETTINGS) -> subprocess.Popen:
    """The stage in a process of its own, as `clinalign train ppo` would run it: every run of this test
    runs so, so that all of them compute alike (same threads, same start)."""
    script = (
        "from pathlib import Path; from clinalign import stages; from clinalign.store import Store; "
        f"store = Store.open('sqlite:///{target / 'clinalign.db'}'); "
        f"stages.run_stage({stage!r}, store, Path('{target}'), {settings!r})"
    )
    return subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _succeeded(store: Store) -> Run:
    with store.session() as session:
        return session.scalar(select(Run).where(Run.stage == "train.ppo", Run.status == "succeeded"))


def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(loop: Path, tmp_path: Path):
    whole = _copy(loop, tmp_path / "whole")
    assert _child(tmp_path / "whole").wait() == 0
    expected_history, expected_weights = _policy(whole, _succeeded(whole).id)

    target = tmp_path / "killed"
    store = _copy(loop, target)
    child = _child(target)
    deadline = time.monotonic() + 600
    found = []
    while not found and child.poll() is None and time.monotonic() < deadline:
        found = list(target.glob("artifacts/*/checkpoints/step-3/COMPLETE"))
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert found, "the run ended before it could be killed mid-way"
    with store.session() as session:
        killed = session.scalar(select(Run).where(Run.stage == "train.ppo"))
    assert killed.status == "running"  # killed: it never recorded an end

    assert _child(target).wait() == 0  # the same command again
    resumed = _succeeded(store)
    assert resumed.id != killed.id and resumed.metrics["resumed_from_step"] >= 3
    history, weights = _policy(store, resumed.id)
    # Equal to float precision: the resumed process re-embeds texts the reward model had cached, in
    # batches of another make-up (padding moves the last bits of a score).
    assert [h["step"] for h in history] == [h["step"] for h in expected_history]
    for got, want in zip(history, expected_history, strict=True):
        numbers = [k for k, v in want.items() if isinstance(v, float)]
        assert [got[k] for k in numbers] == pytest.approx([want[k] for k in numbers], rel=1e-4, abs=1e-5), got["step"]
    assert weights.keys() == expected_weights.keys()
    assert all(torch.allclose(weights[k], expected_weights[k], atol=1e-5) for k in weights)


def test_a_half_written_checkpoint_is_not_resumed_from(loop: Path, tmp_path: Path):
    store = _copy(loop, tmp_path / "half")
    first = stages.run_stage("train.ppo", store, tmp_path / "half", {**SETTINGS, "steps": 3}).run_id
    with store.session() as session:  # pretend the first run died writing a checkpoint
        session.get(Run, first).status = "running"
    half = tmp_path / "half" / "artifacts" / str(first) / "checkpoints" / "step-9"
    half.mkdir(parents=True)
    (half / "state.pt").write_bytes(b"truncated")  # no COMPLETE marker: never taken
    result = stages.run_stage("train.ppo", store, tmp_path / "half", {**SETTINGS, "steps": 3})
    assert result.metrics["resumed_from_step"] == 2  # the last complete one


SFT = {"lora": None, "save_every": 3, "trl": {"max_steps": 12, "per_device_train_batch_size": 4, "learning_rate": 3e-3}}


def test_a_killed_trl_run_resumes_from_its_checkpoint(loop: Path, tmp_path: Path, tiny_model: Path):
    settings = {**SFT, "base": str(tiny_model)}

    def newest_sft(store: Store) -> Run:
        with store.session() as session:
            return session.scalar(select(Run).where(Run.stage == "train.sft").order_by(Run.id.desc()))

    whole = _copy(loop, tmp_path / "whole")
    assert _child(tmp_path / "whole", "train.sft", settings).wait() == 0
    expected = newest_sft(whole)
    target = tmp_path / "killed"
    store = _copy(loop, target)
    old = set(target.glob("artifacts/*/checkpoints/checkpoint-6/COMPLETE"))
    child = _child(target, "train.sft", settings)
    found = set()
    deadline = time.monotonic() + 600
    while not found and child.poll() is None and time.monotonic() < deadline:
        found = set(target.glob("artifacts/*/checkpoints/checkpoint-6/COMPLETE")) - old
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert found, "the run ended before it could be killed mid-way"
    assert _child(target, "train.sft", settings).wait() == 0  # the same command again
    resumed = newest_sft(store)
    assert resumed.status == "succeeded" and resumed.metrics["resumed_from_step"] >= 6
    got = [p["loss"] for p in resumed.metrics["loss_curve"]]
    want = [p["loss"] for p in expected.metrics["loss_curve"]]
    assert len(got) == len(want) == 12 and got == pytest.approx(want, rel=1e-4)


def test_a_reward_model_run_cut_short_resumes_without_embedding_again(loop: Path, tmp_path: Path, monkeypatch):
    from clinalign import reward_model
    from clinalign.train import reward

    settings = {"steps": 40, "save_every": 10, "members": 2}
    whole = _copy(loop, tmp_path / "whole")
    expected = stages.run_stage("train.reward", whole, tmp_path / "whole", settings)

    target = tmp_path / "cut"
    store = _copy(loop, target)
    write = reward.common.write_checkpoint

    def write_then_die(folder: Path, state: dict) -> None:
        write(folder, state)
        if folder.name == "step-20":
            raise OSError("machine lost")  # the run dies right after a checkpoint

    monkeypatch.setattr(reward.common, "write_checkpoint", write_then_die)
    with pytest.raises(OSError, match="machine lost"):
        stages.run_stage("train.reward", store, target, settings)
    monkeypatch.setattr(reward.common, "write_checkpoint", write)
    monkeypatch.setattr(reward_model, "features", lambda *a, **k: pytest.fail("embedded again"))
    resumed = stages.run_stage("train.reward", store, target, settings)

    assert resumed.metrics["resumed_from_step"] == 20
    with whole.session() as a, store.session() as b:
        folders = [
            Path(s.scalar(select(Artifact.uri).where(Artifact.run_id == r.run_id, Artifact.kind == "reward_model")))
            for s, r in ((a, expected), (b, resumed))
        ]
    got, want = (load_file(str(f / reward_model.WEIGHTS)) for f in folders)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert resumed.metrics["test_accuracy"] == expected.metrics["test_accuracy"]
