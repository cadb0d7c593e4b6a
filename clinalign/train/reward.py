"""The multi-axis clinical reward model: one head per clinical axis, a safety-gated aggregate, an ensemble.

Reads: a ``preference_dataset`` artifact (its ``items`` table: both answers, the consensus, each axis's
mean rating; its ``judgements`` table for accuracy against each clinician); a sentence encoder (the
bundled MiniLM, or a policy's own architecture: ``encoder``).
Writes: a reward-model folder (``reward_model.py`` loads it) with ``metrics.json``; artifact
``reward_model`` with the held-out figures.

Each member learns from two signals at once (``reward_model.py`` has the architecture): the pairwise
choices, as a Bradley-Terry loss on the aggregate with the agreement-derived margin (as TRL's
``RewardTrainer``: -log sigmoid(r_chosen - r_rejected - margin)); and the ratings, as a regression of
each axis head on its mean rating that skips missing ones. TRL's trainer takes one output and a model
with a sequence-classification head; this one has an output per axis and learns from ratings too, so it
is trained here, on features the frozen encoder computes once. Members differ by seed and by a bootstrap
resample of the items; their spread is the model's uncertainty.

Length is a nuisance, not a virtue: during training the pairwise logit gets a learned term in the
answers' length difference, which absorbs what the judges' choices owe to length, and a penalty on the
correlation between the aggregate and length keeps it out of the reward itself (after ODIN, Chen et al.
2024). The held-out figures report the correlation that remains.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from pydantic import Field

from clinalign import embed, reward_model
from clinalign.audit import RunContext, record_event
from clinalign.schemas import AXES, ClinalignError
from clinalign.settings import StageConfig
from clinalign.train import common

log = logging.getLogger(__name__)


class Config(StageConfig):
    dataset: int | None = None
    """Artifact id of the preference dataset; default: the loop's newest."""

    encoder: str = "minilm"
    """``minilm`` (the bundled all-MiniLM-L6-v2: small and fast), or a model to embed with: an artifact id,
    a folder, or ``smollm2`` (the policy's own architecture; slower)."""

    members: int = Field(default=5, ge=1, le=16)
    """Ensemble size: the spread of its members' scores is the model's uncertainty."""

    hidden: int = Field(default=128, ge=8)
    steps: int = Field(default=200, ge=1)
    """Full-batch optimisation steps per member (the features are computed once, so steps are cheap)."""

    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-2, ge=0)
    rating_weight: float = Field(default=1.0, ge=0)
    """Weight of the per-axis rating regression next to the pairwise loss."""

    length_penalty: float = Field(default=1.0, ge=0)
    """Weight of the penalty on the aggregate's correlation with answer length; 0 turns the debias off."""

    safety_axes: list[str] = ["harm_extent", "harm_likelihood"]
    """Axes whose mean gates the aggregate: a soft minimum with the rest, never a weighted sum."""

    weights: dict[str, float] = {"consensus": 2.0, "completeness": 1.0, "communication": 1.0, "empathy": 0.5}
    """Weights of the other axes in the quality score."""

    tau: float = Field(default=0.1, gt=0)
    """Sharpness of the soft minimum (smaller: closer to a hard minimum)."""

    save_every: int = Field(default=50, ge=0)
    """A checkpoint (the encoder's features and the training state) every this many steps (0: none); a
    re-run of the same config after a crash or a kill continues from the last one, without embedding
    again, and ends as an uninterrupted run would."""

    seed: int = 0


def _load_items(folder: Path) -> tuple[list[dict], list[dict]]:
    from datasets import load_dataset

    items, judged = folder / "items.parquet", folder / "judgements.parquet"
    if not items.is_file():
        raise ClinalignError(f"{folder}: no items table (a dataset exported before multi-axis rewards): re-export it")
    rows = load_dataset("parquet", data_files=str(items), split="train").to_list()
    judgements = load_dataset("parquet", data_files=str(judged), split="train").to_list() if judged.is_file() else []
    rows = [r for r in rows if r["answer_b"] is not None]  # the pairwise model learns from pairs
    if not any(r["split"] == "train" and r["consensus"] in ("A", "B") for r in rows):
        raise ClinalignError(f"{folder}: no decided training pairs to learn from")
    return rows, judgements


