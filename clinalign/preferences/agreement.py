"""Agreement between clinicians: how far their judgements can be trusted as a training signal.

* Krippendorff's alpha: nominal for choices, ordinal for the 1-5 axes; handles missing judgements
  (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"; the ``krippendorff`` package).
* Fleiss' kappa on choices, over the items judged by the most common number of raters (Fleiss 1971;
  ``statsmodels``, which needs the same number of raters per item).
* Cohen's kappa for every pair of raters with at least ``MIN_SHARED`` items in common (``statsmodels``).
* Gwet's AC1 on choices and on each axis (Gwet 2008, "Computing inter-rater reliability and its variance
  in the presence of high agreement", BJMSP 61:29-48, eq. 18 with missing ratings): kappa-type
  statistics collapse when one category dominates ("no harm" on most items); AC1 does not. It is
  written out here because no well-kept package provides it (irrCAC is a single-author project
  last released in 2024); the formula is twelve lines and checked against a hand-worked example.
* Per clinician: accuracy on gold (calibration) items, agreement with the final consensus, and with the
  strict majority of the *other* raters (the human ceiling to read a reward model's accuracy against).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np

from clinalign.schemas import AXES, PAIR_CHOICES, SINGLE_CHOICES
from clinalign.store import Judgement

MIN_SHARED = 5


def _alpha(matrix: np.ndarray, level: str) -> float | None:
    """Krippendorff's alpha, or None while it cannot be computed: it needs at least one item judged by
    two raters, and two different values among such items (always the case for overlap 1 at first)."""
    import krippendorff

    pairable = matrix[:, (~np.isnan(matrix)).sum(axis=0) >= 2]
    values = pairable[~np.isnan(pairable)]
    if len(np.unique(values)) < 2:
        return None  # undefined, not faked: no two raters have disagreed or agreed on anything yet
    value = float(krippendorff.alpha(reliability_data=pairable, level_of_measurement=level))
    return value if np.isfinite(value) else None


def gwet_ac1(items: list[list[object]], categories: tuple) -> float | None:
    """Gwet's AC1 for any number of raters per item; items with fewer than two ratings only inform pi."""
    q = len(categories)
    rated = [[v for v in item if v in categories] for item in items]
    rated = [r for r in rated if r]
    pairs = [r for r in rated if len(r) >= 2]
    if not pairs or q < 2:
        return None
    pa = np.mean([sum(c * (c - 1) for c in Counter(r).values()) / (len(r) * (len(r) - 1)) for r in pairs])
    pi = {k: np.mean([r.count(k) / len(r) for r in rated]) for k in categories}
    pe = sum(p * (1 - p) for p in pi.values()) / (q - 1)
    return float((pa - pe) / (1 - pe)) if pe < 1 else None


def fleiss(items: list[list[str]], categories: tuple) -> tuple[float | None, int]:
    """Fleiss' kappa over the items with the most common number of usable votes (>= 2)."""
    from statsmodels.stats.inter_rater import fleiss_kappa

    usable = [[v for v in item if v in categories] for item in items]
    sizes = Counter(len(u) for u in usable if len(u) >= 2)
    if not sizes:
        return None, 0
    n = sizes.most_common(1)[0][0]
    table = np.array([[u.count(k) for k in categories] for u in usable if len(u) == n])
    if (table.sum(axis=0) > 0).sum() < 2:
        return None, len(table)  # one category only: kappa undefined
    return float(fleiss_kappa(table, method="fleiss")), len(table)


def cohen_pairs(by_user: dict[str, dict[int, str]], categories: tuple) -> dict[str, float]:
    """Cohen's kappa for each pair of raters sharing at least MIN_SHARED usable items."""
    from statsmodels.stats.inter_rater import cohens_kappa

    index = {k: i for i, k in enumerate(categories)}
    result = {}
    for (u, x), (v, y) in itertools.combinations(sorted(by_user.items()), 2):
        shared = [t for t in x.keys() & y.keys() if x[t] in index and y[t] in index]
        if len(shared) < MIN_SHARED:
            continue
        table = np.zeros((len(categories), len(categories)))
        for t in shared:
            table[index[x[t]], index[y[t]]] += 1
        kappa = cohens_kappa(table, return_results=False)
        if np.isfinite(kappa):
            result[f"{u}|{v}"] = float(kappa)
    return result


