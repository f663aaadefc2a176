"""Running a suite through the real runner into a store of the test's own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from harness.model import Run, Sample
from harness.progress import QuietProgress
from harness.runner import Runner, RunSettings
from harness.store import Store
from harness.suites.base import Suite
from harness.targets.base import Target


def run_suite(
    tmp_path: Path, suite: Suite, targets: Sequence[Target], settings: RunSettings
) -> tuple[Store, Run]:
    store = Store(tmp_path / "bench.sqlite")
    runner = Runner(store, settings, QuietProgress(Console(quiet=True)))
    return store, runner.run(suite, targets, f"bench run --suite {suite.name}")


def values(samples: Sequence[Sample]) -> dict[tuple[str, str], list[float]]:
    """(target, metric) -> the values measured, failing on any failed sample."""
    found: dict[tuple[str, str], list[float]] = {}
    for sample in samples:
        assert sample.failure is None, f"{sample.target} {sample.metric}: {sample.failure}"
        assert sample.value is not None
        found.setdefault((sample.target, sample.metric), []).append(sample.value)
    return found
