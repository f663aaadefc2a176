"""bench compare: direction-aware verdicts, significance, and refusing incomparable runs.

Controlled changes are stored as samples in a temporary store (real data through the real store);
the end-to-end check compares real runs of the boot suite on the process target.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.compare import compare_runs, judge
from harness.stats import mann_whitney_p, ratio_of_medians_ci, smallest_p
from harness.store import Store
from tests.support.stored_runs import BOOT, DOCKER_BOOT, HOST, THROUGHPUT, invoke, noisy, store_run


def verdicts(output: str) -> dict[tuple[str, str], str]:
    doc = json.loads(output)
    return {(c["target"], c["metric"]): c["verdict"] for c in doc["comparisons"]}


def test_a_target_that_got_slower_is_flagged_and_fails_the_command(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with Store(path) as store:
        store_run(store, "base", 1.0, {BOOT: noisy(0.030, seed=1), DOCKER_BOOT: noisy(0.5, seed=2)})
        store_run(store, "new", 2.0, {BOOT: noisy(0.030, seed=3), DOCKER_BOOT: noisy(0.6, seed=4)})
    code, output = invoke(path, "compare", "base", "new", "--format", "json")
    assert code == 1, output
    assert verdicts(output) == {
        ("process", "time_to_ready"): "unchanged",
        ("docker", "time_to_ready"): "regressed",
    }
    docker = next(c for c in json.loads(output)["comparisons"] if c["target"] == "docker")
    low, high = docker["ratio_ci"]
    assert low < docker["ratio"] < high and 1.1 < docker["ratio"] < 1.3 and low > 1.05
    assert docker["p_value"] < 0.01
    code, table = invoke(path, "compare", "base", "new")
    assert code == 1 and "regressed" in table and "1 regressed" in table


def test_direction_decides_a_throughput_drop_is_bad_and_a_boot_time_drop_good(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite"
    with Store(path) as store:
        store_run(store, "base", 1.0, {BOOT: noisy(0.030, seed=1), THROUGHPUT: noisy(1500, seed=2)})
        store_run(store, "new", 2.0, {BOOT: noisy(0.024, seed=3), THROUGHPUT: noisy(1200, seed=4)})
        store_run(
            store, "newer", 3.0, {BOOT: noisy(0.024, seed=5), THROUGHPUT: noisy(1800, seed=6)}
        )
    code, output = invoke(path, "compare", "base", "new", "--format", "json")
    assert code == 1
    assert verdicts(output) == {
        ("process", "time_to_ready"): "improved",
        ("process", "throughput"): "regressed",
    }
    code, output = invoke(path, "compare", "new", "newer", "--format", "json")
    assert code == 0
    assert verdicts(output)[("process", "throughput")] == "improved"


def test_an_unchanged_rerun_is_reported_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with Store(path) as store:
        store_run(store, "base", 1.0, {BOOT: noisy(0.030, seed=1), THROUGHPUT: noisy(1500, seed=2)})
        store_run(
            store, "rerun", 2.0, {BOOT: noisy(0.030, seed=7), THROUGHPUT: noisy(1500, seed=8)}
        )
    code, output = invoke(path, "compare", "base", "rerun", "--format", "json")
    assert code == 0, output
    assert set(verdicts(output).values()) == {"unchanged"}


def test_real_runs_of_the_boot_suite_compare_series_by_series(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    for _ in range(2):
        code, output = invoke(
            path, "run", "--suite", "boot", "--target", "process", "--repeat", "5"
        )
        assert code == 0, output
    with Store(path) as store:
        new, base = (run.id for run in store.runs())
    # A run compared with itself is the one comparison whose verdict real noise cannot change.
    code, output = invoke(path, "compare", base, base, "--format", "json")
    assert code == 0 and set(verdicts(output).values()) == {"unchanged"}
    code, output = invoke(path, "compare", base, new, "--format", "json")
    doc = json.loads(output)
    assert code == (1 if doc["regressed"] else 0)
    assert {c["metric"] for c in doc["comparisons"]} >= {"time_to_ready", "time_to_service"}
    assert doc["base"]["run"] == base and doc["forced_despite"] == []


def test_small_or_unproven_changes_are_unchanged_and_say_why() -> None:
    quiet = noisy(100.0, n=30, spread=0.005, seed=1)
    shifted = [v * 1.03 for v in noisy(100.0, n=30, spread=0.005, seed=2)]
    *_, p, verdict, reason = judge(quiet, shifted, "lower", 0.05, 0.01)
    assert p < 0.01 and verdict == "unchanged" and "within ±5%" in reason
    *_, verdict, reason = judge([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], "lower", 0.05, 0.01)
    assert verdict == "unchanged" and "can never reach p<0.01" in reason
    *_, verdict, _ = judge(
        [1.0, 1.1, 0.9, 1.05, 0.95, 1.02], [2.0, 2.1, 1.9, 2.05, 2.2, 1.98], "lower", 0.05, 0.01
    )
    assert verdict == "regressed"


def test_one_wild_repeat_does_not_make_a_regression() -> None:
    base = noisy(0.030, seed=1)
    new = [*noisy(0.030, n=9, seed=2), 3.0]  # one repeat hit a 100x stall
    *_, verdict, _ = judge(base, new, "lower", 0.05, 0.01)
    assert verdict == "unchanged"


def test_a_target_that_stopped_working_is_a_regression(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        base = store_run(store, "base", 1.0, {DOCKER_BOOT: noisy(0.5)})
        new = store_run(store, "new", 2.0, {DOCKER_BOOT: [None] * 3})
        result = compare_runs(base, store.samples("base"), new, store.samples("new"))
    (only,) = result.comparisons
    assert only.verdict == "regressed" and "every repeat failed in NEW" in only.reason


def test_runs_from_other_conditions_are_refused_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    other = {
        **HOST,
        "cpu_count": 4,
        "kernel": "6.18.0",
        "targets": {"process": {"accel": "native"}, "docker": {"accel": "tcg"}},
    }
    with Store(path) as store:
        store_run(store, "base", 1.0, {DOCKER_BOOT: noisy(0.5, seed=1)})
        store_run(store, "new", 2.0, {DOCKER_BOOT: noisy(0.5, seed=2)}, metadata=other)
    code, output = invoke(path, "compare", "base", "new")
    assert code == 2
    assert "cpu_count: 2 in BASE, 4 in NEW" in output and "targets.docker.accel" in output
    assert "kernel" not in output and "--force" in output
    code, output = invoke(path, "compare", "base", "new", "--force", "--format", "json")
    doc = json.loads(output)
    assert code == 0 and {d["field"] for d in doc["forced_despite"]} == {
        "cpu_count",
        "targets.docker.accel",
    }
    assert [d["field"] for d in doc["also_differs"]] == ["kernel"]


def test_series_in_one_run_only_are_listed_not_compared(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        base = store_run(store, "base", 1.0, {BOOT: noisy(0.03), DOCKER_BOOT: noisy(0.5)})
        new = store_run(store, "new", 2.0, {BOOT: noisy(0.03), THROUGHPUT: noisy(1500)})
        result = compare_runs(base, store.samples("base"), new, store.samples("new"))
    assert [c.target for c in result.comparisons] == ["process"]
    assert result.only_in_base == ["boot docker time_to_ready"]
    assert result.only_in_new == ["boot process throughput"]


def test_ratio_interval_covers_the_true_ratio_and_is_reproducible() -> None:
    base, new = noisy(10.0, n=200, spread=0.1, seed=1), noisy(12.0, n=200, spread=0.1, seed=2)
    low, high = ratio_of_medians_ci(base, new)
    assert low < 1.2 < high and high - low < 0.1
    assert ratio_of_medians_ci(base, new) == (low, high)
    assert all(math.isnan(x) for x in ratio_of_medians_ci([0.0, 0.0], [1.0, 2.0]))


def test_mann_whitney_edge_cases() -> None:
    assert mann_whitney_p([5.0] * 10, [5.0] * 10) == 1.0
    assert mann_whitney_p(list(range(10)), list(range(100, 110))) < 0.001
    assert smallest_p(3, 3) == pytest.approx(0.1) and smallest_p(10, 10) < 1e-4
