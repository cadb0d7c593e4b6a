"""Preferences: agreement between raters, consensus per task, and a TRL-format preference dataset.

Reads: ``Judgement`` rows of the tasks behind a ``judgements`` artifact.
Writes: ``train``/``test`` preference files (Parquet and JSONL, TRL conversational format:
``prompt``/``chosen``/``rejected`` plus an agreement-derived ``margin``); artifact ``preference_dataset``.

Agreement: Krippendorff's alpha (nominal for choices, ordinal for the 1-5 axis ratings; Krippendorff
2011, "Computing Krippendorff's Alpha-Reliability"), and each rater's agreement with the majority of
the other raters on the same task, the human ceiling to read a reward model's accuracy against.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import numpy as np
from sqlalchemy import select

from clinalign import phi
from clinalign.audit import RunContext, record_event, require_artifact
from clinalign.schemas import AXES
from clinalign.settings import StageConfig
from clinalign.store import Candidate, Judgement, Prompt, Task, User

log = logging.getLogger(__name__)

CHOICE_CODES = {"A": 0, "B": 1, "tie": 2, "both_unacceptable": 3}  # "cannot_judge" is a missing value


class Config(StageConfig):
    judgements: int | None = None
    """Artifact id of the judgements to aggregate; default: the newest."""

    min_votes: int = 2
    """Tasks with fewer usable judgements than this give no pair."""


def _alpha(matrix: np.ndarray, level: str) -> float | None:
    import krippendorff

    values = matrix[~np.isnan(matrix)]
    if len(np.unique(values)) < 2:
        return None  # alpha is undefined when every rating is the same
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


def agreement(judgements: list[Judgement]) -> dict:
    """Alpha for choices and axes, pairwise agreement, and rater-versus-rest-majority accuracy."""
    users = sorted({j.user_id for j in judgements})
    tasks = sorted({j.task_id for j in judgements})
    row, col = {u: i for i, u in enumerate(users)}, {t: i for i, t in enumerate(tasks)}
    choices = np.full((len(users), len(tasks)), np.nan)
    axes = {axis: np.full((len(users), 2 * len(tasks)), np.nan) for axis in AXES}
    by_task: dict[int, list[Judgement]] = defaultdict(list)
    for j in judgements:
        by_task[j.task_id].append(j)
        if j.choice in CHOICE_CODES:
            choices[row[j.user_id], col[j.task_id]] = CHOICE_CODES[j.choice]
        for axis in AXES:
            axes[axis][row[j.user_id], 2 * col[j.task_id]] = j.ratings_a[axis]
            axes[axis][row[j.user_id], 2 * col[j.task_id] + 1] = j.ratings_b[axis]

    pairs_same = pairs_total = 0
    vs_rest: dict[int, list[float]] = defaultdict(list)
    for group in by_task.values():
        for i, j in enumerate(group):
            for k in group[i + 1 :]:
                pairs_total += 1
                pairs_same += j.choice == k.choice
            rest = Counter(o.choice for o in group if o is not j and o.choice in ("A", "B", "tie"))
            top = [c for c in ("A", "B") if rest[c] > sum(rest.values()) / 2]
            if top:  # the other raters hold a strict majority for one side
                vs_rest[j.user_id].append(1.0 if j.choice == top[0] else 0.5 if j.choice == "tie" else 0.0)
    per_rater = {str(u): float(np.mean(v)) for u, v in vs_rest.items() if v}
    pooled = [x for v in vs_rest.values() for x in v]
    return {
        "raters": len(users),
        "tasks": len(tasks),
        "judgements": len(judgements),
        "alpha_choice": _alpha(choices, "nominal"),
        "alpha_axes": {axis: _alpha(m, "ordinal") for axis, m in axes.items()},
        "pairwise_agreement": pairs_same / pairs_total if pairs_total else None,
        "rater_vs_rest": float(np.mean(pooled)) if pooled else None,
        "rater_vs_rest_by_user": per_rater,
    }


def consensus(votes: list[str], min_votes: int) -> tuple[str, float] | None:
    """The side chosen by a strict majority of usable votes, with margin (wins - losses) / votes."""
    usable = [v for v in votes if v in CHOICE_CODES]
    if len(usable) < min_votes:
        return None
    counts = Counter(usable)
    for side, other in (("A", "B"), ("B", "A")):
        if counts[side] > len(usable) / 2:
            return side, (counts[side] - counts[other]) / len(usable)
    return None


def _message(role: str, content: str) -> list[dict]:
    return [{"role": role, "content": content}]


def run(ctx: RunContext, config: Config) -> dict:
    from datasets import Dataset

    with ctx.store.session() as session:
        source = require_artifact(session, "judgements", config.judgements)
        ctx.use(source.id)
        tasks = {t.id: t for t in session.scalars(select(Task).where(Task.run_id == source.run_id))}
        judgements = list(session.scalars(select(Judgement).where(Judgement.task_id.in_(tasks)).order_by(Judgement.id)))
        cand_ids = {c for t in tasks.values() for c in (t.candidate_a_id, t.candidate_b_id)}
        candidates = {c.id: c for c in session.scalars(select(Candidate).where(Candidate.id.in_(cand_ids)))}
        prompts = {
            p.id: p for p in session.scalars(select(Prompt).where(Prompt.id.in_({t.prompt_id for t in tasks.values()})))
        }
        usernames = {u.id: u.username for u in session.scalars(select(User))}

    stats = agreement(judgements)
    stats["rater_vs_rest_by_user"] = {usernames[int(u)]: v for u, v in sorted(stats["rater_vs_rest_by_user"].items())}
    votes: dict[int, list[str]] = defaultdict(list)
    for j in judgements:
        votes[j.task_id].append(j.choice)
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    undecided = 0
    for task_id, task in sorted(tasks.items()):
        decided = consensus(votes[task_id], config.min_votes)
        if decided is None:
            undecided += 1
            continue
        side, margin = decided
        a, b = candidates[task.candidate_a_id], candidates[task.candidate_b_id]
        chosen, rejected = (a, b) if side == "A" else (b, a)
        prompt = prompts[task.prompt_id]
        rows[prompt.split].append(
            {
                "prompt": _message("user", phi.scrub(prompt.text)[0]),
                "chosen": _message("assistant", chosen.text),
                "rejected": _message("assistant", rejected.text),
                "margin": margin,
                "task_id": task_id,
                "prompt_id": prompt.id,
                "risk": prompt.risk,
            }
        )
    folder = ctx.out_dir / "preferences"
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        if split_rows:
            dataset = Dataset.from_list(split_rows)
            dataset.to_parquet(str(folder / f"{split}.parquet"))
            dataset.to_json(str(folder / f"{split}.jsonl"))
    counts = {"train_pairs": len(rows["train"]), "test_pairs": len(rows["test"]), "no_consensus": undecided}
    with ctx.store.session() as session:
        art = ctx.produce_path(session, "preference_dataset", folder, {**counts, "agreement": stats})
        record_event(session, "system", "preferences", f"artifact:{art.id}", counts)
    log.info("preferences: %s; alpha(choice)=%s", counts, stats["alpha_choice"])
    ctx.metrics.update(counts, agreement=stats)
    return ctx.metrics
