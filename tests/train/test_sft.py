"""SFT: the policy learns the reference answers (loss falls) and answers through its chat template."""

import pytest
import torch
from sqlalchemy import select

from clinalign import lm
from clinalign.schemas import ClinalignError
from clinalign.store import Artifact, Run
from clinalign.train import common


def test_loss_falls_and_the_model_answers(loop_store):
    with loop_store.session() as session:
        run = session.scalar(select(Run).where(Run.stage == "train.sft"))
        art = session.scalar(select(Artifact).where(Artifact.run_id == run.id, Artifact.kind == "model"))
    assert run.metrics["final_loss"] < 0.8 * run.metrics["first_loss"]  # the tiny model starts from ~ln(vocab)
    assert not art.meta["lora"] and art.sha256 and art.meta["examples"] > 100
    loaded = lm.load(art.uri)
    answers = lm.sample(loaded, ["I have a fever and a stiff neck. What should I do?"], 2, 16, 1.0, 0.95, seed=0)
    assert len(answers[0]) == 2 and all(isinstance(a, str) for a in answers[0])
    assert "<|assistant|>" in loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


def test_trl_overrides_reach_trl_and_unknown_ones_are_named(tmp_path):
    from trl import SFTConfig

    args = common.trl_config(SFTConfig, tmp_path, {"num_train_epochs": 5}, {"num_train_epochs": 1})
    assert args.num_train_epochs == 1 and args.report_to == []
    # on a CPU: no gradient checkpointing, bf16 only where the CPU computes it natively; the user decides last
    assert not args.gradient_checkpointing and not args.activation_checkpointing
    assert args.bf16 == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    forced = common.trl_config(SFTConfig, tmp_path, {}, {"bf16": False, "gradient_checkpointing": True})
    assert not forced.bf16 and forced.gradient_checkpointing and forced.activation_checkpointing
    with pytest.raises(ClinalignError, match="trl.num_epochs is not a field of TRL's SFTConfig"):
        common.trl_config(SFTConfig, tmp_path, {}, {"num_epochs": 1})
