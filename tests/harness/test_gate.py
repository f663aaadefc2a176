"""The nightly gate: flags a regression beyond the threshold and the noise floor that a rank
permutation test finds significant, any change of a deterministic size, and not noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from harness.compare import compare_runs
from harness.gate import (
    MIN_HISTORY,
    NOISE_FACTOR,
    decide,
    gate_runs,
    night_to_night_noise,
    repeats_required,
)
from harness.stats import permutation_p, repeats_to_detect
from harness.store import Store
from tests.support.stored_runs import BOOT, HOST, THROUGHPUT, noisy, store_run

THRESHOLD, ALPHA = 0.05, 0.01
# Ten repeats spread exactly `spread` (relative, as a normal sigma) around 1: the normal's
# quantiles, so the noise the gate measures is the noise asked for, with no luck involved.
GRID = norm.ppf((np.arange(10) + 0.5) / 10)


def spread_evenly(median: float, spread: float) -> list[float]:
    return [float(v) for v in median * (1 + spread * GRID)]


def test_any_change_of_a_deterministic_size_counts() -> None:
    grown = decide([1_000_000.0], [1_000_001.0], "lower", THRESHOLD, ALPHA, deterministic=True)
    assert grown.verdict == "regressed" and "any change counts" in grown.reason
    same = decide([1_000_000.0], [1_000_000.0], "lower", THRESHOLD, ALPHA, deterministic=True)
    assert same.verdict == "unchanged"
    shrunk = decide([1_000_000.0], [999_000.0], "lower", THRESHOLD, ALPHA, deterministic=True)
    assert shrunk.verdict == "improved"
    # The same byte on a noisy metric is nothing: far inside the threshold.
    assert decide([1e6] * 10, [1e6 + 1] * 10, "lower", THRESHOLD, ALPHA).verdict == "unchanged"


def test_a_significant_shift_needs_to_clear_the_noise_floor_too() -> None:
    # The reported false alarm: two runs on a loaded machine, +28 % apart, p well below alpha.
    # Repeats that spread 10 % say the machine moves that much unprompted: not flagged.
    loaded = spread_evenly(0.025, 0.10)
    slower = [v * 1.28 for v in loaded]
    noise = decide(loaded, slower, "lower", THRESHOLD, ALPHA)
    assert noise.p_value < ALPHA and noise.verdict == "unchanged"
    assert noise.floor == pytest.approx(NOISE_FACTOR * 0.10, rel=1e-3)
    assert "noise floor" in noise.reason and noise.repeats_needed is None
    # The same shift measured on a quiet machine (2 % spread) is a regression.
    quiet = spread_evenly(0.025, 0.02)
    real = decide(quiet, [v * 1.28 for v in quiet], "lower", THRESHOLD, ALPHA)
    assert real.verdict == "regressed" and real.min_effect == pytest.approx(0.06, rel=1e-3)
    # A load that hits only tonight's run spreads it: its own spread raises the floor too.
    assert decide(quiet, [v * 1.28 for v in loaded], "lower", THRESHOLD, ALPHA).verdict == (
        "unchanged"
    )
    # Throughput: higher is better, so a drop regressed and a rise improved.
    tcp = spread_evenly(1500.0, 0.02)
    assert decide(tcp, [v * 0.9 for v in tcp], "higher", THRESHOLD, ALPHA).verdict == "regressed"
    assert decide(tcp, [v * 1.1 for v in tcp], "higher", THRESHOLD, ALPHA).verdict == "improved"


def test_a_change_of_a_tick_at_timer_resolution_is_not_a_regression() -> None:
    # host_cpu_seconds, read in 10 ms ticks: one tick more in most repeats doubles the median.
    base, new = [0.01] * 8 + [0.02] * 2, [0.02] * 6 + [0.01] * 4
    decision = decide(base, new, "lower", THRESHOLD, ALPHA)
    assert decision.change == pytest.approx(1.0) and decision.verdict == "unchanged"
    assert decision.noise == pytest.approx(1.0)  # the resolution: one tick of 10 ms


def test_too_few_repeats_can_never_flag_and_say_so() -> None:
    halved = decide([1500.0, 1490.0, 1510.0], [750.0, 745.0, 755.0], "higher", THRESHOLD, ALPHA)
    assert halved.verdict == "unchanged" and halved.p_value == pytest.approx(0.1)
    assert "3 and 3 repeats can never reach p<0.01" in halved.reason
    assert repeats_required("tcp", ALPHA) == 5 and repeats_required("size", ALPHA) == 1


def test_the_night_to_night_noise_of_the_history_raises_the_floor() -> None:
    # Tight runs 15 % apart: a regression when nothing says the machine moves that much ...
    base = spread_evenly(0.025, 0.01)
    new = [v * 1.15 for v in base]
    assert decide(base, new, "lower", THRESHOLD, ALPHA).verdict == "regressed"
    # ... but not when the last good runs' medians moved 10 % from night to night.
    swinging = [0.025, 0.0275, 0.025, 0.0225, 0.025, 0.0275, 0.025]
    moves = night_to_night_noise(swinging)
    assert moves == pytest.approx(1.4826 * 0.1, rel=1e-3)
    decision = decide(base, new, "lower", THRESHOLD, ALPHA, night_to_night=moves)
    assert decision.verdict == "unchanged" and decision.noise == moves
    # Too short a history says nothing; one step in it does not inflate the estimate.
    assert night_to_night_noise(swinging[: MIN_HISTORY - 1]) == 0.0
    assert night_to_night_noise([0.025] * 4 + [0.05] * 4) == 0.0


def test_a_slowdown_while_the_machine_was_busier_is_not_judged() -> None:
    base = spread_evenly(0.025, 0.02)
    slower = [v * 1.5 for v in base]
    busier = decide(base, slower, "lower", THRESHOLD, ALPHA, pressure=(0.05, 0.60))
    assert busier.verdict == "unchanged" and busier.busier
    assert "not judged: the machine was busier (CPU pressure 60%, against 5%)" in busier.reason
    # As busy as the baseline's, or pressure unknown: judged.
    for pressure in ((0.55, 0.60), (None, 0.60), (0.05, None)):
        judged = decide(base, slower, "lower", THRESHOLD, ALPHA, pressure=pressure)
        assert judged.verdict == "regressed" and not judged.busier
    # Load does not make things faster: an improvement stands.
    faster = decide(base, [v / 1.5 for v in base], "lower", THRESHOLD, ALPHA, pressure=(0.0, 0.9))
    assert faster.verdict == "improved"


def simulated_boots(rng: np.random.Generator, n: int, spread: float, drift: float) -> list[float]:
    """One run's boot times as this machine measures them: lognormal repeats spreading
    `spread`, one repeat in 20 an outlier 1.3 to 2.5 times slower, and the whole run shifted by
    a night-to-night drift of `drift` (relative sigma)."""
    level = 0.025 * np.exp(drift * rng.standard_normal())
    values = level * np.exp(spread * rng.standard_normal(n))
    slow = rng.random(n) < 0.05
    values[slow] *= rng.uniform(1.3, 2.5, int(slow.sum()))
    return [float(v) for v in values]


def false_alarms(pairs: int, drift_ratio: float, history: int, seed: int) -> int:
    """Of `pairs` pairs of no-change runs of 10 repeats each, how many the gate flags: each
    pair's spread drawn from this machine's boot runs (robust CVs of 2 to 10 %)."""
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(pairs):
        spread = rng.uniform(0.02, 0.10)
        drift = drift_ratio * spread
        medians = [
            float(np.median(simulated_boots(rng, 10, spread, drift))) for _ in range(history)
        ]
        base = simulated_boots(rng, 10, spread, drift)
        new = simulated_boots(rng, 10, spread, drift)
        moves = night_to_night_noise([*medians, float(np.median(base))])
        d = decide(base, new, "lower", THRESHOLD, ALPHA, night_to_night=moves)
        flagged += d.verdict != "unchanged"
    return flagged


def test_no_change_runs_from_a_noisy_machine_are_not_flagged() -> None:
    # Back to back (the run-to-run drift half the repeats' spread), no history yet: 0 of 200.
    assert false_alarms(200, drift_ratio=0.5, history=0, seed=1) == 0
    # Nights whose level drifts as much as the repeats spread, with the history measured.
    assert false_alarms(200, drift_ratio=1.0, history=9, seed=2) <= 2  # at most 1 %


def found_drops(spread: float, seed: int) -> int:
    """Of 100 pairs of 10-repeat tcp runs spreading `spread`, the second 10 % slower, how many
    the gate flags."""
    rng = np.random.default_rng(seed)
    found = 0
    for _ in range(100):
        base = [float(v) for v in 1500 * (1 + spread * rng.standard_normal(10))]
        new = [float(v) for v in 1350 * (1 + spread * rng.standard_normal(10))]
        found += decide(base, new, "higher", THRESHOLD, ALPHA).verdict == "regressed"
    return found


def test_a_ten_percent_throughput_drop_is_found_unless_the_noise_hides_it() -> None:
    # 1.5 %: the median spread of this machine's quiet tcp runs.
    assert found_drops(0.015, seed=3) >= 97
    # The floor's price: at 3 % spread it is 9 %, and a 10 % drop is a coin toss.
    assert found_drops(0.03, seed=3) < 80


def test_the_repeats_a_change_needs_come_from_the_noise() -> None:
    assert repeats_to_detect(0.05, 0.0, ALPHA) == 5  # no noise: the permutation test's own
    needs = [repeats_to_detect(0.05, noise, ALPHA) for noise in (0.005, 0.01, 0.0166, 0.03)]
    assert needs == sorted(needs) and needs[-1] > needs[0]
    # Noether's count sees a 5 % shift in at least 4 of 5 simulated runs; half as many do not.
    rng = np.random.default_rng(4)

    def power(n: int) -> float:
        hits = 0
        for _ in range(200):
            base = 1 + 0.03 * rng.standard_normal(n)
            new = 1.05 + 0.03 * rng.standard_normal(n)
            hits += permutation_p(base, new) < ALPHA
        return hits / 200

    n = repeats_to_detect(0.05, 0.03, ALPHA)
    assert power(n) >= 0.8 and power(n // 2) < 0.8


def test_gating_stored_runs_keeps_failures_and_judges_sizes_as_deterministic(
    tmp_path: Path,
) -> None:
    image = ("docker", "size_image", "bytes", "lower")
    with Store(tmp_path / "b.sqlite") as store:
        base = store_run(store, "base", 1.0, {BOOT: noisy(0.03), THROUGHPUT: noisy(1500.0)})
        new = store_run(store, "new", 2.0, {BOOT: [None] * 10, THROUGHPUT: noisy(1500.0, seed=1)})
        gated = gate_runs(
            compare_runs(base, store.samples("base"), new, store.samples("new")),
            store.samples("base"),
            store.samples("new"),
        )
        assert [c.label for c in gated.regressed] == ["boot process time_to_ready"]
        assert list(gated.decisions) == ["boot process throughput"]  # none for a failed side
        size_base = store_run(store, "s1", 3.0, {image: [5e6]}, metadata=HOST, suite="size")
        size_new = store_run(store, "s2", 4.0, {image: [5e6 + 1]}, metadata=HOST, suite="size")
        sizes = gate_runs(
            compare_runs(size_base, store.samples("s1"), size_new, store.samples("s2")),
            store.samples("s1"),
            store.samples("s2"),
        )
    (decision,) = sizes.decisions.values()
    assert decision.deterministic and decision.verdict == "regressed"
    assert [c.verdict for c in sizes.comparison.comparisons] == ["regressed"]
