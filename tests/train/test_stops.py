"""Bad input to the RL trainers ends in a clear error or a clean stop, with the last good checkpoint kept
and no model saved: a reward service that is down or turns slow (and a re-run once it is back continues
from the checkpoint), a KL that diverges (PPO and GRPO), and a ``--resume-from`` folder that is missing
or was never finished."""

from __future__ import annotations

import json
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from clinalign import stages
from clinalign.schemas import AXES, ClinalignError
from clinalign.store import Artifact, Run, Store
from tests.live_server import JsonHandler

PPO = {"steps": 4, "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 6, "save_every": 1, "lora": {"layers": None}}


class _Service:
    """A stand-in for `clinalign reward serve` on a free loopback port: answers /health, and /score with
    a score per answer; after ``healthy`` scoring calls it takes ``delay`` seconds to answer."""

    def __init__(self, healthy: int = 10**6, delay: float = 0.0):
        self.healthy, self.delay, self.calls = healthy, delay, 0
        service = self

        class Handler(JsonHandler):
            def do_GET(self):
                self._json({"status": "ok", "axes": list(AXES)})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.calls += 1
                if service.calls > service.healthy:
                    time.sleep(service.delay)
                scores = [len(a) / 10.0 for a in body["answers"]]
                self._json({"aggregate": scores, **{axis: scores for axis in AXES}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _runs(store: Store, stage: str) -> list[Run]:
    with store.session() as session:
        return list(session.scalars(select(Run).where(Run.stage == stage).order_by(Run.id)))


def _models(store: Store, run_id: int) -> list[Artifact]:
    with store.session() as session:
        return list(session.scalars(select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == "model")))


def test_a_reward_service_that_is_down_is_one_clear_error(loop_copy):
    store, target = loop_copy
    with pytest.raises(ClinalignError, match=r"reward_url: reward service http://127\.0\.0\.1:9/health unreachable"):
        stages.run_stage("train.ppo", store, target, {**PPO, "reward_url": "http://127.0.0.1:9"})
    assert _runs(store, "train.ppo")[-1].status == "failed"


def test_a_reward_service_that_turns_slow_stops_the_run_and_a_re_run_continues(loop_copy):
    store, target = loop_copy
    service = _Service(healthy=2, delay=2.0)  # steps 1 and 2 are scored; step 3's call times out
    settings = {**PPO, "reward_url": service.url, "reward_timeout": 0.5, "reward_retries": 1}
    try:
        with pytest.raises(ClinalignError, match=r"timed out.*2 tries.*stopped at step 3.*step-2 kept"):
            stages.run_stage("train.ppo", store, target, settings)
        failed = _runs(store, "train.ppo")[-1]
        assert failed.status == "failed" and not _models(store, failed.id)
        assert service.calls == 4  # two good steps, then the call and its one retry

        service.healthy = 10**6  # the service is back: the same config continues from step 2
        result = stages.run_stage("train.ppo", store, target, settings)
    finally:
        service.close()
    assert result.metrics["resumed_from_step"] == 2 and len(result.metrics["curve"]) == 4
    assert result.metrics["reward_service"]["url"] == service.url
    assert len(_models(store, result.run_id)) == 1


def test_a_diverging_kl_stops_ppo_with_its_last_checkpoint_kept(loop_copy):
    store, target = loop_copy
    # At step 1 the policy is its reference (the LoRA update starts at zero): KL 0. A later step's KL
    # estimate (sampled, so it may come out below 0) soon passes a limit of 1e-9.
    with pytest.raises(ClinalignError, match=r"KL to the reference diverged.*stopped at step (\d)") as stop:
        stages.run_stage("train.ppo", store, target, {**PPO, "monitor": {"kl_limit": 1e-9}})
    step = int(str(stop.value).split("stopped at step ")[1][0])
    assert step >= 2 and f"step-{step - 1} kept" in str(stop.value)
    failed = _runs(store, "train.ppo")[-1]
    assert failed.status == "failed" and not _models(store, failed.id)
    checkpoints = target / "artifacts" / str(failed.id) / "checkpoints"
    assert (checkpoints / f"step-{step - 1}" / "COMPLETE").is_file() and not (checkpoints / f"step-{step}").exists()


def test_a_diverging_kl_stops_grpo_without_saving_the_diverged_state(loop_copy):
    store, target = loop_copy
    settings = {
        "trl": {"max_steps": 3, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 6},
        "save_every": 1,
        "monitor": {"kl_limit": 1e-9},
        "lora": {"layers": None},
    }
    with pytest.raises(ClinalignError, match=r"grpo: step (\d): the KL to the reference diverged.*stopped at step"):
        stages.run_stage("train.grpo", store, target, settings)
    failed = _runs(store, "train.grpo")[-1]
    assert failed.status == "failed" and not _models(store, failed.id)
    saved = sorted(p.parent.name for p in (target / "artifacts" / str(failed.id)).glob("checkpoints/*/COMPLETE"))
    stopped_at = int(failed.error.split("grpo: step ")[1].split(":")[0])
    assert f"checkpoint-{stopped_at}" not in saved


def test_resume_from_a_missing_or_unfinished_folder_is_refused(loop_copy, tmp_path: Path):
    store, target = loop_copy
    with pytest.raises(ClinalignError, match="no such checkpoint folder"):
        stages.run_stage("train.ppo", store, target, PPO, resume_from=tmp_path / "nowhere")
    half = tmp_path / "step-3"
    half.mkdir()
    (half / "state.pt").write_bytes(b"cut short")
    with pytest.raises(ClinalignError, match="not a complete checkpoint"):
        stages.run_stage("train.ppo", store, target, PPO, resume_from=half)
