"""GRPO and RLOO through TRL on the clinical reward callables and the rules: every function logged, a
merged policy saved; beta 0, unknown functions and a missing vLLM refused."""

from __future__ import annotations

import pytest

from clinalign import lm, stages
from clinalign.schemas import ClinalignError
from clinalign.store import Artifact
from clinalign.train import grpo

TINY = {"max_steps": 2, "num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 8}


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_the_stage_trains_on_every_reward_function_and_saves_the_policy(loop_copy, algorithm):
    store, folder = loop_copy
    settings = {"algorithm": algorithm, "lora": {"layers": None}, "trl": TINY}
    result = stages.run_stage("train.grpo", store, folder, settings)
    assert result.metrics["steps"] == 2 and result.metrics["algorithm"] == algorithm
    logged = set(result.metrics["curve"][0])
    assert {"rewards/clinical_aggregate/mean", "rewards/clinical_rules/mean", "rewards/clinical_empathy/mean"} <= logged
    with store.session() as session:
        art = session.query(Artifact).filter_by(run_id=result.run_id, kind="model").one()
    assert art.meta["algo"] == algorithm
    lm.load(art.uri)


def test_refusals(loop_copy):
    store, folder = loop_copy
    with pytest.raises(ClinalignError, match="beta must be above 0"):
        stages.run_stage("train.grpo", store, folder, {"trl": {**TINY, "beta": 0.0}})
    with pytest.raises(ClinalignError, match="unknown function clinical_bedside"):
        stages.run_stage("train.grpo", store, folder, {"reward_weights": {"clinical_bedside": 1.0}, "trl": TINY})
    with pytest.raises(ClinalignError, match="every weight is 0"):
        stages.run_stage("train.grpo", store, folder, {"reward_weights": {"clinical_aggregate": 0.0}, "trl": TINY})


def test_the_rules_read_the_risk_column():
    completions = [[{"role": "assistant", "content": "Call 911 now."}], [{"role": "assistant", "content": "Rest."}]]
    assert grpo.clinical_rules(None, completions, risk=["routine", "emergency"]) == [-0.5, -1.0]
