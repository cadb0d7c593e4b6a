"""DPO with LoRA: the implicit reward margin moves the right way, and the merged policy loads."""

import math

from sqlalchemy import select

from clinalign import lm
from clinalign.store import Artifact, Run


def test_the_implicit_reward_margin_grows(loop_store, loop):
    import json

    with loop_store.session() as session:
        run = session.scalar(select(Run).where(Run.stage == "train.dpo"))
        art = session.scalar(select(Artifact).where(Artifact.run_id == run.id, Artifact.kind == "model"))
    history = json.loads((loop / "artifacts" / str(run.id) / "adapter" / "log_history.json").read_text())
    margins = [e["rewards/margins"] for e in history if "rewards/margins" in e and "eval_loss" not in e]
    assert margins[0] == 0.0  # policy == reference at the first step
    late = margins[len(margins) // 2 :]
    assert sum(late) / len(late) > 0.01, late
    losses = [e["loss"] for e in history if "loss" in e]
    late_losses = losses[len(losses) // 2 :]
    assert sum(late_losses) / len(late_losses) < math.log(2)  # the loss of a policy equal to its reference
    assert art.meta["algo"] == "dpo" and (loop / "artifacts" / str(run.id) / "adapter" / "adapter_config.json").exists()
    lm.load(art.uri)  # the merged policy is a plain model folder
