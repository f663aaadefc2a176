"""What the harness records: samples, grouped into runs.

A sample is one measured value (or one failed attempt at measuring it) of one metric, on one
target, in one suite, under one set of parameters. Every sample is kept; summaries are derived.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Better = Literal["lower", "higher"]
ParamValue = str | int | float | bool
Params = Mapping[str, ParamValue]


def canonical_params(params: Params) -> str:
    """One spelling per parameter set, so equal sets compare and group equal in the store."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Metric:
    """What a suite measures: a name, its unit, and which direction is an improvement."""

    name: str
    unit: str
    better: Better


@dataclass(frozen=True)
class Measurement:
    """One value a suite measured in one repeat; where the value summarises many (the median
    lateness of 10^5 wake-ups), the distribution's quantiles come along for CDFs."""

    metric: Metric
    value: float
    distribution: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Sample:
    run_id: str
    suite: str
    target: str
    metric: str
    unit: str
    better: Better
    params: Params
    repeat: int
    time: float
    value: float | None
    failure: str | None = None

    @property
    def failed(self) -> bool:
        return self.failure is not None


SeriesKey = tuple[str, str, str, str]  # suite, target, metric, canonical params


@dataclass(frozen=True)
class Series:
    """What a stream of samples measures across repeats and runs: one metric of one suite, on
    one target, under one set of parameters. Summaries, comparisons and histories are each
    about one series, and extend this class."""

    suite: str
    target: str
    metric: str
    unit: str
    better: Better
    params: Params

    @staticmethod
    def fields_of(sample: Sample) -> dict[str, Any]:
        """The series fields of a sample, to build a Series or a subclass from."""
        return {
            "suite": sample.suite,
            "target": sample.target,
            "metric": sample.metric,
            "unit": sample.unit,
            "better": sample.better,
            "params": sample.params,
        }

    @classmethod
    def of(cls, sample: Sample) -> Series:
        return Series(**Series.fields_of(sample))

    @property
    def key(self) -> SeriesKey:
        return (self.suite, self.target, self.metric, canonical_params(self.params))

    @property
    def label(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return " ".join(part for part in (self.suite, self.target, self.metric, shown) if part)

    def series_json(self) -> dict[str, object]:
        return {
            "suite": self.suite,
            "target": self.target,
            "metric": self.metric,
            "unit": self.unit,
            "better": self.better,
            "params": dict(self.params),
        }


def series_key(sample: Sample) -> SeriesKey:
    return (sample.suite, sample.target, sample.metric, canonical_params(sample.params))


def group_series(samples: Iterable[Sample]) -> dict[SeriesKey, list[Sample]]:
    """Samples by series, in the order each series was first measured."""
    groups: dict[SeriesKey, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(series_key(sample), []).append(sample)
    return groups


RunStatus = Literal["running", "complete", "interrupted"]


@dataclass
class Run:
    """One invocation of `bench run`, with the machine facts captured once at its start."""

    id: str
    started: float
    command: str
    metadata: dict[str, object] = field(default_factory=dict)
    ended: float | None = None
    status: RunStatus = "running"

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def to_json(self) -> dict[str, object]:
        """The run's own fields, as the JSON outputs start every document."""
        return {
            "run": self.id,
            "complete": self.complete,
            "started": self.started,
            "ended": self.ended,
            "command": self.command,
            "metadata": self.metadata,
        }
