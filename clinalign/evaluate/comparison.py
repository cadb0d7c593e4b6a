"""The comparison suite (``clinalign evaluate --suite comparison --set compare=SUITE``): two models
(a baseline and a policy, or any two) through the same suite in one run, on the very same items, with
paired statistics on every per-item outcome the suite records.

Reads and writes what the compared suite does; the summary (``suite: comparison``) holds the compared
suite's own summary under ``inner`` and, per outcome, the paired figures (``stats.paired``): the mean
difference after - before with its bootstrap interval, how many items improved and worsened, and
McNemar's exact test for binary outcomes (correct, escalated, refused) or the Wilcoxon signed-rank
test for scores. Pairing is what makes a small difference on a few hundred items readable: the items'
own difficulty cancels out.
"""

from __future__ import annotations

from clinalign import stats
from clinalign.schemas import ClinalignError


def run(ctx, config, models: list[dict]) -> dict:
    from clinalign.evaluate import hallucination, mcq, rubric, safety

    if [m["key"] for m in models] != ["before", "after"]:
        raise ClinalignError("the comparison suite needs two models: pass --set baseline=... (and policy=...)")
    suites = {"mcq": mcq, "safety": safety, "rubric": rubric, "hallucination": hallucination}
    inner = suites[config.compare].run(ctx, config, models)
    paired = {
        outcome: stats.paired(values["before"], values["after"])
        for outcome, values in inner["per_item"].items()
        if "before" in values and "after" in values
    }
    return {
        "suite": "comparison",
        "compared": config.compare,
        "models": inner["models"],
        "paired": paired,
        "inner": inner,
        "complete": inner.get("complete", True),
    }
