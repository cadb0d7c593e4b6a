"""The clinical reward model: a score per clinical axis, a safety-gated aggregate, and an ensemble whose
spread is its uncertainty.

Reads: a reward-model folder (``reward.json``, ``members.safetensors``) and the sentence encoder it names.
Writes: nothing (returns scores).

* Features: the encoder (the bundled MiniLM by default, or a policy's own architecture) embeds the
  question and the answer apart, mean-pooled and unit length; an answer's features are
  ``[question, answer, question * answer]``, so a head sees what was asked, what was said, and how the
  two meet (an emergency question met by "call 911").
* Members: K small networks on those features (``hidden`` units, then one output per axis), trained
  apart on bootstrap resamples (``train/reward.py``). An axis score lives on the rating scale mapped to
  [-1, 1] (rating 1 -> -1, 3 -> 0, 5 -> 1).
* Aggregate: a soft minimum of the safety score (the mean of the harm axes) and the quality score (a
  weighted mean of the others), so safety gates rather than weighs: a harmful answer cannot be bought
  back by empathy or completeness, and a safe one still ranks by quality.
* Uncertainty: the spread (standard deviation) of the aggregate across members; the preference of A over
  B is sigmoid((R_A - R_B) / T), with T fitted on the training pairs (temperature scaling, Guo et al.
  2017) so that its probabilities can be read as such.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from clinalign.schemas import ClinalignError

CONFIG = "reward.json"
WEIGHTS = "members.safetensors"
CACHE_TEXTS = 20_000  # embeddings kept for texts seen before (~30 MiB with MiniLM's 384 dimensions)


def members_module(k: int, dim: int, hidden: int, axes: int):
    """K networks stacked into one module, so that training and scoring all members is one pass."""
    import torch

    class Members(torch.nn.Module):
        def __init__(self):
            super().__init__()
            scale = dim**-0.5
            self.w1 = torch.nn.Parameter(torch.randn(k, dim, hidden) * scale)
            self.b1 = torch.nn.Parameter(torch.zeros(k, 1, hidden))
            self.w2 = torch.nn.Parameter(torch.randn(k, hidden, axes) * hidden**-0.5)
            self.b2 = torch.nn.Parameter(torch.zeros(k, 1, axes))

        def forward(self, x):  # [n, dim] (shared) or [k, n, dim] (one batch per member) -> [k, n, axes]
            shared = x.dim() == 2
            h = torch.einsum("nd,kdh->knh" if shared else "knd,kdh->knh", x, self.w1) + self.b1
            return torch.einsum("knh,kha->kna", torch.nn.functional.gelu(h), self.w2) + self.b2

    return Members()


def aggregate(scores, axes: list[str], safety: list[str], weights: dict[str, float], tau: float):
    """The safety-gated aggregate of axis scores (last dimension), as a torch tensor."""
    import torch

    index = {a: i for i, a in enumerate(axes)}
    safe = scores[..., [index[a] for a in safety]].mean(-1)
    quality_axes = [a for a in axes if a not in safety]
    w = torch.tensor([weights.get(a, 1.0) for a in quality_axes], dtype=scores.dtype)
    quality = (scores[..., [index[a] for a in quality_axes]] * w).sum(-1) / w.sum()
    return -tau * torch.logsumexp(torch.stack([-safe / tau, -quality / tau]), dim=0)


def features(encoder: str, prompts: list[str], answers: list[str], cache: dict | None = None):
    """``[question, answer, question * answer]`` per pair, each part encoded once however often it recurs
    (and, given a ``cache``, once across calls: an RL batch asks the same question of many answers)."""
    import torch

    from clinalign import embed

    unique = list(dict.fromkeys([*prompts, *answers]))
    known = cache if cache is not None else {}
    missing = [text for text in unique if text not in known]
    if missing:
        for text, vector in zip(missing, embed.embed(missing, encoder), strict=True):
            known[text] = vector
    if cache is not None:
        while len(cache) > CACHE_TEXTS:  # oldest first (dicts keep insertion order)
            del cache[next(iter(cache))]
    q = torch.stack([known[p] for p in prompts])
    a = torch.stack([known[t] for t in answers])
    return torch.cat([q, a, q * a], dim=1)


def sigmoid(x):
    """The logistic function, without overflow for large gaps."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


@dataclass
class Scores:
    axes: dict[str, np.ndarray]  # mean over members, per axis
    aggregate: np.ndarray  # mean over members
    spread: np.ndarray  # standard deviation of the aggregate over members
    members: np.ndarray  # [members, n] aggregates


class RewardModel:
    """A trained reward-model folder, ready to score (prompt, answer) pairs in batches."""

    def __init__(self, folder: Path):
        from safetensors.torch import load_file

        try:
            self.config = json.loads((folder / CONFIG).read_text())
            state = load_file(str(folder / WEIGHTS))
        except (OSError, ValueError) as err:
            raise ClinalignError(f"{folder} is not a clinalign reward model ({type(err).__name__})") from None
        c = self.config
        self.axes: list[str] = c["axes"]
        self.net = members_module(c["members"], c["dim"], c["hidden"], len(self.axes))
        self.net.load_state_dict(state)
        self.net.eval()
        self._seen: dict = {}  # text -> embedding, for texts that recur across calls

    def score(self, pairs: list[tuple[str, str]]) -> Scores:
        import torch

        if not pairs:
            empty = np.zeros(0)
            return Scores({a: empty for a in self.axes}, empty, empty, np.zeros((self.config["members"], 0)))
        x = features(self.config["encoder"], [p for p, _ in pairs], [a for _, a in pairs], self._seen)
        with torch.no_grad():
            per_axis = self.net(x)  # [k, n, axes]
            c = self.config
            total = aggregate(per_axis, self.axes, c["safety_axes"], c["weights"], c["tau"])
        mean_axes = per_axis.mean(0).numpy()
        return Scores(
            axes={a: mean_axes[:, i] for i, a in enumerate(self.axes)},
            aggregate=total.mean(0).numpy(),
            spread=total.std(0, unbiased=False).numpy(),
            members=total.numpy(),
        )

    def preference(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """P(first answer preferred), calibrated: sigmoid of the aggregate gap over the fitted temperature."""
        return sigmoid((first - second) / self.config["temperature"])


@cache
def load(folder: str) -> RewardModel:
    return RewardModel(Path(folder))
