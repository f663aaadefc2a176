"""The suite interface, in the manner of a PerfKit Benchmarker module: what a suite needs (its
workload per target), how one repeat runs, and which samples it returns. The runner owns the
rest: repeats, warm-up, timeouts, clean-up and recording."""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from harness.model import Measurement, Metric, Params
from harness.targets.base import (
    Instance,
    LaunchSettings,
    Log,
    Target,
    Usage,
    Workload,
    cross_product,
)
from hostkit.interrupts import signals_deferred


class ParamError(ValueError):
    """A `--param` no target of the suite takes, or a value not of its parameter's kind."""


@dataclass(frozen=True)
class Param:
    """A parameter `--param NAME=V1,V2` sets: the values it takes, said for the user
    (`accepts`) and checked one by one (`valid`), before anything runs."""

    accepts: str
    valid: Callable[[str], bool]


def whole(unit: str = "", minimum: int = 1, multiple_of: int = 1) -> Param:
    """Digits only: int() would also take " 64", "6_4" and other scripts' digits."""
    of = f" of {unit}" if unit else ""
    times = f", a multiple of {multiple_of}" if multiple_of > 1 else ""
    return Param(
        f"a whole number{of}, {minimum} or more{times}",
        lambda value: (
            re.fullmatch("[0-9]+", value) is not None
            and int(value) >= minimum
            and int(value) % multiple_of == 0
        ),
    )


def seconds() -> Param:
    def valid(value: str) -> bool:
        try:
            number = float(value)
        except ValueError:
            return False
        return math.isfinite(number) and number > 0  # float() takes "nan" and "inf" too

    return Param("a number of seconds, more than 0", valid)


def choice(*values: str) -> Param:
    return Param(" or ".join(", ".join(values).rsplit(", ", 1)), lambda value: value in values)


def text(accepts: str) -> Param:
    """Checked by the suite itself, against what each target has."""
    return Param(accepts, lambda value: bool(value))


MEMORY = whole("MiB")  # Suite.launch_settings sizes a VM by it; other targets ignore it


class RepeatContext:
    """One repeat's world: its deadline, and every instance it launched, so all are stopped."""

    def __init__(self, target: Target, settings: LaunchSettings, deadline: float) -> None:
        self.target = target
        self.settings = settings
        self.deadline = deadline
        self.instances: list[Instance] = []
        self.killed_at_deadline = False
        self.stop_failures: list[Exception] = []

    def create(self, workload: Workload) -> Instance:
        # Ctrl-C held back until the instance is ours to stop: landing inside a target's create
        # (or just after it), it would leak the namespace, disks or container made so far. Not
        # strict: the watchdog still interrupts a create that hangs (an upload to a lost host).
        with signals_deferred(strict=False):
            instance = self.target.create(workload, self.settings)
            self.instances.append(instance)
        return instance

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.perf_counter())

    def usage(self) -> Usage:
        """The host cost of everything this repeat launched, summed."""
        cpu: float | None = None
        peak: float | None = None
        for instance in self.instances:
            used = instance.usage()
            if used.cpu_seconds is not None:
                cpu = (cpu or 0.0) + used.cpu_seconds
            if used.peak_memory_bytes is not None:
                peak = (peak or 0.0) + used.peak_memory_bytes
        return Usage(cpu_seconds=cpu, peak_memory_bytes=peak)

    def kill(self) -> None:
        """Called by the watchdog at the deadline, from its own thread."""
        self.killed_at_deadline = True
        self.stop_all()

    def stop_all(self) -> None:
        """Stops every instance; what failed to stop is kept in `stop_failures` rather than
        raised, so that a Ctrl-C held back meanwhile (raised as this ends) cannot hide it."""
        with signals_deferred():  # a Ctrl-C half-way through a stop would leak what it stops
            for instance in self.instances:
                try:
                    instance.stop()
                except Exception as exc:  # one failing to stop must not keep others alive
                    self.stop_failures.append(exc)


class Suite(ABC):
    name: str
    description: str
    metrics: tuple[Metric, ...]  # recorded as failed, each, when a repeat fails
    # What `bench run` does unless told: deterministic measurements need one repeat, no warm-up.
    default_repeat = 10
    default_warmup = 1
    # Whether repeats launch the workload: if not, targets are not prepared for launches (no
    # Xen lab is booted to weigh an image).
    launches = True
    # What `--param` may set, by name: every parameter any target of the suite takes (some
    # apply to some targets only). None: undeclared, so any name goes.
    params: ClassVar[Mapping[str, Param] | None] = None

    @abstractmethod
    def workload(self, target: Target) -> Workload:
        """What this suite runs on the given target."""

    def check_params(
        self, requested: Mapping[str, Sequence[str]], targets: Sequence[Target] = ()
    ) -> None:
        """Raises ParamError for a name neither the suite nor one of `targets` takes (it would
        only label the samples) or a value not of its parameter's kind (it would fail mid-run,
        or every repeat): what the user asked is checked before any run begins. The targets'
        own parameters (Target.params) are checked by own_params."""
        declared = self.params
        if declared is None:
            return
        own = {name: target.name for target in targets for name in target.params}
        for name, values in requested.items():
            if name in own:
                continue
            param = declared.get(name)
            if param is None:
                takes = ", ".join(sorted(declared)) or "no parameters"
                also = "".join(f"; {target} takes {own_name}" for own_name, target in own.items())
                raise ParamError(
                    f"unknown parameter {name}: the {self.name} suite takes {takes}{also}"
                )
            for value in values:
                if not param.valid(value):
                    raise ParamError(f"{name}={value}: {name} takes {param.accepts}")

    def param_sets(self, requested: Mapping[str, Sequence[str]], target: Target) -> list[Params]:
        """The parameter combinations to measure on `target`: by default the cross product of
        what the user asked."""
        return list(cross_product(requested))

    def measured_param_sets(
        self, requested: Mapping[str, Sequence[str]], target: Target
    ) -> tuple[list[Params], list[dict[str, str]]]:
        """What a run measures on `target`: the suite's parameter sets (param_sets) for each
        combination of the target's own parameters; and those combinations, which the
        target's prepare() gets ready."""
        own, rest = target.own_params(requested)
        if self.params is not None:  # what is left undeclared is another target's own
            rest = {name: values for name, values in rest.items() if name in self.params}
        sets = self.param_sets(rest, target)
        return [{**params, **combination} for combination in own for params in sets], own

    def prepare(  # noqa: B027
        self, target: Target, workload: Workload, param_sets: Sequence[Params], log: Log
    ) -> None:
        """Builds what measuring these parameter sets needs beyond what the target's prepare
        built: once per run and target, before the repeats and outside their timeouts. By
        default nothing."""

    def metrics_for(self, params: Params) -> tuple[Metric, ...]:
        """The metrics a repeat with these parameters measures: recorded failed if it fails."""
        return self.metrics

    def launch_settings(self, params: Params, cpus: int | None) -> LaunchSettings:
        """How to launch for these parameters: `memory` (MiB), where asked, sizes a VM."""
        memory = params.get("memory")
        return LaunchSettings(
            cpus=cpus,
            memory_mib=int(memory) if memory is not None else None,
            workload_params=params,
        )

    @abstractmethod
    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        """Measures one repeat; raises when the measurement failed."""
