"""Robust statistics for benchmark samples: medians, quartiles, bootstrap confidence intervals.

Benchmarks on shared machines have long right tails, so everything centres on the median and the
interquartile range rather than the mean and standard deviation (those are kept for export only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

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
