"""Figures with their uncertainty: every rate and mean the product reports carries its n and a 95% interval.

Reads: counts and values.  Writes: nothing.

* Proportions: the Wilson score interval (Wilson 1927; recommended over the normal approximation for
  small n and rates near 0 or 1: Brown, Cai and DasGupta 2001).
* Means: a percentile bootstrap over the items (Efron and Tibshirani 1993), seeded so a report is
  reproducible.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959964


def figure(value: float | None, n: int, low: float | None, high: float | None) -> dict:
    return {"value": value, "n": n, "low": low, "high": high}


def proportion(hits: float, n: int) -> dict:
    """A rate with its Wilson 95% interval (``hits`` may be fractional: ties counted as halves)."""
    if n == 0:
        return figure(None, 0, None, None)
    p = hits / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return figure(p, n, max(0.0, centre - half), min(1.0, centre + half))


def mean(values, resamples: int = 2000, seed: int = 0) -> dict:
    """A mean with its percentile-bootstrap 95% interval."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return figure(None, 0, None, None)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    return figure(
        float(values.mean()), int(values.size), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
    )


def paired(before: list, after: list, resamples: int = 2000, seed: int = 0) -> dict:
    """Two models on the same items: the mean difference (after - before) with its bootstrap interval,
    and a paired test: McNemar's exact test when the outcome is binary (only the items on which the two
    disagree carry information), else the Wilcoxon signed-rank test. Items either left ungraded
    (``None``) are dropped from both."""
    from scipy import stats as tests

    pairs = [(b, a) for b, a in zip(before, after, strict=True) if b is not None and a is not None]
    differences = [float(a) - float(b) for b, a in pairs]
    improved = sum(d > 0 for d in differences)
    worsened = sum(d < 0 for d in differences)
    if all(float(v) in (0.0, 1.0) for pair in pairs for v in pair):
        test = "McNemar exact"
        p = tests.binomtest(improved, improved + worsened, 0.5).pvalue if improved + worsened else 1.0
    else:
        test = "Wilcoxon signed-rank"
        p = tests.wilcoxon(differences).pvalue if improved + worsened else 1.0
    return {
        "difference": mean(differences, resamples, seed),
        "improved": improved,
        "worsened": worsened,
        "test": test,
        "p": float(p),
    }
