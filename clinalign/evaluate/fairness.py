"""The fairness suite (``clinalign evaluate --suite fairness``): a model's answers across counterfactual
groups, cases that differ in one demographic attribute only (``clinalign scenarios`` makes them).

Reads: a ``scenario_cases`` artifact (``clinalign scenarios``), whose case ids name the groups
(``<template>.<phrasing>.base`` and ``<template>.<phrasing>.<attribute>=<value>``), prompts scrubbed
of PHI before any model sees them; the models; the reward model when one is named.
Writes: ``eval.json`` (artifact ``eval_report``, ``suite: fairness``).

The cases are read from the scenarios' own file, not from a curated prompt set: curation drops
near-duplicates, which is what counterfactual variants are, and de-identification replaces case ids.

Per attribute, with fairlearn's ``MetricFrame`` over the attribute's values ("base" is the first
value, the one every other attribute keeps): the escalation rate (``selection_rate`` of
``guardrails.escalates``), the mean reward when a reward model is given, and the largest difference
between values. Answer consistency: each variant's answer against its group's base answer, by
MiniLM cosine similarity and by whether the two agree on escalating.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path

from clinalign import embed, guardrails, lm, phi, stats
from clinalign.evaluate import greedy_answers, jsonl_rows
from clinalign.schemas import ClinalignError

CASE_ID = re.compile(r"^(?P<template>[^.]+)\.(?P<phrasing>[^.]+)\.(?:base|(?P<attribute>[^=]+)=(?P<value>.+))$")


def cases(path: Path) -> list[dict]:
    """The counterfactual cases of a scenarios file: the prompt (scrubbed), its group, attribute, value."""
    found = []
    for _, row in jsonl_rows(path, "scenario cases"):
        match = CASE_ID.match(str(row.get("id", "")))
        if match and isinstance(row.get("prompt"), str):
            found.append(
                {
                    "prompt": phi.scrub(row["prompt"])[0],
                    "risk": row.get("risk", "unknown"),
                    "group": f"{match['template']}.{match['phrasing']}",
                    "attribute": match["attribute"],
                    "value": match["value"] or "base",
                }
            )
    if not any(c["attribute"] for c in found):
        raise ClinalignError(f"{path}: no counterfactual groups (case ids from `clinalign scenarios`)")
    return found


def breakdown(items: list[dict], scores: dict[str, list[float]]) -> dict:
    """Per attribute: fairlearn's MetricFrame of escalation (and reward) over its values, base included."""
    import numpy as np
    from fairlearn.metrics import MetricFrame, selection_rate

    bases = {c["group"]: i for i, c in enumerate(items) if c["attribute"] is None}
    found = {}
    for attribute in sorted({c["attribute"] for c in items if c["attribute"]}):
        members = [i for i, c in enumerate(items) if c["attribute"] == attribute]
        members += sorted({bases[items[i]["group"]] for i in members if items[i]["group"] in bases})
        values = [items[i]["value"] for i in members]
        measures = {"escalation_rate": (selection_rate, [float(scores["escalated"][i]) for i in members])}
        if "reward" in scores:
            measures["mean_reward"] = (
                lambda y_true, y_pred: float(np.mean(y_pred)),
                [scores["reward"][i] for i in members],
            )
        frames = {}
        for name, (metric, predicted) in measures.items():
            frame = MetricFrame(
                metrics=metric, y_true=np.zeros(len(members)), y_pred=np.array(predicted), sensitive_features=values
            )
            frames[name] = {
                "by_value": {str(k): float(v) for k, v in frame.by_group.items()},
                "difference": float(frame.difference()),
            }
        found[attribute] = {"n": len(members), **frames}
    return found


def consistency(items: list[dict], answers: list[str], escalated: list[bool], encoder: str) -> dict:
    """Each variant against its group's base answer: cosine similarity and escalation agreement."""
    import numpy as np

    bases = {c["group"]: i for i, c in enumerate(items) if c["attribute"] is None}
    pairs = [(bases[c["group"]], i) for i, c in enumerate(items) if c["attribute"] and c["group"] in bases]
    if not pairs:
        return {"pairs": 0}
    vectors = np.asarray(embed.embed(answers, encoder))
    similarity = [float(vectors[b] @ vectors[v]) for b, v in pairs]
    by_attribute: dict[str, list[float]] = defaultdict(list)
    for (_b, v), s in zip(pairs, similarity, strict=True):
        by_attribute[items[v]["attribute"]].append(s)
    return {
        "pairs": len(pairs),
        "answer_similarity": stats.mean(similarity),
        "escalation_agreement": stats.proportion(sum(escalated[b] == escalated[v] for b, v in pairs), len(pairs)),
        "similarity_by_attribute": {a: stats.mean(s) for a, s in sorted(by_attribute.items())},
    }


def run(ctx, config, models: list[dict]) -> dict:
    from clinalign import reward_model

    if config.scenario_cases is None:
        raise ClinalignError(
            "the fairness suite needs --set scenario_cases=ID (the artifact `clinalign scenarios` printed)"
        )
    with ctx.store.session() as session:
        source = ctx.input(session, "scenario_cases", config.scenario_cases)
        items = cases(Path(source.uri))[: config.mcq_limit]
        scorer_art = ctx.input(session, "reward_model", config.reward_model) if config.reward_model else None
    scorer = reward_model.load(scorer_art.uri) if scorer_art is not None else None
    encoder = embed.default_path()
    results = {}
    for model in models:
        started = time.perf_counter()
        prompts = [c["prompt"] for c in items]
        answers = greedy_answers(lm.load(model["path"]), prompts, config, f"fairness: {model['label']}")
        escalated = [guardrails.escalates(a) for a in answers]
        scores: dict[str, list] = {"escalated": escalated}
        if scorer is not None:
            scores["reward"] = scorer.score(
                [(c["prompt"], a) for c, a in zip(items, answers, strict=True)]
            ).aggregate.tolist()
        results[model["key"]] = {
            "attributes": breakdown(items, scores),
            "consistency": consistency(items, answers, escalated, encoder),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return {
        "suite": "fairness",
        "cases": len(items),
        "groups": len({c["group"] for c in items}),
        "models": [{k: m[k] for k in ("key", "label", "artifact")} for m in models],
        "results": results,
    }
