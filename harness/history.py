"""`bench history`: a metric's per-run medians over the stored runs, and the steps in them.

A step is where a lasting change began. Two stages, both on the per-run medians:
 1. Fit: change points by PELT (ruptures, a maintained change-point library) with the L1 cost:
    the piecewise-constant series closest to the medians in total absolute deviation, every
    segment at least `min_runs` (3) runs long, and a penalty per step of 2 ln(n) times the
    run-to-run noise, which keeps noise from being fitted.
 2. Test each step, and drop the failing one with the smallest jump until all pass. A step is
    kept when its two neighbouring segments' medians differ
      - by more than `threshold` (5 %, as asv and Firecracker use),
      - and by more than `noise_factor` (3) times the noise in those segments (the scaled
        median absolute deviation of their runs around their own median),
    and the runs either side of the cut are each nearer their own side's level (a minimum
    segment length can otherwise force a cut away from where the change began).
Absolute deviation, not squares: one outlier run costs the same in any segment, so cutting it
out never pays, and a change must last `min_runs` runs: a single outlier is never a step.

Runs that `bench compare` would refuse to compare (another host, CPU count or accel) are
separate series: a move to another machine is not a step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import click
import numpy as np
import ruptures as rpt  # type: ignore[import-untyped]
from numpy.typing import NDArray

from harness.compare import cli_store, comparability_key, console, parse_fraction
from harness.model import Run, Sample, Series, series_key
from harness.stats import MAD_TO_SIGMA
from harness.summary import format_value

MIN_RUNS = 3
THRESHOLD = 0.05
NOISE_FACTOR = 3.0


@dataclass(frozen=True)
class Step:
    index: int  # the first point of the new level
    before: float  # median of the per-run medians of the segment before
    after: float

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before else float("inf")


def _noise(left: NDArray[np.float64], right: NDArray[np.float64]) -> float:
    residuals = np.concatenate([left - np.median(left), right - np.median(right)])
    return MAD_TO_SIGMA * float(np.median(np.abs(residuals)))


def _fit(x: NDArray[np.float64], min_runs: int, penalty: float) -> list[int]:
    """The cuts of the least-absolute-deviation piecewise-constant fit (stage 1)."""
    fit = rpt.Pelt(model="l1", min_size=min_runs, jump=1).fit(x)
    return [int(k) for k in fit.predict(pen=penalty)[:-1]]  # the last is len(x), not a cut


def _is_real(
    x: NDArray[np.float64], lo: int, k: int, hi: int, threshold: float, noise_factor: float
) -> bool:
    """Stage 2's tests of the cut k between segments [lo, k) and [k, hi)."""
    left, right = x[lo:k], x[k:hi]
    before, after = float(np.median(left)), float(np.median(right))
    jump = abs(after - before)
    placed = abs(x[k - 1] - before) < abs(x[k - 1] - after)
    placed = placed and abs(x[k] - after) < abs(x[k] - before)
    big = jump > threshold * abs(before) and jump > noise_factor * _noise(left, right)
    return bool(big and placed)


def detect_steps(
    medians: Sequence[float],
    min_runs: int = MIN_RUNS,
    threshold: float = THRESHOLD,
    noise_factor: float = NOISE_FACTOR,
) -> list[Step]:
    x = np.asarray(medians, dtype=float)
    if len(x) < 2 * min_runs:
        return []
    noise = MAD_TO_SIGMA * float(np.median(np.abs(np.diff(x)))) / np.sqrt(2)
    # The tiny floor keeps a noiseless series from being cut where cutting gains nothing.
    penalty = 2 * np.log(len(x)) * noise + 1e-9 * float(np.median(np.abs(x)))
    cuts = _fit(x, min_runs, float(penalty))
    while True:
        bounds = [0, *cuts, len(x)]
        failing = [
            (abs(float(np.median(x[k:hi]) - np.median(x[lo:k]))), k)
            for lo, k, hi in zip(bounds, bounds[1:], bounds[2:], strict=False)
            if not _is_real(x, lo, k, hi, threshold, noise_factor)
        ]
        if not failing:
            break
        cuts.remove(min(failing)[1])
    bounds = [0, *cuts, len(x)]
    return [
        Step(k, float(np.median(x[lo:k])), float(np.median(x[k:hi])))
        for lo, k, hi in zip(bounds, bounds[1:], bounds[2:], strict=False)
    ]


# A metric's history.


