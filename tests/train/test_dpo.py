"""DPO with an SFT term and LoRA: the implicit reward margin grows, the chosen answers grow likelier,
and the merged policy loads."""

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
    assert abs(margins[0]) < 1e-4  # policy == reference at the first step
    late = margins[len(margins) // 2 :]
    assert sum(late) / len(late) > 0.01, late
    # The SFT term at work: the chosen answers end up likelier under the policy than under the reference.
    # rewards/chosen is that log-ratio per example (times beta), paired, so batch lengths cancel out.
    chosen = [e["rewards/chosen"] for e in history if "rewards/chosen" in e and "eval_loss" not in e]
    late_chosen = chosen[len(chosen) // 2 :]
    assert sum(late_chosen) / len(late_chosen) > 0.02, late_chosen
    assert art.meta["algo"] == "dpo" and (loop / "artifacts" / str(run.id) / "adapter" / "adapter_config.json").exists()
    lm.load(art.uri)  # the merged policy is a plain model folder
