"""bench history: per-run medians over stored runs, and steps only where a change lasts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.history import detect_steps, histories
from harness.store import Store
from tests.support.stored_runs import BOOT, HOST, THROUGHPUT, invoke, noisy, store_run


def levels(*segments: tuple[float, int], spread: float = 0.01, seed: int = 0) -> list[float]:
    """Per-run medians: each (level, runs) segment with a little run-to-run noise."""
    rng = np.random.default_rng(seed)
    values = [level for level, runs in segments for _ in range(runs)]
    return [float(v * (1 + spread * rng.standard_normal())) for v in values]


def test_a_lasting_change_is_found_where_it_began() -> None:
    (step,) = detect_steps(levels((30.0, 8), (36.0, 6)))
    assert step.index == 8
    assert 29 < step.before < 31 and 35 < step.after < 37 and 1.15 < step.ratio < 1.25


def test_two_lasting_changes_are_two_steps() -> None:
    steps = detect_steps(levels((30.0, 6), (45.0, 5), (30.0, 7), seed=1))
    assert [s.index for s in steps] == [6, 11]


def test_a_single_outlier_run_is_not_a_step() -> None:
    series = levels((30.0, 12), seed=2)
    for where in (0, 5, 11):  # first, middle, newest
        spiked = list(series)
        spiked[where] = 90.0
        assert detect_steps(spiked) == [], where
    two_apart = list(series)
    two_apart[4] = two_apart[7] = 90.0
    assert detect_steps(two_apart) == []


def test_a_change_that_has_not_lasted_min_runs_is_not_yet_a_step() -> None:
    # Seen on a real store: the split min_runs forces lands one run early; it must be rejected.
    assert detect_steps([27.2, 23.5, 23.2, 19.7, 61.6, 52.8]) == []
    assert len(detect_steps([27.2, 23.5, 23.2, 19.7, 61.6, 52.8, 58.0])) == 1


def test_noise_and_changes_below_the_threshold_are_not_steps() -> None:
    assert detect_steps(levels((30.0, 40), spread=0.05, seed=3)) == []
    assert detect_steps(levels((30.0, 8), (31.0, 8), spread=0.001, seed=4)) == []
    # A 20 % change buried in run-to-run noise of the same size is not claimed either.
    assert detect_steps(levels((30.0, 4), (36.0, 4), spread=0.2, seed=5)) == []


def test_store_series_walks_one_metric_across_runs_oldest_first(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        store_run(store, "r2", 2.0, {BOOT: [0.03], THROUGHPUT: [1500.0]})
        store_run(store, "r1", 1.0, {BOOT: [0.02]})
        store_run(store, "other", 3.0, {BOOT: [0.5]}, suite="tcp")
        series = store.series("boot", metric="time_to_ready")
        assert [(run.id, [s.value for s in samples]) for run, samples in series] == [
            ("r1", [0.02]),
            ("r2", [0.03]),
        ]
        assert [run.id for run, _ in store.series("boot", target="docker")] == []
        assert store.suites("other") == ["tcp"]


def test_a_move_to_another_machine_is_a_new_series_not_a_step(tmp_path: Path) -> None:
    faster_host = {**HOST, "hostname": "bench-2"}
    with Store(tmp_path / "b.sqlite") as store:
        for i in range(5):
            store_run(store, f"a{i}", float(i), {BOOT: noisy(0.030, seed=i)})
        for i in range(5, 10):
            store_run(store, f"b{i}", float(i), {BOOT: noisy(0.010, seed=i)}, metadata=faster_host)
        found = histories(store.series("boot"))
    assert sorted((h.conditions[0], len(h.points), len(h.steps)) for h in found) == [
        ("bench-1", 5, 0),
        ("bench-2", 5, 0),
    ]


def test_history_command_marks_the_run_where_a_regression_began(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with Store(path) as store:
        for i in range(10):
            median = 0.030 if i < 6 else 0.040
            store_run(store, f"run{i}", float(i), {BOOT: noisy(median, seed=i)})
    code, output = invoke(path, "history", "--suite", "boot", "--metric", "time_to_ready")
    assert code == 0, output
    marked = [line for line in output.splitlines() if "step" in line]
    assert len(marked) == 1 and "run6" in marked[0] and "regressed" in marked[0]
    code, output = invoke(path, "history", "--suite", "boot", "--format", "json")
    (doc,) = json.loads(output)
    assert [s["run"] for s in doc["steps"]] == ["run6"] and len(doc["points"]) == 10
    assert doc["steps"][0]["verdict"] == "regressed" and doc["steps"][0]["ratio"] > 1.25
    code, output = invoke(path, "history", "--suite", "web")
    assert code == 0 and "no stored values for suite 'web'" in output


def test_steps_in_a_long_history_are_found_where_they_began() -> None:
    # A hundred nights: the change points come from ruptures' PELT, then stage 2's tests.
    steps = detect_steps(levels((30.0, 50), (33.0, 30), (31.0, 20), spread=0.005, seed=6))
    assert [s.index for s in steps] == [50, 80]
    assert 1.08 < steps[0].ratio < 1.12 and 0.92 < steps[1].ratio < 0.96