class _Data:
    """The items as tensors: features of every answer, rating targets, and the decided pairs."""

    def __init__(self, rows: list[dict], encoder: str, features=None):
        import torch

        self.rows = rows
        prompts = [r["prompt"] for r in rows for _ in (0, 1)]
        answers = [r[f"answer_{side}"] for r in rows for side in ("a", "b")]
        # Answer 2i is A of item i, 2i+1 is B; a resumed run brings the features it computed before.
        self.x = reward_model.features(encoder, prompts, answers) if features is None else features
        ratings = [[r.get(f"{side}_{axis}") for axis in AXES] for r in rows for side in ("a", "b")]
        self.mask = torch.tensor([[v is not None for v in row] for row in ratings])
        self.target = torch.tensor([[(v - 3.0) / 2.0 if v is not None else 0.0 for v in row] for row in ratings])
        lengths = torch.tensor([math.log1p(len(a.split())) for a in answers])
        self.length = (lengths - lengths.mean()) / (lengths.std() + 1e-6)
        decided = [i for i, r in enumerate(rows) if r["consensus"] in ("A", "B")]
        first = torch.tensor([2 * i if rows[i]["consensus"] == "A" else 2 * i + 1 for i in decided])
        self.chosen, self.rejected = (
            first,
            first + torch.tensor([1 if rows[i]["consensus"] == "A" else -1 for i in decided]),
        )
        self.margin = torch.tensor([float(rows[i]["margin"] or 0.0) for i in decided])
        self.decided = decided
        # What training may see: the train split's pairs and answers; the test split is held out.
        self.train_pair = torch.tensor([rows[i]["split"] == "train" for i in decided], dtype=torch.float)
        self.train_answer = torch.tensor([r["split"] == "train" for r in rows for _ in (0, 1)], dtype=torch.float)


def _train(data: _Data, config: Config, checkpoints: Path | None = None, resume: dict | None = None):
    """Train every member at once (stacked), each on its own bootstrap resample of the decided pairs
    and of the rated answers; returns the members and how often each drew each pair ([k, pairs]).
    Keeps the newest checkpoint in ``checkpoints`` every ``save_every`` steps; continues from ``resume``."""
    import shutil

    import torch

    torch.manual_seed(config.seed)
    k, n_pairs, n_answers = config.members, len(data.decided), len(data.x)
    net = reward_model.members_module(k, data.x.shape[1], config.hidden, len(AXES))
    beta = torch.nn.Parameter(torch.zeros(k, 1))  # each member's length slope in the pairwise logit
    # Bootstrap weights: how often each pair and each answer is drawn for each member.
    pair_w = torch.stack([torch.bincount(torch.randint(n_pairs, (n_pairs,)), minlength=n_pairs) for _ in range(k)])
    answer_w = torch.stack(
        [torch.bincount(torch.randint(n_answers, (n_answers,)), minlength=n_answers) for _ in range(k)]
    )
    pair_w, answer_w = pair_w.float() * data.train_pair, answer_w.float() * data.train_answer
    optimiser = torch.optim.AdamW([*net.parameters(), beta], lr=config.learning_rate, weight_decay=config.weight_decay)
    args = (AXES, config.safety_axes, config.weights, config.tau)
    done = 0
    if resume is not None:
        net.load_state_dict(resume["net"])
        optimiser.load_state_dict(resume["optimiser"])
        with torch.no_grad():
            beta.copy_(resume["beta"])
        pair_w, answer_w, done = resume["pair_w"], resume["answer_w"], resume["step"]
    for step in range(done + 1, config.steps + 1):
        axes = net(data.x)  # [k, answers, axes]
        total = reward_model.aggregate(axes, *args)  # [k, answers]
        gap = total[:, data.chosen] - total[:, data.rejected]
        gap = gap + beta * (data.length[data.chosen] - data.length[data.rejected])
        pairwise = -torch.nn.functional.logsigmoid(gap - data.margin)
        loss = (pairwise * pair_w).sum(1) / pair_w.sum(1)
        if config.rating_weight:
            error = ((axes - data.target) ** 2 * data.mask).sum(2)  # missing ratings count for nothing
            per_answer = data.mask.sum(1).clamp(min=1)
            loss = loss + config.rating_weight * ((error / per_answer) * answer_w).sum(1) / answer_w.sum(1)
        if config.length_penalty:
            seen = data.train_answer.bool()
            centred = total[:, seen] - total[:, seen].mean(1, keepdim=True)
            length = data.length[seen] - data.length[seen].mean()
            corr = (centred * length).mean(1) / (centred.std(1, unbiased=False) * length.std(unbiased=False) + 1e-6)
            loss = loss + config.length_penalty * corr**2
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
        if checkpoints is not None and config.save_every and step % config.save_every == 0 and step < config.steps:
            state = {"net": net.state_dict(), "optimiser": optimiser.state_dict(), "beta": beta.detach().clone()}
            state |= {"pair_w": pair_w, "answer_w": answer_w, "step": step, "features": data.x}
            common.write_checkpoint(checkpoints / f"step-{step}", state)
            for older in checkpoints.glob("step-*"):  # the features make each one large: keep the newest
                if older.name != f"step-{step}":
                    shutil.rmtree(older, ignore_errors=True)
    return net.eval(), pair_w