@dataclass(frozen=True)
class Point:
    run: Run
    values: tuple[float, ...]
    failed: int

    @property
    def median(self) -> float:
        return float(np.median(self.values))


@dataclass(frozen=True)
class History(Series):
    conditions: tuple[object, ...]  # hostname, cpu model, cpu count, accel
    points: list[Point]  # runs with at least one value, oldest first
    steps: list[Step]

    def step_verdict(self, step: Step) -> Literal["improved", "regressed"]:
        worse = step.after > step.before if self.better == "lower" else step.after < step.before
        return "regressed" if worse else "improved"

    def to_json(self) -> dict[str, object]:
        return {
            **self.series_json(),
            "conditions": list(self.conditions),
            "points": [
                {"run": p.run.id, "started": p.run.started, "n": len(p.values), "median": p.median}
                for p in self.points
            ],
            "steps": [
                {
                    "run": self.points[s.index].run.id,
                    "before": s.before,
                    "after": s.after,
                    "ratio": s.ratio,
                    "verdict": self.step_verdict(s),
                }
                for s in self.steps
            ],
        }


def histories(
    series: Sequence[tuple[Run, Sequence[Sample]]],
    min_runs: int = MIN_RUNS,
    threshold: float = THRESHOLD,
) -> list[History]:
    """Splits stored runs (oldest first) into one history per target, metric, params and
    conditions, and finds the steps in each."""
    grouped: dict[tuple[object, ...], list[Point]] = {}
    first: dict[tuple[object, ...], Sample] = {}
    for run, samples in series:
        by_key: dict[tuple[object, ...], list[Sample]] = {}
        for s in samples:
            key = (*series_key(s), *comparability_key(run, s.target))
            by_key.setdefault(key, []).append(s)
        for key, group in by_key.items():
            values = tuple(s.value for s in group if s.value is not None)
            if values:
                grouped.setdefault(key, []).append(Point(run, values, len(group) - len(values)))
                first.setdefault(key, group[0])
    result = []
    for key, points in grouped.items():
        s = first[key]
        result.append(
            History(
                **Series.fields_of(s),
                conditions=key[4:],
                points=points,
                steps=detect_steps([p.median for p in points], min_runs, threshold),
            )
        )
    return result


def describe_step(history: History, step: Step) -> str:
    run = history.points[step.index].run
    return (
        f"{history.step_verdict(step)} from run {run.id}: "
        f"{format_value(step.before, history.unit)} → {format_value(step.after, history.unit)} "
        f"({step.ratio - 1:+.1%})"
    )


@click.command(name="history")
@click.option("--suite", required=True)
@click.option("--target", default=None, help="One target (default: all).")
@click.option("--metric", default=None, help="One metric (default: all).")
@click.option("--threshold", default="5%", show_default=True, help="Smallest step that counts.")
@click.option(
    "--min-runs",
    default=MIN_RUNS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Runs a change must last on each side of a step.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def history_command(
    ctx: click.Context,
    suite: str,
    target: str | None,
    metric: str | None,
    threshold: str,
    min_runs: int,
    fmt: str,
) -> None:
    """A metric's medians over the stored runs, with the steps where lasting changes began."""
    with cli_store(ctx) as store:
        found = histories(store.series(suite, target, metric), min_runs, parse_fraction(threshold))
    if fmt == "json":
        click.echo(json.dumps([h.to_json() for h in found], indent=2))
        return
    out = console()
    if not found:
        out.print(
            f"no stored values for suite {suite!r}"
            + (f", target {target!r}" if target else "")
            + (f", metric {metric!r}" if metric else "")
        )
        return
    several_conditions = len({h.conditions for h in found}) > 1
    for h in found:
        params = " ".join(f"{k}={v}" for k, v in h.params.items())
        where = f" on {h.conditions}" if several_conditions else ""
        arrow = "↓" if h.better == "lower" else "↑"
        out.print(f"[bold]{h.suite} {h.target} {h.metric} {arrow} {params}[/]{where}")
        starts = {s.index: s for s in h.steps}
        for i, p in enumerate(h.points):
            when = datetime.fromtimestamp(p.run.started).strftime("%Y-%m-%d %H:%M")
            mark = f"  ◀ step: {describe_step(h, starts[i])}" if i in starts else ""
            out.print(
                f"  {when}  {p.run.id}  {format_value(p.median, h.unit):>10}  n={len(p.values)}"
                f"{mark}"
            )
        if not h.steps:
            out.print(f"  no step (a step must last {min_runs} runs on each side)")
