import numpy as np
import pytest

from harness.stats import median_ci, summarize


def test_summary_matches_known_values() -> None:
    summary = summarize([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert summary.n == 10
    assert summary.median == 5.5
    # numpy's default (linear) quartiles, i.e. R's type 7: 1 + 0.25 * 9 = 3.25
    assert summary.q1 == 3.25 and summary.q3 == 7.75 and summary.iqr == 4.5
    assert summary.minimum == 1.0 and summary.maximum == 10.0
    assert summary.mean == 5.5
    assert summary.stddev == pytest.approx(3.0276503540974917)


def test_median_of_odd_count_and_outlier_robustness() -> None:
    summary = summarize([0.010, 0.011, 0.012, 0.013, 5.0])
    assert summary.median == 0.012
    assert summary.mean > 1.0  # the mean is dragged by the outlier; the median is not


def test_bootstrap_interval_contains_the_median_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(42)
    small = list(rng.normal(100.0, 10.0, 10))
    large = list(rng.normal(100.0, 10.0, 1000))
    lo_s, hi_s = median_ci(small)
    lo_l, hi_l = median_ci(large)
    assert lo_s <= float(np.median(small)) <= hi_s
    assert lo_l <= float(np.median(large)) <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3
    # the true median (100) lies inside the interval from 1000 draws
    assert lo_l < 100.0 < hi_l


def test_bootstrap_is_reproducible() -> None:
    data = [3.1, 2.9, 3.3, 3.0, 3.8, 2.7, 3.2]
    assert median_ci(data) == median_ci(data)


def test_degenerate_inputs() -> None:
    assert median_ci([2.0]) == (2.0, 2.0)
    assert median_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    single = summarize([2.0])
    assert (single.n, single.median, single.stddev) == (1, 2.0, 0.0)
    with pytest.raises(ValueError, match="no values"):
        summarize([])
