"""The PPO stage under ``accelerate launch`` on two CPU processes (gloo), as it runs on several GPUs: the
processes share the work, the main one alone records, so the store holds one run and one policy."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from clinalign import lm
from clinalign.store import Artifact, AuditPending, Run, Store


def test_ppo_on_two_processes_records_one_run_and_one_policy(loop: Path, tmp_path: Path):
    target = tmp_path / "loop"
    shutil.copytree(loop, target)
    launch = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "cpu_2proc.yaml"  # the shipped one
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch)),
        *("--main_process_port", "29517", str(Path(sys.executable).parent / "clinalign")),
        *("train", "ppo", "--set", "steps=2", "--set", "batch_size=4", "--set", "minibatch_size=2"),
        *("--set", "max_new_tokens=6", "--set", "save_every=1", "--set", "lora.layers=null"),
    ]
    env = {**os.environ, "CLINALIGN_DATA_DIR": str(target), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    store = Store.open(f"sqlite:///{target / 'clinalign.db'}")
    with store.session() as session:
        runs = list(session.scalars(select(Run).where(Run.stage == "train.ppo")))
        assert [r.status for r in runs] == ["succeeded"]
        models = list(session.scalars(select(Artifact).where(Artifact.run_id == runs[0].id)))
        starts = session.scalars(select(AuditPending.action).where(AuditPending.action == "run.start")).all()
    assert [m.kind for m in models] == ["model"]
    assert runs[0].metrics["processes"] == 2
    curve = runs[0].metrics["curve"]
    assert [h["step"] for h in curve] == [1, 2]
    assert all(math.isfinite(h["kl"]) and math.isfinite(h["score"]) for h in curve)
    assert (target / "artifacts" / str(runs[0].id) / "checkpoints" / "step-1" / "COMPLETE").is_file()
    assert not starts  # every event was sealed by the one recording process
    lm.load(models[0].uri)
