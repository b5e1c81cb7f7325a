"""Paired comparisons over seeds: the mean difference, its 95 % interval, and a verdict.

Two settings run with the same seeds give one difference per seed, d_s = a_s - b_s. The mean
d̄ gets Student's t interval d̄ ± t(0.975, n-1) · s_d / √n (s_d the sample std of the d_s). A
claim "a exceeds b by more than θ" *holds* when the whole interval lies above θ, is
*contradicted* when it lies below, and is *inconclusive* otherwise (always with one seed).
Spreads (Table 2) are compared by the ratio of variances with the F interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = ("holds", "contradicted", "inconclusive",
                                                   "not measured")


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95 % interval over `n` seeds (lo = hi = nan below two seeds)."""

    estimate: float
    lo: float
    hi: float
    n: int

    def text(self) -> str:
        if math.isnan(self.lo):
            return f"{self.estimate:+.1f} (n={self.n}, no interval)"
        return f"{self.estimate:+.1f} [{self.lo:+.1f}, {self.hi:+.1f}] (n={self.n})"


def mean_difference(differences) -> Interval:
    """The t interval of the mean of paired differences."""
    d = np.asarray(differences, dtype=float)
    n, mean = len(d), float(d.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = stats.t.ppf(0.5 + LEVEL / 2, n - 1) * d.std(ddof=1) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def variance_ratio(a, b) -> Interval:
    """s_a² / s_b² with the F interval [r / F(0.975; n_a-1, n_b-1), r / F(0.025; ...)]
    (it treats the two sets as independent samples, which paired seeds only approximate)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ratio = float(a.var(ddof=1) / b.var(ddof=1))
    dfa, dfb = len(a) - 1, len(b) - 1
    lo = ratio / stats.f.ppf(0.5 + LEVEL / 2, dfa, dfb)
    hi = ratio / stats.f.ppf(0.5 - LEVEL / 2, dfa, dfb)
    return Interval(ratio, lo, hi, min(len(a), len(b)))


def verdict(interval: Interval, threshold: float) -> str:
    """`holds` when the interval lies above `threshold`, `contradicted` when below."""
    if math.isnan(interval.lo):
        return INCONCLUSIVE
    if interval.lo > threshold:
        return HOLDS
    if interval.hi < threshold:
        return CONTRADICTED
    return INCONCLUSIVE


def combine(verdicts: list[str]) -> str:
    """A claim made of several comparisons: holds when all hold, contradicted when any is."""
    if not verdicts:
        return NOT_MEASURED
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE
