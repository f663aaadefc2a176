"""`bench compare BASE NEW`: direction-aware A/B comparison of two stored runs.

For each series (suite, target, metric, params) that both runs measured: the ratio of medians
NEW / BASE with a bootstrap interval that resamples both runs, and a two-sided Mann-Whitney U test
on the samples. A series regressed when its median moved in the metric's bad direction (up for
"lower is better", down for "higher is better") by more than the threshold AND the test is
significant at alpha; improved symmetrically; anything else is unchanged. These are asv's and
Firecracker's gates (5 %, p < 0.01), made aware of which direction is better.

Runs measured on another machine, with another CPU count, or with another accelerator for a
compared target are another experiment: comparing them is refused unless forced.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import click
from rich.console import Console
from rich.table import Table

from harness.model import Better, Run, Sample, Series, group_series
from harness.stats import (
    Summary,
    mann_whitney_p,
    ratio_of_medians_ci,
    smallest_p,
    summarize,
)
from harness.store import Store
from harness.summary import format_value

Verdict = Literal["improved", "regressed", "unchanged"]

DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01
EXIT_REGRESSED = 1
EXIT_INCOMPARABLE = 2

# Differing here makes the numbers incomparable: another machine is another experiment.
HOST_FIELDS = ("hostname", "cpu_model", "cpu_count")
# Differing here is usually the point of the comparison, so it is shown, never refused.
INFO_FIELDS = ("unibench_revision", "kernel", "distribution", "python", "docker_engine", "qemu")


# What makes two runs comparable.


@dataclass(frozen=True)
class Difference:
    field: str
    base: object
    new: object

    def __str__(self) -> str:
        return f"{self.field}: {self.base!r} in BASE, {self.new!r} in NEW"


class IncomparableRuns(Exception):
    def __init__(self, differences: Sequence[Difference]) -> None:
        self.differences = list(differences)
        listed = "; ".join(str(d) for d in differences)
        super().__init__(
            f"refusing to compare runs measured under different conditions ({listed}); "
            "pass --force to compare anyway"
        )


def target_accel(run: Run, target: str) -> object:
    targets = run.metadata.get("targets")
    facts = targets.get(target) if isinstance(targets, dict) else None
    return facts.get("accel") if isinstance(facts, dict) else None


def comparability_key(run: Run, target: str) -> tuple[object, ...]:
    """Runs with equal keys for a target can be compared; history never joins unequal ones."""
    return (*(run.metadata.get(f) for f in HOST_FIELDS), target_accel(run, target))


def metadata_differences(
    base: Run, new: Run, targets: Iterable[str]
) -> tuple[list[Difference], list[Difference]]:
    """(differences that make the comparison meaningless, differences worth knowing)."""
    blocking = [
        Difference(name, base.metadata.get(name), new.metadata.get(name))
        for name in HOST_FIELDS
        if base.metadata.get(name) != new.metadata.get(name)
    ]
    for target in sorted(set(targets)):
        before, after = target_accel(base, target), target_accel(new, target)
        # An unknown accel (the target failed to prepare) has no values to compare anyway.
        if before is not None and after is not None and before != after:
            blocking.append(Difference(f"targets.{target}.accel", before, after))
    informational = [
        Difference(name, base.metadata.get(name), new.metadata.get(name))
        for name in INFO_FIELDS
        if base.metadata.get(name) != new.metadata.get(name)
    ]
    return blocking, informational


# One series.


@dataclass(frozen=True)
class Comparison(Series):
    base: Summary | None
    new: Summary | None
    ratio: float  # median(NEW) / median(BASE); NaN when undefined
    ratio_low: float
    ratio_high: float
    p_value: float
    verdict: Verdict
    reason: str

    @property
    def change(self) -> float:
        return self.ratio - 1

    def to_json(self) -> dict[str, object]:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            **self.series_json(),
            "base": {"n": self.base.n, "median": self.base.median} if self.base else None,
            "new": {"n": self.new.n, "median": self.new.median} if self.new else None,
            "ratio": finite(self.ratio),
            "ratio_ci": [finite(self.ratio_low), finite(self.ratio_high)],
            "p_value": self.p_value,
            "verdict": self.verdict,
            "reason": self.reason,
        }


def judge(
    base: Sequence[float],
    new: Sequence[float],
    better: Better,
    threshold: float,
    alpha: float,
) -> tuple[float, float, float, float, Verdict, str]:
    """(ratio, ratio low, ratio high, p, verdict, reason) for two non-empty samples."""
    base_median, new_median = summarize(base).median, summarize(new).median
    p = mann_whitney_p(base, new)
    if base_median == 0:
        nan = float("nan")
        return nan, nan, nan, p, "unchanged", "BASE median is 0: no ratio to judge"
    ratio = new_median / base_median
    low, high = ratio_of_medians_ci(base, new)
    change = ratio - 1
    moved = f"median {change:+.1%}"
    if abs(change) <= threshold:
        return ratio, low, high, p, "unchanged", f"{moved}, within ±{threshold:.0%}"
    if p >= alpha:
        reason = f"{moved}, not significant (p={p:.2g} ≥ {alpha:g})"
        if smallest_p(len(base), len(new)) >= alpha:
            reason += f"; {len(base)} and {len(new)} repeats can never reach p<{alpha:g}"
        return ratio, low, high, p, "unchanged", reason
    worse = change > 0 if better == "lower" else change < 0
    verdict: Verdict = "regressed" if worse else "improved"
    return ratio, low, high, p, verdict, f"{moved} ({better} is better), p={p:.2g}"


def compare_series(
    base: Sequence[Sample], new: Sequence[Sample], threshold: float, alpha: float
) -> Comparison:
    first = new[0]
    base_values = [s.value for s in base if s.value is not None]
    new_values = [s.value for s in new if s.value is not None]
    nan = float("nan")
    if not new_values:
        failure = next((s.failure for s in new if s.failure), "no values")
        verdict: Verdict = "regressed" if base_values else "unchanged"
        ratio, low, high, p, reason = nan, nan, nan, 1.0, f"every repeat failed in NEW: {failure}"
    elif not base_values:
        ratio, low, high, p = nan, nan, nan, 1.0
        verdict, reason = "unchanged", "every repeat failed in BASE: nothing to compare with"
    else:
        ratio, low, high, p, verdict, reason = judge(
            base_values, new_values, first.better, threshold, alpha
        )
        failed = len(new) - len(new_values)
        if failed:
            reason += f"; {failed} of {len(new)} repeats failed in NEW"
    return Comparison(
        **Series.fields_of(first),
        base=summarize(base_values) if base_values else None,
        new=summarize(new_values) if new_values else None,
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        p_value=p,
        verdict=verdict,
        reason=reason,
    )


# Two runs.


@dataclass(frozen=True)
class RunComparison:
    base: Run
    new: Run
    threshold: float
    alpha: float
    comparisons: list[Comparison]
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)
    refused_for: list[Difference] = field(default_factory=list)  # non-empty only when forced
    also_differs: list[Difference] = field(default_factory=list)

    @property
    def regressed(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict == "regressed"]

    def to_json(self) -> dict[str, object]:
        def run_facts(run: Run) -> dict[str, object]:
            return {"run": run.id, "complete": run.complete, "command": run.command}

        return {
            "base": run_facts(self.base),
            "new": run_facts(self.new),
            "threshold": self.threshold,
            "alpha": self.alpha,
            "forced_despite": [vars(d) for d in self.refused_for],
            "also_differs": [vars(d) for d in self.also_differs],
            "regressed": len(self.regressed),
            "comparisons": [c.to_json() for c in self.comparisons],
            "only_in_base": self.only_in_base,
            "only_in_new": self.only_in_new,
        }


def compare_runs(
    base: Run,
    base_samples: Sequence[Sample],
    new: Run,
    new_samples: Sequence[Sample],
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    force: bool = False,
) -> RunComparison:
    """Compares every series both runs hold; raises IncomparableRuns unless conditions match."""
    base_groups, new_groups = group_series(base_samples), group_series(new_samples)
    shared = [key for key in new_groups if key in base_groups]
    blocking, informational = metadata_differences(base, new, {key[1] for key in shared})
    if blocking and not force:
        raise IncomparableRuns(blocking)
    return RunComparison(
        base=base,
        new=new,
        threshold=threshold,
        alpha=alpha,
        comparisons=[
            compare_series(base_groups[key], new_groups[key], threshold, alpha) for key in shared
        ],
        only_in_base=[Series.of(g[0]).label for k, g in base_groups.items() if k not in new_groups],
        only_in_new=[Series.of(g[0]).label for k, g in new_groups.items() if k not in base_groups],
        refused_for=blocking,
        also_differs=informational,
    )


def compare_stored(
    store: Store, base_id: str, new_id: str, threshold: float, alpha: float, force: bool
) -> RunComparison:
    base, new = store.run(base_id), store.run(new_id)
    return compare_runs(
        base, store.samples(base.id), new, store.samples(new.id), threshold, alpha, force
    )


# Showing it.

VERDICT_STYLE = {"regressed": "bold red", "improved": "green", "unchanged": "dim"}


def comparison_table(result: RunComparison) -> Table:
    table = Table(
        title=f"{result.base.id} (BASE) → {result.new.id} (NEW), "
        f"threshold {result.threshold:.0%}, alpha {result.alpha:g}",
        title_justify="left",
    )
    for column in ("suite", "target", "metric", "params", "BASE", "NEW", "ratio [95% CI]", "p"):
        table.add_column(column)
    table.add_column("verdict")
    table.add_column("why")
    for c in result.comparisons:
        arrow = "↓" if c.better == "lower" else "↑"
        ratio = (
            f"{c.ratio:.3f} [{c.ratio_low:.3f}, {c.ratio_high:.3f}]"
            if math.isfinite(c.ratio)
            else "—"
        )
        table.add_row(
            c.suite,
            c.target,
            f"{c.metric} {arrow}",
            " ".join(f"{k}={v}" for k, v in c.params.items()),
            format_value(c.base.median, c.unit) if c.base else "failed",
            format_value(c.new.median, c.unit) if c.new else "failed",
            ratio,
            f"{c.p_value:.2g}",
            f"[{VERDICT_STYLE[c.verdict]}]{c.verdict}[/]",
            c.reason,
        )
    return table


def comparison_notes(result: RunComparison) -> list[str]:
    notes = []
    for run, role in ((result.base, "BASE"), (result.new, "NEW")):
        if not run.complete:
            notes.append(f"{role} {run.id} is {run.status}: only what it measured is compared")
    if result.refused_for:
        notes.append(
            "compared despite: " + "; ".join(str(d) for d in result.refused_for) + " (--force)"
        )
    if result.also_differs:
        notes.append("also differs: " + "; ".join(str(d) for d in result.also_differs))
    if result.only_in_base:
        notes.append("only in BASE: " + ", ".join(result.only_in_base))
    if result.only_in_new:
        notes.append("only in NEW: " + ", ".join(result.only_in_new))
    if not result.comparisons:
        notes.append("the runs share no series: nothing was compared")
    return notes


# The command, and what the other commands share with it.


def parse_fraction(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    stripped = text.strip()
    try:
        value = float(stripped[:-1]) / 100 if stripped.endswith("%") else float(stripped)
    except ValueError:
        raise click.BadParameter(f"{text!r}: write a percentage like 5% or a fraction") from None
    if not 0 <= value < 10:
        raise click.BadParameter(f"{text!r} is not a sensible threshold")
    return value


def console(stderr: bool = False) -> Console:
    # Off a terminal rich would wrap tables at 80 columns; logs and CI read better unwrapped.
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 200)


@contextmanager
def cli_store(ctx: click.Context) -> Iterator[Store]:
    """The store named by `bench --store` (ctx.obj), checked as `bench run` checks it: a file
    that is no healthy store exits 2, other store errors 1. For history, nightly, report."""
    from harness.cli import cli_store as checked_store  # loaded already: bench starts there

    with checked_store(ctx) as store:
        yield store


@click.command(name="compare")
@click.argument("base_id", metavar="BASE")
@click.argument("new_id", metavar="NEW")
@click.option("--threshold", default="5%", show_default=True, help="Smallest change that counts.")
@click.option("--alpha", default=DEFAULT_ALPHA, show_default=True, type=click.FloatRange(0, 1))
@click.option("--force", is_flag=True, help="Compare even across hosts, CPU counts or accels.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def compare_command(
    ctx: click.Context,
    base_id: str,
    new_id: str,
    threshold: str,
    alpha: float,
    force: bool,
    fmt: str,
) -> None:
    """Compare two stored runs; exit 1 if anything regressed, 2 if they are incomparable.
    BASE and NEW are run ids, prefixes of them, last or last~N (the Nth before the newest)."""
    with cli_store(ctx) as store:
        try:
            result = compare_stored(store, base_id, new_id, parse_fraction(threshold), alpha, force)
        except IncomparableRuns as exc:
            console(stderr=True).print(f"[red]error:[/] {exc}")
            sys.exit(EXIT_INCOMPARABLE)
    if fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        out = console()
        out.print(comparison_table(result))
        for note in comparison_notes(result):
            out.print(note)
        out.print(
            f"{len(result.regressed)} regressed, "
            f"{sum(c.verdict == 'improved' for c in result.comparisons)} improved, "
            f"{sum(c.verdict == 'unchanged' for c in result.comparisons)} unchanged"
        )
    if result.regressed:
        sys.exit(EXIT_REGRESSED)