def _temperature(net, data: _Data, config: Config, drawn) -> float:
    """The temperature that best calibrates sigmoid(gap / T), fitted on out-of-bag gaps: each training
    pair scored only by the members whose bootstrap did not draw it, so the fit sees the model as unseen
    data will (fitting on pairs the members learned would make it overconfident). Maximum likelihood
    over a log grid: one parameter, no optimiser needed."""
    import torch

    with torch.no_grad():
        members = reward_model.aggregate(net(data.x), AXES, config.safety_axes, config.weights, config.tau)
    gaps = (members[:, data.chosen] - members[:, data.rejected]).numpy()  # [k, pairs], chosen first
    unseen = (drawn.numpy() == 0) & (data.train_pair.numpy() == 1)
    usable = unseen.any(0)
    if not usable.any():
        return 1.0
    gap = (gaps * unseen).sum(0)[usable] / unseen.sum(0)[usable]
    grid = np.exp(np.linspace(math.log(0.01), math.log(100.0), 400))
    nll = [np.logaddexp(0.0, -gap / t).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def _calibration(p: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """ECE (expected calibration error, equal-width bins) and Brier score of P(A preferred) against the
    consensus, with the reliability curve's points (Guo et al. 2017)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    curve, ece = [], 0.0
    for b in range(bins):
        inside = index == b
        if inside.any():
            curve.append(
                {"predicted": float(p[inside].mean()), "observed": float(y[inside].mean()), "n": int(inside.sum())}
            )
            ece += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return {"ece": float(ece), "brier": float(((p - y) ** 2).mean()), "reliability": curve}


def _figures(
    model_net, data: _Data, config: Config, temperature: float, judgements: list[dict], agreement: dict
) -> dict:
    """Held-out figures on the test items: accuracy overall, per axis and per clinician, calibration,
    length, and what the ensemble's spread says."""
    import torch

    with torch.no_grad():
        axes = model_net(data.x)
        members = reward_model.aggregate(axes, AXES, config.safety_axes, config.weights, config.tau)
    total, spread, per_axis = members.mean(0).numpy(), members.std(0, unbiased=False).numpy(), axes.mean(0).numpy()
    test = [i for i in data.decided if data.rows[i]["split"] == "test"]
    figures: dict = {"test_pairs": len(test)}
    if test:
        gap = np.array([total[2 * i] - total[2 * i + 1] for i in test])
        says_a = np.array([data.rows[i]["consensus"] == "A" for i in test], dtype=float)
        right = (gap > 0) == (says_a == 1)
        figures["test_accuracy"] = float(right.mean())
        p = reward_model.sigmoid(gap / temperature)
        figures["calibration"] = _calibration(p, says_a)
        pair_spread = np.array([members[:, 2 * i].sub(members[:, 2 * i + 1]).std().item() for i in test])
        order = np.argsort(pair_spread)
        half = len(order) // 2
        if half:
            figures["accuracy_most_certain_half"] = float(right[order[:half]].mean())
            figures["accuracy_least_certain_half"] = float(right[order[-half:]].mean())
        figures["mean_spread"] = float(spread[[2 * i + s for i in test for s in (0, 1)]].mean())
    figures["axis_accuracy"] = _axis_accuracy(per_axis, data)
    figures["per_clinician"] = _per_clinician(total, data, judgements, agreement)
    tested = [2 * i + s for i, r in enumerate(data.rows) if r["split"] == "test" for s in (0, 1)]
    if len(tested) > 2:
        figures["length_correlation"] = float(np.corrcoef(total[tested], data.length.numpy()[tested])[0, 1])
    return figures


def _axis_accuracy(per_axis: np.ndarray, data: _Data) -> dict:
    """Per axis, on held-out items whose mean ratings of A and B differ by half a point or more: how often
    the axis head orders them the same way."""
    result = {}
    for k, axis in enumerate(AXES):
        hits = []
        for i, row in enumerate(data.rows):
            a, b = row.get(f"a_{axis}"), row.get(f"b_{axis}")
            if row["split"] == "test" and a is not None and b is not None and abs(a - b) >= 0.5:
                hits.append((per_axis[2 * i, k] > per_axis[2 * i + 1, k]) == (a > b))
        result[axis] = {"accuracy": float(np.mean(hits)) if hits else None, "n": len(hits)}
    return result


def _per_clinician(total: np.ndarray, data: _Data, judgements: list[dict], agreement: dict) -> dict:
    """How often the model picks each clinician's side on held-out items, next to that clinician's own
    agreement with the rest of the panel (the ceiling a proxy for the panel can reach)."""
    where = {r["task_id"]: i for i, r in enumerate(data.rows) if r["split"] == "test"}
    picks: dict[str, list[bool]] = {}
    for j in judgements:
        i = where.get(j["task_id"])
        if i is not None and j["choice"] in ("A", "B"):
            picks.setdefault(j["rater"], []).append((total[2 * i] > total[2 * i + 1]) == (j["choice"] == "A"))
    per_rater = agreement.get("per_rater", {})
    return {
        name: {
            "model_vs_clinician": float(np.mean(v)),
            "n": len(v),
            "clinician_vs_rest": per_rater.get(name, {}).get("vs_rest"),
        }
        for name, v in sorted(picks.items())
    }


def save(folder: Path, net, config: Config, temperature: float, encoder_path: str) -> Path:
    """Write a reward-model folder that ``reward_model.load`` reads."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "encoder": encoder_path,
        "axes": list(AXES),
        "safety_axes": config.safety_axes,
        "weights": config.weights,
        "tau": config.tau,
        "temperature": temperature,
        "members": config.members,
        "hidden": config.hidden,
        "dim": int(net.w1.shape[1]),
    }
    (folder / reward_model.CONFIG).write_text(json.dumps(settings, indent=1))
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(folder / reward_model.WEIGHTS))
    return folder


def run(ctx: RunContext, config: Config) -> dict:
    unknown = [a for a in [*config.safety_axes, *config.weights] if a not in AXES]
    if unknown:
        raise ClinalignError(f"unknown axes {', '.join(unknown)} (axes: {', '.join(AXES)})")
    with ctx.store.session() as session:
        dataset_art = ctx.input(session, "preference_dataset", config.dataset)
        encoder_path = embed.default_path() if config.encoder == "minilm" else None
        encoder_art, encoder_path = ctx.model(session, encoder_path or config.encoder)
        agreement = dataset_art.meta.get("agreement", {})
        resume = ctx.resume_point(session)
    state = common.read_checkpoint(resume) if resume is not None else None
    if state is not None:
        log.warning("reward model: continuing from %s", resume)
        ctx.metrics["resumed_from_step"] = state["step"]
    rows, judgements = _load_items(Path(dataset_art.uri))
    data = _Data(rows, encoder_path, features=state["features"] if state else None)
    if len(data.x) != 2 * len(rows):
        raise ClinalignError(f"checkpoint {resume} holds {len(data.x)} answers' features, not {2 * len(rows)}")
    net, drawn = _train(data, config, ctx.out_dir / "checkpoints", state)
    train_pairs = [i for i in data.decided if rows[i]["split"] == "train"]
    temperature = _temperature(net, data, config, drawn)
    figures = _figures(net, data, config, temperature, judgements, agreement)
    folder = save(ctx.out_dir / "model", net, config, temperature, encoder_path)
    (folder / "metrics.json").write_text(json.dumps(figures, indent=1))
    metrics = {
        "train_pairs": len(train_pairs),
        "items": len(rows),
        "members": config.members,
        "temperature": temperature,
        **figures,
    }
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "reward_model", folder, {"encoder_artifact": encoder_art.id, **metrics})
        record_event(
            session, "system", "train.reward", f"artifact:{art.id}", {"test_accuracy": figures.get("test_accuracy")}
        )
    log.info("reward model: %s", {k: v for k, v in metrics.items() if not isinstance(v, dict)})
    ctx.metrics.update(metrics)
    return ctx.metrics