def agreement(
    judgements: list[Judgement],
    names: dict[int, str] | None = None,
    gold: dict[int, str] | None = None,
    consensus: dict[int, str] | None = None,
    axes: tuple[str, ...] = AXES,
) -> dict:
    """Every agreement figure for a set of judgements; per-rater figures are keyed by ``names``."""
    names = names or {}
    gold, consensus = gold or {}, consensus or {}
    single = any(j.choice in SINGLE_CHOICES for j in judgements)
    categories = SINGLE_CHOICES if single else PAIR_CHOICES
    users = sorted({j.user_id for j in judgements})
    tasks = sorted({j.task_id for j in judgements})
    row, col = {u: i for i, u in enumerate(users)}, {t: i for i, t in enumerate(tasks)}
    sides = 1 if single else 2
    choices = np.full((len(users), len(tasks)), np.nan)
    ratings = {axis: np.full((len(users), sides * len(tasks)), np.nan) for axis in axes}
    axis_items = {axis: defaultdict(list) for axis in axes}
    by_task: dict[int, list[Judgement]] = defaultdict(list)
    by_user: dict[str, dict[int, str]] = defaultdict(dict)
    for j in judgements:
        name = names.get(j.user_id, str(j.user_id))
        by_task[j.task_id].append(j)
        by_user[name][j.task_id] = j.choice
        if j.choice in categories:
            choices[row[j.user_id], col[j.task_id]] = categories.index(j.choice)
        for s, side in enumerate([j.ratings_a, j.ratings_b][:sides]):
            for axis in axes:
                if side and axis in side:
                    ratings[axis][row[j.user_id], sides * col[j.task_id] + s] = side[axis]
                    axis_items[axis][(j.task_id, s)].append(side[axis])

    items = [[j.choice for j in group] for group in by_task.values()]
    pairs_same = pairs_total = 0
    vs_rest: dict[str, list[float]] = defaultdict(list)
    for group in by_task.values():
        for i, j in enumerate(group):
            for k in group[i + 1 :]:
                pairs_total += 1
                pairs_same += j.choice == k.choice
            rest = Counter(o.choice for o in group if o is not j and o.choice in categories)
            top = [c for c in categories if rest[c] > sum(rest.values()) / 2]
            if top and j.choice in categories:  # the other raters hold a strict majority
                vs_rest[names.get(j.user_id, str(j.user_id))].append(1.0 if j.choice == top[0] else 0.0)

    per_rater: dict[str, dict] = {}
    for j in judgements:
        name = names.get(j.user_id, str(j.user_id))
        entry = per_rater.setdefault(name, {"judgements": 0, "gold": [], "consensus": []})
        entry["judgements"] += 1
        if j.task_id in gold and j.choice != "cannot_judge":
            entry["gold"].append(j.choice == gold[j.task_id])
        if j.task_id in consensus and j.choice in categories:
            entry["consensus"].append(j.choice == consensus[j.task_id])
    for name, entry in per_rater.items():
        entry["gold_items"] = len(entry["gold"])
        entry["gold_accuracy"] = float(np.mean(entry.pop("gold"))) if entry["gold"] else None
        entry["vs_consensus"] = float(np.mean(entry.pop("consensus"))) if entry["consensus"] else None
        entry["vs_rest"] = float(np.mean(vs_rest[name])) if vs_rest.get(name) else None

    fleiss_kappa, fleiss_items = fleiss(items, categories)
    cohen = cohen_pairs(by_user, categories)
    pooled = [x for v in vs_rest.values() for x in v]
    return {
        "raters": len(users),
        "tasks": len(tasks),
        "judgements": len(judgements),
        "alpha_choice": _alpha(choices, "nominal"),
        "alpha_axes": {axis: _alpha(m, "ordinal") for axis, m in ratings.items()},
        "fleiss_kappa": fleiss_kappa,
        "fleiss_items": fleiss_items,
        "cohen_kappa_mean": float(np.mean(list(cohen.values()))) if cohen else None,
        "cohen_kappa_pairs": cohen,
        "ac1_choice": gwet_ac1(items, categories),
        "ac1_axes": {axis: gwet_ac1(list(axis_items[axis].values()), (1, 2, 3, 4, 5)) for axis in axes},
        "pairwise_agreement": pairs_same / pairs_total if pairs_total else None,
        "rater_vs_rest": float(np.mean(pooled)) if pooled else None,
        "per_rater": per_rater,
    }
