"""The threads suite on real targets, with small counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from harness.progress import QuietProgress
from harness.runner import Runner, RunSettings
from harness.store import Store
from harness.suites.threads import ThreadsSuite
from harness.targets.base import Target
from harness.targets.process import ProcessTarget
from harness.targets.unikernel import unikernel_targets
from tests.support.artifacts import require_specialized_kernel

SMALL = {"count": ["2000"], "period": ["0.5"], "rounds": ["2"]}


def run_threads(tmp_path: Path, targets: list[Target]) -> Store:
    store = Store(tmp_path / "bench.sqlite")
    settings = RunSettings(repeat=1, warmup=0, timeout=300, params=SMALL)
    Runner(store, settings, QuietProgress(Console(quiet=True))).run(ThreadsSuite(), targets, "t")
    return store


def by_target(store: Store) -> dict[str, dict[tuple[str, str], float]]:
    run = store.last_run()
    found: dict[str, dict[tuple[str, str], float]] = {}
    for sample in store.samples(run.id):
        assert sample.failure is None, sample.failure
        assert sample.value is not None
        found.setdefault(sample.target, {})[(sample.metric, str(sample.params["kind"]))] = (
            sample.value
        )
    return found


def test_linux_kinds_and_the_hosted_unikernel(tmp_path: Path) -> None:
    hosted = next(t for t in unikernel_targets() if t.name == "unikernel-hosted")
    store = run_threads(tmp_path, [ProcessTarget(), hosted])
    found = by_target(store)
    assert set(found["process"]) >= {
        ("thread_create_seconds", "asyncio"),
        ("thread_create_seconds", "pthread"),
        ("lateness_p99", "asyncio"),
        ("lateness_p99", "pthread"),
    }
    assert set(found["unikernel-hosted"]) >= {
        ("thread_create_seconds", "uthread"),
        ("lateness_p50", "uthread"),
    }
    for metrics in found.values():
        for (metric, _), value in metrics.items():
            if metric.startswith("lateness"):
                assert -0.001 < value < 5.0  # a sleeper never wakes a whole period early
    p50 = found["unikernel-hosted"][("lateness_p50", "uthread")]
    p99 = found["unikernel-hosted"][("lateness_p99", "uthread")]
    assert p50 <= p99
    # One CDF a repeat: the quantiles behind p50, 1001 of them, sorted.
    distributions = store.distributions(store.last_run().id)
    assert len(distributions) == 3  # asyncio, pthread, uthread jitter repeats
    for _, quantiles in distributions:
        assert len(quantiles) == 1001 and quantiles == sorted(quantiles)


@pytest.mark.slow
def test_threads_in_the_qemu_unikernel(tmp_path: Path) -> None:
    require_specialized_kernel()
    qemu = next(t for t in unikernel_targets() if t.name == "unikernel-qemu")
    found = by_target(run_threads(tmp_path, [qemu]))
    assert found["unikernel-qemu"][("thread_create_seconds", "uthread")] > 0
    assert ("lateness_p99", "uthread") in found["unikernel-qemu"]
