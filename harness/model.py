"""What the harness records: samples, grouped into runs.

A sample is one measured value (or one failed attempt at measuring it) of one metric, on one
target, in one suite, under one set of parameters. Every sample is kept; summaries are derived.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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
