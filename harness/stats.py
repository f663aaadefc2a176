"""Robust statistics for benchmark samples: medians, quartiles, bootstrap confidence intervals.

Benchmarks on shared machines have long right tails, so everything centres on the median and the
interquartile range rather than the mean and standard deviation (those are kept for export only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

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


# What the nightly gate needs: a permutation test, the noise a floor is measured from, and how
# many repeats the test needs to see a change of a given size.

PERMUTATIONS = 9999  # as Firecracker's A/B tests: p to within ±0.001 near 0.01
POWER = 0.8  # "can see a change": the test finds it in 4 runs out of 5
MAD_TO_SIGMA = 1.4826  # makes a median absolute deviation estimate a normal sigma


def permutation_p(
    base: Sequence[float], new: Sequence[float], resamples: int = PERMUTATIONS, seed: int = 0
) -> float:
    """Two-sided permutation test of the rank sum (Mann-Whitney's U): the share of the ways to
    split the pooled repeats into groups of these sizes whose rank sums differ at least as much
    as the observed split's.

    Ranks, not values: one wild repeat counts as one rank, so it cannot make a change
    significant on its own. Without ties that is scipy's exact U distribution; with ties (values
    at timer resolution) the midranks themselves are permuted: every split when there are at
    most `resamples`, else that many random ones, seeded so a stored run always gets the same p.
    Identical samples differ by nothing: p = 1.
    """
    a = np.asarray(base, dtype=float)
    b = np.asarray(new, dtype=float)
    pooled = np.concatenate([a, b])
    if a.size == 0 or b.size == 0 or np.all(pooled == pooled[0]):
        return 1.0
    from scipy import stats as scipy_stats

    if np.unique(pooled).size == pooled.size:
        exact = scipy_stats.mannwhitneyu(b, a, alternative="two-sided", method="exact")
        return float(exact.pvalue)
    ranks = scipy_stats.rankdata(pooled)

    def shift(x: NDArray[np.float64], y: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
        return np.asarray(np.mean(y, axis=axis) - np.mean(x, axis=axis))

    result = scipy_stats.permutation_test(
        (ranks[: a.size], ranks[a.size :]),
        shift,
        vectorized=True,
        n_resamples=resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def min_repeats(alpha: float) -> int:
    """The fewest repeats per run with which a two-sided rank test can reach p < alpha at all,
    even with no noise: 5 at 0.01 (2 / C(10, 5) = 0.008), 4 at 0.05."""
    n = 1
    while smallest_p(n, n) >= alpha:
        n += 1
    return n


def relative_spread(values: Sequence[float]) -> float:
    """The noise of repeats, relative to their median: the median absolute deviation scaled to
    a normal sigma, so that an occasional outlier does not count, but never less than the
    measurement's resolution (the smallest gap between two distinct values): a metric read at
    timer resolution (10 ms of CPU time) can move by a tick without changing. 0 for a median of
    0, where nothing is relative."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return 0.0
    median = float(np.median(data))
    if median == 0:
        return 0.0
    mad = MAD_TO_SIGMA * float(np.median(np.abs(data - median)))
    distinct = np.unique(data)
    resolution = float(np.min(np.diff(distinct))) if distinct.size > 1 else 0.0
    return max(mad, resolution) / abs(median)


def repeats_to_detect(effect: float, noise: float, alpha: float, power: float = POWER) -> int:
    """Repeats per run with which the two-sided rank test at `alpha` finds a shift of the median
    by `effect` (relative) with probability `power`, when repeats spread by `noise` (relative
    sigma): Noether's (1987) sample size for the Wilcoxon-Mann-Whitney test, with P(new > base)
    of a normal shift. Never fewer than min_repeats(alpha), which even no noise needs."""
    fewest = min_repeats(alpha)
    if noise <= 0:
        return fewest
    from scipy import stats as scipy_stats

    p_greater = float(scipy_stats.norm.cdf(effect / (noise * math.sqrt(2))))
    z = float(scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power))
    if p_greater - 0.5 <= 0:
        raise ValueError(f"no shift to detect: effect {effect}")
    return max(fewest, math.ceil(z**2 / (6 * (p_greater - 0.5) ** 2)))
