import numpy as np
import pytest

from harness.stats import (
    median_ci,
    min_repeats,
    permutation_p,
    relative_spread,
    smallest_p,
    summarize,
)


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


def test_the_permutation_test_is_exact_rank_based_and_symmetric() -> None:
    low, high = [1.0, 2.0, 3.0, 4.0, 5.0], [11.0, 12.0, 13.0, 14.0, 15.0]
    assert permutation_p(low, high) == pytest.approx(2 / 252)  # 2 of C(10, 5) splits
    assert permutation_p(high, low) == permutation_p(low, high)
    assert permutation_p(low, low) == pytest.approx(1.0)
    assert permutation_p([7.0] * 5, [7.0] * 5) == 1.0
    # One wild repeat is one rank: it does not make a difference significant.
    base = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.3, 10.1, 9.9, 10.0]
    assert permutation_p(base, [*base[:9], 1000.0]) > 0.5
    # Ties (timer ticks): the midranks are permuted, every split of 5 and 5 counted.
    ticks = permutation_p([0.01] * 5, [0.02] * 5)
    assert ticks == pytest.approx(2 / 252)
    assert 0.01 < permutation_p([0.01] * 4 + [0.02], [0.02] * 4 + [0.01]) < 0.5


def test_the_fewest_repeats_and_the_spread_the_gate_uses() -> None:
    assert smallest_p(3, 3) == pytest.approx(0.1)
    assert [min_repeats(a) for a in (0.05, 0.01, 0.001)] == [4, 5, 7]
    # A normal sigma from the median absolute deviation, which an outlier does not widen ...
    steady = [9.8, 10.0, 10.1, 9.9, 10.2, 10.0]
    assert relative_spread(steady) == pytest.approx(1.4826 * 0.1 / 10)
    assert relative_spread([*steady, 500.0]) == pytest.approx(1.4826 * 0.1 / 10)
    # ... and never below the resolution: values in timer ticks of 10 ms move a tick unprompted.
    assert relative_spread([0.01] * 9 + [0.02]) == pytest.approx(1.0)
    assert relative_spread([0.0, 0.0, 1.0]) == 0.0  # a median of 0: nothing is relative
