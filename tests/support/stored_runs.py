"""Runs stored with chosen values (real data through the real store), for the tests of compare,
history, nightly and the report; and the CLI invoked on a store."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import numpy as np
from click.testing import CliRunner

from harness.cli import cli
from harness.model import Better, Params, Run, Sample
from harness.store import Store

HOST: dict[str, object] = {
    "hostname": "bench-1",
    "cpu_model": "AMD EPYC",
    "cpu_count": 2,
    "kernel": "6.1.0",
    "targets": {"process": {"accel": "native"}, "docker": {"accel": "native"}},
}

# (target, metric, unit, better) -> values
Series = Mapping[tuple[str, str, str, str], Sequence[float | None]]


def store_run(
    store: Store,
    run_id: str,
    started: float,
    series: Series,
    metadata: Mapping[str, object] = HOST,
    suite: str = "boot",
    params: Mapping[str, int | str] | None = None,
    status: str = "complete",
) -> Run:
    """Stores a run whose samples have the given values (None: a failed repeat)."""
    run = Run(id=run_id, started=started, command="test", metadata=json.loads(json.dumps(metadata)))
    store.begin_run(run)
    for (target, metric, unit, better), values in series.items():
        for repeat, value in enumerate(values):
            key = (target, metric, unit, better)
            store.add_sample(sample(run_id, suite, key, params or {}, repeat, started, value))
    store.end_run(run_id, started + 100, status)  # type: ignore[arg-type]
    return store.run(run_id)


def sample(
    run_id: str,
    suite: str,
    series: tuple[str, str, str, str],
    params: Mapping[str, object],
    repeat: int,
    started: float,
    value: float | None,
) -> Sample:
    """One repeat's sample of (target, metric, unit, better); None: a failed repeat."""
    target, metric, unit, better = series
    return Sample(
        run_id=run_id,
        suite=suite,
        target=target,
        metric=metric,
        unit=unit,
        better=cast(Better, better),
        params=cast(Params, dict(params)),
        repeat=repeat,
        time=started + repeat,
        value=value,
        failure=None if value is not None else "timed out after 1 s",
    )


def noisy(median: float, n: int = 10, spread: float = 0.02, seed: int = 0) -> list[float]:
    """n values around median with a relative spread, as repeats of a quiet benchmark are."""
    rng = np.random.default_rng(seed)
    return [float(v) for v in median * (1 + spread * rng.standard_normal(n))]


def invoke(store: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--store", str(store), *args])
    return result.exit_code, result.output


BOOT = ("process", "time_to_ready", "s", "lower")
DOCKER_BOOT = ("docker", "time_to_ready", "s", "lower")
THROUGHPUT = ("process", "throughput", "Mbit/s", "higher")
