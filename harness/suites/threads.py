"""The threads suite: what threads cost, as the paper's thread and timer experiments measured.

- create: the seconds to create and run `count` threads that do nothing (our cooperative threads
  on the unikernel targets; asyncio tasks and OS threads on Linux targets).
- jitter: `count` threads each sleep to a deadline every `period` seconds for `rounds` rounds,
  their deadlines spread over the period; the lateness of each wake-up, reported as p50, p95 and
  p99, with the whole distribution (quantiles) kept for the CDF of the paper's Figure 7b.

Parameters: mode (create, jitter), kind (uthread on unikernels; asyncio, pthread on Linux),
count, and for jitter period and rounds; each has a default per kind, and `--param` overrides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from harness.model import Measurement, Metric, Params, ParamValue
from harness.suites.base import Param, RepeatContext, Suite, choice, seconds, whole
from harness.targets.base import LaunchSettings, Target, Workload
from workloads import linux_script, unikernel_app

CREATE_SECONDS = Metric("thread_create_seconds", "s", "lower")
LATENESS = {
    "lateness_p50": (500, Metric("lateness_p50", "s", "lower")),
    "lateness_p95": (950, Metric("lateness_p95", "s", "lower")),
    "lateness_p99": (990, Metric("lateness_p99", "s", "lower")),
}
RESULT = "UNIBENCH-RESULT"
QUANTILES = "UNIBENCH-QUANTILES lateness "

THREADS_PROBE = Workload(
    name="threads-probe",
    script=linux_script("threads_probe", "threads_probe.py"),
    args=(
        "--mode",
        "{mode}",
        "--kind",
        "{kind}",
        "--count",
        "{count}",
        "--period",
        "{period}",
        "--rounds",
        "{rounds}",
    ),
    unikernel_app=unikernel_app("threads_probe"),
)

MODES = ("create", "jitter")
KINDS = ("uthread", "asyncio", "pthread")  # the unikernel's, then Linux's
# (mode, kind) -> count. OS threads cost far more each; fewer keep a repeat within minutes.
DEFAULT_COUNT = {
    ("create", "uthread"): 1_000_000,
    ("create", "asyncio"): 1_000_000,
    ("create", "pthread"): 100_000,
    ("jitter", "uthread"): 100_000,
    ("jitter", "asyncio"): 100_000,
    ("jitter", "pthread"): 1_000,
}
# 10^5 threads over 10 s: 10^4 wake-ups a second, a load Python itself can carry, so the
# lateness measured is the timers', not a saturated CPU's.
JITTER_DEFAULTS: dict[str, ParamValue] = {"period": 10.0, "rounds": 2}


class ThreadsSuite(Suite):
    name = "threads"
    params: ClassVar[Mapping[str, Param] | None] = {
        "mode": choice(*MODES),
        "kind": choice(*KINDS),
        "count": whole("threads"),
        "period": seconds(),
        "rounds": whole("rounds"),
    }
    description = "thread creation (10^6) and timer jitter (lateness CDF)"
    metrics = (CREATE_SECONDS, *(metric for _, metric in LATENESS.values()))

    def __init__(self, workload: Workload = THREADS_PROBE) -> None:
        self._workload = workload

    def workload(self, target: Target) -> Workload:
        return self._workload

    def param_sets(self, requested: Mapping[str, Sequence[str]], target: Target) -> list[Params]:
        native = [KINDS[0]] if target.family == "unikernel" else list(KINDS[1:])
        jitter: dict[str, ParamValue] = {
            name: type(default)(requested.get(name, [str(default)])[0])
            for name, default in JITTER_DEFAULTS.items()
        }
        sets: list[Params] = []
        for mode in requested.get("mode", MODES):
            for kind in requested.get("kind", native):
                for count in requested.get("count", [str(DEFAULT_COUNT[(mode, kind)])]):
                    params: dict[str, ParamValue] = {
                        "mode": mode,
                        "kind": kind,
                        "count": int(count),
                    }
                    sets.append({**params, **jitter} if mode == "jitter" else params)
        return sets

    def metrics_for(self, params: Params) -> tuple[Metric, ...]:
        if params.get("mode") == "create":
            return (CREATE_SECONDS,)
        return tuple(metric for _, metric in LATENESS.values())

    def launch_settings(self, params: Params, cpus: int | None) -> LaunchSettings:
        return LaunchSettings(cpus=cpus, workload_params={**JITTER_DEFAULTS, **params})

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        instance = ctx.create(self._workload)
        instance.start()
        _, line = instance.console.wait_for(RESULT, ctx.deadline)
        results = dict(item.split("=", 1) for item in line.split()[1:])
        if params["mode"] == "create":
            return [Measurement(CREATE_SECONDS, float(results["create_seconds"]))]
        quantile_lines = [
            text for _, text in instance.console.lines() if text.startswith(QUANTILES)
        ]
        if not quantile_lines:
            raise RuntimeError("the workload reported no lateness quantiles")
        quantiles = tuple(float(v) for v in quantile_lines[0][len(QUANTILES) :].split())
        measurements = []
        for name, (index, metric) in LATENESS.items():
            keep = quantiles if name == "lateness_p50" else None  # one copy of the CDF a repeat
            measurements.append(Measurement(metric, quantiles[index], distribution=keep))
        return measurements
