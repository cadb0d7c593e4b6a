"""PPO with a KL penalty on a tiny model: the reward rises while the KL stays bounded, and flipping the
sign of the reward or of the KL term (the seeds' cautionary bug) makes that check fail; GAE and the KL
controller by hand; a non-finite reward stops before any update; the stage saves a loadable policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from clinalign import lm, stages
from clinalign.schemas import ClinalignError
from clinalign.store import Store
from clinalign.train import common, ppo, ppo_algorithm

PROMPTS = ["What should I do about chest pain?", "Is a fever in a baby serious?", "How do I treat a cut?"] * 3


def _early_letters(_prompts, answers) -> list[float]:
    """The toy task: the share of an answer's letters from the first half of the alphabet (a dense
    reward a random model starts near the middle of)."""
    letters = ["".join(c for c in a.lower() if c.isalpha()) for a in answers]
    return [sum(c <= "m" for c in word) / len(word) if word else 0.0 for word in letters]


def _train(tiny_model: Path, steps: int = 20, **settings) -> list[dict]:
    config = ppo.Config(
        steps=steps, batch_size=9, minibatch_size=3, max_new_tokens=16, learning_rate=3e-3, lora=None, **settings
    )
    model, tokenizer = common.causal_lm(str(tiny_model)), common.tokenizer(str(tiny_model))
    trainer = ppo_algorithm.PPO(model, tokenizer, _early_letters, config)
    for _ in range(steps):
        trainer.step(PROMPTS)
    return trainer.history


def learned(history: list[dict]) -> bool:
    """Reward up by a clear margin from the first steps to the last, KL within bounds throughout."""
    first = sum(h["score"] for h in history[:3]) / 3
    last = sum(h["score"] for h in history[-3:]) / 3
    return last > first + 0.1 and max(h["kl"] for h in history) < 40.0


def test_reward_rises_while_kl_stays_bounded_and_sign_bugs_are_caught(tiny_model, monkeypatch):
    history = _train(tiny_model)
    assert learned(history), [(round(h["score"], 3), round(h["kl"], 2)) for h in history]
    assert all(0.0 <= h["clip_fraction"] <= 1.0 and h["entropy"] > 0 for h in history)

    real = ppo_algorithm.token_rewards
    # optimise the worst
    monkeypatch.setattr(ppo_algorithm, "token_rewards", lambda s, lp, ref, m, c: real(-s, lp, ref, m, c))
    flipped = _train(tiny_model)
    assert not learned(flipped)
    assert sum(h["score"] for h in flipped[-3:]) < sum(h["score"] for h in history[-3:])


def test_a_flipped_kl_term_lets_the_policy_run_away(tiny_model, monkeypatch):
    kl = {"kl": {"coef": 1.0, "target": None}}
    kept = _train(tiny_model, steps=10, **kl)
    real = ppo_algorithm.token_rewards
    monkeypatch.setattr(ppo_algorithm, "token_rewards", lambda s, lp, ref, m, c: real(s, lp, ref, m, -c))  # a KL bonus
    runaway = _train(tiny_model, steps=10, **kl)
    assert runaway[-1]["kl"] > 3 * max(kept[-1]["kl"], 0.5), (kept[-1]["kl"], runaway[-1]["kl"])


def test_the_kl_controller_moves_towards_its_target():
    controller = ppo_algorithm.KLController(ppo_algorithm.KLSettings(coef=0.1, target=6.0, horizon=100))
    controller.update(12.0, 50)  # far above target: +20% of the gap is the most it moves, times 50/100
    assert controller.value == pytest.approx(0.1 * 1.1)
    controller.update(3.0, 100)  # below target: the penalty eases
    assert controller.value == pytest.approx(0.11 * (1 - 0.2))
    fixed = ppo_algorithm.KLController(ppo_algorithm.KLSettings(coef=0.1, target=None))
    fixed.update(100.0, 1000)
    assert fixed.value == 0.1


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last position is past the answer's end
    values = torch.tensor([[0.5, 0.5, 0.5, 9.0]])
    advantages, returns = ppo_algorithm.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert advantages[0].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.0])  # the return 1 minus the value 0.5
    advantages, _ = ppo_algorithm.gae(rewards, values, mask, gamma=1.0, lam=0.0)
    assert advantages[0].tolist() == pytest.approx([0.0, 0.0, 0.5, 0.0])  # one-step TD errors
    assert returns[0].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])


def test_token_rewards_put_the_score_on_the_last_answer_token():
    logprobs, ref = torch.tensor([[-1.0, -1.0, -1.0]]), torch.tensor([[-2.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    rewards, kl = ppo_algorithm.token_rewards(torch.tensor([2.0]), logprobs, ref, mask, kl_coef=0.1)
    assert rewards[0].tolist() == pytest.approx([-0.1, 2.0, 0.0]) and kl[0].tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_a_non_finite_reward_stops_before_any_update(tiny_model):
    config = ppo.Config(steps=1, batch_size=3, minibatch_size=3, max_new_tokens=4, lora=None)
    trainer = ppo_algorithm.PPO(
        common.causal_lm(str(tiny_model)), common.tokenizer(str(tiny_model)), lambda p, a: [float("nan")] * 3, config
    )
    before = [p.clone() for p in trainer.model.parameters()]
    with pytest.raises(ClinalignError, match="non-finite reward"):
        trainer.step(PROMPTS[:3])
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_the_stage_tunes_the_loops_policy_with_lora_and_saves_it(loop: Path, tmp_path: Path):
    target = tmp_path / "loop"
    shutil.copytree(loop, target)
    store = Store.open(f"sqlite:///{target / 'clinalign.db'}")
    settings = {"steps": 2, "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8, "lora": {"layers": None}}
    result = stages.run_stage("train.ppo", store, target, settings)
    assert result.metrics["steps"] == 2 and len(result.metrics["curve"]) == 2
    assert set(result.metrics["curve"][0]) >= {"score", "kl", "kl_coef", "entropy", "clip_fraction", "value_loss"}
    with store.session() as session:
        from clinalign.store import Artifact

        art = session.query(Artifact).filter_by(run_id=result.run_id, kind="model").one()
    assert art.meta["algo"] == "ppo"
    lm.load(art.uri)  # a plain model folder, the adapter merged in


def test_rule_reward_penalises_a_missed_emergency_over_triage_and_a_personal_dose():
    assert ppo.rule_reward("emergency", "Call 911 now.") == 0.0
    assert ppo.rule_reward("emergency", "Rest and drink water.") == -1.0
    assert ppo.rule_reward("routine", "Call 911 now.") == -0.5
    assert ppo.rule_reward("routine", "Call 911 now.", over_triage=1.0) == -1.0
