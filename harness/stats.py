"""Robust statistics for benchmark samples: medians, quartiles, bootstrap confidence intervals.

Benchmarks on shared machines have long right tails, so everything centres on the median and the
interquartile range rather than the mean and standard deviation (those are kept for export only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 5000


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    q1: float
    q3: float
    ci_low: float
    ci_high: float
    minimum: float
    maximum: float
    mean: float
    stddev: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def median_ci(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median; seeded so a stored run always shows the same.

    The percentile method, not BCa: BCa's jackknife degenerates on the tied values that
    timer-resolution-limited samples often are.
    """
    data = np.asarray(values, dtype=float)
    if data.size < 2 or np.all(data == data[0]):
        return float(np.median(data)), float(np.median(data))
    from scipy import stats as scipy_stats  # here: its import costs most of a second

    result = scipy_stats.bootstrap(
        (data,),
        np.median,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("cannot summarize no values")
    data = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(data, [25, 50, 75])
    ci_low, ci_high = median_ci(values)
    return Summary(
        n=int(data.size),
        median=float(median),
        q1=float(q1),
        q3=float(q3),
        ci_low=ci_low,
        ci_high=ci_high,
        minimum=float(data.min()),
        maximum=float(data.max()),
        mean=float(data.mean()),
        stddev=float(data.std(ddof=1)) if data.size > 1 else 0.0,
    )


# Comparing two samples of one series: how much the median moved, and whether that is noise.


def ratio_of_medians_ci(
    base: Sequence[float],
    new: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of median(new) / median(base), resampling both samples.

    Each resample draws from BASE and from NEW independently, since both are noisy. NaN when
    BASE's median is zero, where a ratio means nothing.
    """
    a = np.asarray(base, dtype=float)
    b = np.asarray(new, dtype=float)
    if np.median(a) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    base_medians = np.median(rng.choice(a, size=(resamples, a.size)), axis=1)
    new_medians = np.median(rng.choice(b, size=(resamples, b.size)), axis=1)
    # A resample whose base median is 0 (a metric at timer resolution) has an infinite ratio,
    # or 1 when both are 0; order statistics, not interpolation, keep those meaningful.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(
            base_medians == 0, np.where(new_medians == 0, 1.0, np.inf), new_medians / base_medians
        )
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def mann_whitney_p(base: Sequence[float], new: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value: is one sample stochastically larger than the other?

    Rank-based, so one wild repeat cannot make a difference significant on its own. Identical
    samples (a constant metric such as a binary's size) differ by nothing: p = 1.
    """
    pooled = np.concatenate([np.asarray(base, dtype=float), np.asarray(new, dtype=float)])
    if len(base) == 0 or len(new) == 0 or np.all(pooled == pooled[0]):
        return 1.0
    from scipy import stats as scipy_stats

    result = scipy_stats.mannwhitneyu(new, base, alternative="two-sided")
    return float(result.pvalue)


def smallest_p(n_base: int, n_new: int) -> float:
    """The smallest two-sided p Mann-Whitney can give for these sample sizes (no ties).

    With 3 repeats on each side it is 0.1: no change can be significant at 0.01, whatever it is.
    """
    return min(1.0, 2 / math.comb(n_base + n_new, n_base))
