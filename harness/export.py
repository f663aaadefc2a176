"""Exports of a stored run for other tools: pytest-benchmark's JSON, CSV and our own JSON.

The pytest-benchmark form computes its statistics with pytest-benchmark's own Stats, so that its
`compare` and any tool reading its files see the numbers it would have computed itself. One
benchmark per series (suite, target, metric, params); failed repeats are left out of the stats
and counted in extra_info.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from pytest_benchmark import __version__ as pytest_benchmark_version
from pytest_benchmark.stats import Stats

from harness.model import Run, Sample, canonical_params, group_series

FORMATS = ("pytest-benchmark", "csv", "json")


def _series_name(sample: Sample) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(sample.params.items()))
    return f"{sample.suite}/{sample.target}/{sample.metric}" + (f"[{params}]" if params else "")


def pytest_benchmark_json(run: Run, samples: list[Sample]) -> dict[str, object]:
    benchmarks = []
    for members in group_series(samples).values():
        first = members[0]
        values = [s.value for s in members if s.value is not None]
        if not values:
            continue  # pytest-benchmark has no form for a benchmark with no rounds
        stats = Stats()
        for value in values:
            stats.update(value)
        name = _series_name(first)
        benchmarks.append(
            {
                "group": f"{first.suite}/{first.metric}",
                "name": name,
                "fullname": f"unibench::{name}",
                "params": dict(first.params) or None,
                "param": canonical_params(first.params) if first.params else None,
                "extra_info": {
                    "suite": first.suite,
                    "target": first.target,
                    "metric": first.metric,
                    "unit": first.unit,
                    "better": first.better,
                    "failed": len(members) - len(values),
                },
                "options": {"timer": "time.perf_counter", "warmup": False},
                "stats": {**stats.as_dict(), "iterations": 1, "data": values},
            }
        )
    metadata = run.metadata
    revision = str(metadata.get("unibench_revision") or "")
    return {
        "machine_info": {
            "node": metadata.get("hostname"),
            "processor": metadata.get("cpu_model"),
            "machine": "x86_64",
            "python_implementation": "CPython",
            "python_version": metadata.get("python"),
            "release": metadata.get("kernel"),
            "system": "Linux",
            "cpu": {"brand_raw": metadata.get("cpu_model"), "count": metadata.get("cpu_count")},
            "unibench": metadata,
        },
        "commit_info": {
            "id": revision.removesuffix("-dirty") or None,
            "dirty": revision.endswith("-dirty"),
            "project": "unibench",
            "branch": None,
            "time": None,
        },
        "benchmarks": benchmarks,
        "datetime": datetime.fromtimestamp(run.started, UTC).isoformat(),
        "version": pytest_benchmark_version,
    }


CSV_COLUMNS = (
    "run_id",
    "suite",
    "target",
    "metric",
    "params",
    "repeat",
    "value",
    "unit",
    "better",
    "time",
    "failure",
)


def samples_csv(samples: list[Sample]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for s in samples:
        writer.writerow(
            [
                s.run_id,
                s.suite,
                s.target,
                s.metric,
                canonical_params(s.params),
                s.repeat,
                "" if s.value is None else repr(s.value),
                s.unit,
                s.better,
                repr(s.time),
                s.failure or "",
            ]
        )
    return out.getvalue()


def samples_json(run: Run, samples: list[Sample]) -> dict[str, object]:
    return {
        **run.to_json(),
        "samples": [
            {
                "suite": s.suite,
                "target": s.target,
                "metric": s.metric,
                "unit": s.unit,
                "better": s.better,
                "params": dict(s.params),
                "repeat": s.repeat,
                "time": s.time,
                "value": s.value,
                "failure": s.failure,
            }
            for s in samples
        ],
    }


def export(run: Run, samples: list[Sample], fmt: str) -> str:
    if fmt == "pytest-benchmark":
        return json.dumps(pytest_benchmark_json(run, samples), indent=2)
    if fmt == "csv":
        return samples_csv(samples)
    if fmt == "json":
        return json.dumps(samples_json(run, samples), indent=2)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
