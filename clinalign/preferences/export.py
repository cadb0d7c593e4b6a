"""Training data from decided items, in the formats TRL reads, plus a flat table of every judgement.

* ``pairs`` (TRL conversational preference: ``prompt``/``chosen``/``rejected`` message lists) and
  ``pairs_standard`` (the same as plain strings), each with ``margin``: (votes for the chosen answer -
  votes for the rejected) / usable votes, in (0, 1]; adjudicated items keep their panel margin,
  floored at 0 (a reviewer settled a split vote: a weak signal, not a strong one).
* ``kto``: unpaired ``prompt``/``completion``/``label``: single-answer consensus; in pair campaigns the
  chosen answer is True, the rejected False, and both are False when both were judged unacceptable.
* ``sft_rewrites``: clinicians' rewrites of the better answer, as conversational ``messages``.
* ``judgements``: one row per judgement, every axis a column.
* ``items``: one row per judged item (decided or not, calibration items left out), with both answers,
  the consensus where there is one, and each axis's mean rating per answer: what the multi-axis reward
  model learns from (pairwise choices and ratings alike).

Every text bound for training passes the residual PHI scan (``phi.scrub``), rewrites included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clinalign import phi
from clinalign.schemas import AXES
from clinalign.store import Candidate, Judgement, Prompt, Task


@dataclass
class Decided:
    task: Task
    choice: str  # the consensus: "A"/"B"/"tie"/"both_unacceptable" or "good"/"bad"
    margin: float
    adjudicated: bool
    source: str = "clinicians"  # or "adjudicated", or "ai": an AI judge's verdict mixed in (never held out)


def _clean(text: str) -> str:
    return phi.scrub(text)[0]


def tables(
    decided: list[Decided],
    tasks: dict[int, Task],
    judgements: list[Judgement],
    prompts: dict[int, Prompt],
    candidates: dict[int, Candidate],
    names: dict[int, str],
    campaign: str | None,
) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {
        "pairs": [],
        "pairs_standard": [],
        "kto": [],
        "sft_rewrites": [],
        "judgements": [],
        "items": _items(decided, tasks, judgements, prompts, candidates),
    }
    for d in decided:
        prompt = prompts[d.task.prompt_id]
        text = _clean(prompt.text)
        common = {
            "task_id": d.task.id,
            "prompt_id": prompt.id,
            "split": prompt.split,
            "risk": prompt.risk,
            "source": d.source,
        }
        a = candidates[d.task.candidate_a_id].text
        b = candidates[d.task.candidate_b_id].text if d.task.candidate_b_id else None
        if d.choice in ("A", "B") and b is not None:
            chosen, rejected = (a, b) if d.choice == "A" else (b, a)
            margin = max(d.margin, 0.0)
            rows["pairs"].append(
                {
                    "prompt": [{"role": "user", "content": text}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "margin": margin,
                    **common,
                }
            )
            rows["pairs_standard"].append(
                {"prompt": text, "chosen": chosen, "rejected": rejected, "margin": margin, **common}
            )
            rows["kto"] += [
                {"prompt": text, "completion": chosen, "label": True, **common},
                {"prompt": text, "completion": rejected, "label": False, **common},
            ]
        elif d.choice == "both_unacceptable" and b is not None:
            rows["kto"] += [{"prompt": text, "completion": c, "label": False, **common} for c in (a, b)]
        elif d.choice in ("good", "bad"):
            rows["kto"].append({"prompt": text, "completion": a, "label": d.choice == "good", **common})
    for j in judgements:  # every judgement and rewrite, decided or not: a rewrite stands on its own
        task = tasks.get(j.task_id)
        prompt = prompts[task.prompt_id] if task else None
        if j.rewrite and prompt:
            rows["sft_rewrites"].append(
                {
                    "messages": [
                        {"role": "user", "content": _clean(prompt.text)},
                        {"role": "assistant", "content": _clean(j.rewrite)},
                    ],
                    "task_id": j.task_id,
                    "rater": names.get(j.user_id, str(j.user_id)),
                }
            )
        row = {
            "campaign": campaign,
            "judgement_id": j.id,
            "task_id": j.task_id,
            "prompt_id": task.prompt_id if task else None,
            "rater": names.get(j.user_id, str(j.user_id)),
            "choice": j.choice,
            "gold": task.gold if task else None,
            "tags_a": list(j.tags_a),
            "tags_b": list(j.tags_b),
            "rationale": _clean(j.rationale or ""),
            "rewrite": _clean(j.rewrite) if j.rewrite else None,
            "seconds": j.seconds,
            "created_at": j.created_at.isoformat() if j.created_at else None,
        }
        for axis in AXES:
            row[f"a_{axis}"] = (j.ratings_a or {}).get(axis)
            row[f"b_{axis}"] = (j.ratings_b or {}).get(axis)
        rows["judgements"].append(row)
    return rows


def _items(decided, tasks, judgements, prompts, candidates) -> list[dict]:
    consensus = {d.task.id: d for d in decided}
    by_task: dict[int, list[Judgement]] = {}
    for j in judgements:
        by_task.setdefault(j.task_id, []).append(j)
    rows = []
    for d in decided:  # an AI judge's verdict may stand on an item no clinician has judged yet
        by_task.setdefault(d.task.id, [])
    for task_id, group in sorted(by_task.items()):
        task = tasks.get(task_id)
        if task is None or task.gold:  # calibration items measure raters; they do not train
            continue
        prompt = prompts[task.prompt_id]
        decision = consensus.get(task_id)
        row = {
            "task_id": task_id,
            "prompt_id": prompt.id,
            "split": prompt.split,
            "risk": prompt.risk,
            "prompt": _clean(prompt.text),
            "answer_a": candidates[task.candidate_a_id].text,
            "answer_b": candidates[task.candidate_b_id].text if task.candidate_b_id else None,
            "consensus": decision.choice if decision else None,
            "margin": max(decision.margin, 0.0) if decision else None,
            "source": decision.source if decision else None,
            "judgements": len(group),
        }
        for axis in AXES:
            for side in ("a", "b"):
                values = [(getattr(j, f"ratings_{side}") or {}).get(axis) for j in group]
                values = [v for v in values if v is not None]
                row[f"{side}_{axis}"] = sum(values) / len(values) if values else None
        rows.append(row)
    return rows


def write(rows: dict[str, list[dict]], folder: Path) -> dict[str, int]:
    """Each table as Parquet and JSONL; the conversational pairs also as ``train``/``test`` for the trainers."""
    from datasets import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    outputs = dict(rows)
    for split in ("train", "test"):
        outputs[split] = [r for r in rows["pairs"] if r["split"] == split]
    counts = {}
    for name, table in outputs.items():
        counts[name] = len(table)
        if table:
            dataset = Dataset.from_list(table)
            dataset.to_parquet(str(folder / f"{name}.parquet"))
            dataset.to_json(str(folder / f"{name}.jsonl"))
    return counts


def load(folder: Path):
    """The exported tables as a ``datasets.DatasetDict`` (one entry per table that has rows)."""
    from datasets import DatasetDict, load_dataset

    files = {p.stem: str(p) for p in sorted(folder.glob("*.parquet"))}
    return DatasetDict({name: load_dataset("parquet", data_files=path, split="train") for name, path in files.items()})
