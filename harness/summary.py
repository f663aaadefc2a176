"""Per-series results of a run: what `bench run` prints at its end and `bench show` prints later.

A series is one (suite, target, metric, params) combination; its row carries the statistics of
the values measured and the count of failed repeats. The JSON form is a public, stable format.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.markup import escape
from rich.table import Table

from harness.model import Run, Sample, Series, group_series
from harness.stats import Summary, summarize


@dataclass(frozen=True)
class ResultRow(Series):
    failed: int
    summary: Summary | None  # None when every repeat failed
    failures: tuple[str, ...]  # distinct reasons, for the reader who asks why

    @property
    def n(self) -> int:
        return self.summary.n if self.summary else 0

    def to_json(self) -> dict[str, object]:
        s = self.summary
        return {
            **self.series_json(),
            "n": self.n,
            "failed": self.failed,
            "median": s.median if s else None,
            "q1": s.q1 if s else None,
            "q3": s.q3 if s else None,
            "ci_low": s.ci_low if s else None,
            "ci_high": s.ci_high if s else None,
        }


def result_rows(samples: Iterable[Sample]) -> list[ResultRow]:
    """One row per series, in the order each was first measured."""
    rows = []
    for series in group_series(samples).values():
        values = [s.value for s in series if s.value is not None]
        failures = [s.failure for s in series if s.failure is not None]
        rows.append(
            ResultRow(
                **Series.fields_of(series[0]),
                failed=len(failures),
                summary=summarize(values) if values else None,
                failures=tuple(dict.fromkeys(failures)),
            )
        )
    return rows


def run_json(run: Run, rows: Sequence[ResultRow]) -> dict[str, object]:
    """The stable JSON form of `bench show --format json`."""
    return {**run.to_json(), "results": [row.to_json() for row in rows]}


def format_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 10 else f"{value:.2f} s"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "lines":
        return f"{value:,.0f} lines"
    if abs(value) >= 1e4:  # no exponent for large rates: 13,310 Mbit/s, not 1.331e+04
        return f"{value:,.0f} {unit}"
    return f"{value:.4g} {unit}"


def summary_table(rows: Sequence[ResultRow], title: str) -> Table:
    """The rows as a table under `title`; the title and the cells are text, brackets and all
    (rich would take a command's "[complete]" or a parameter's "[x]" for markup)."""
    table = Table(title=escape(title), title_justify="left")
    for column in ("suite", "target", "metric", "params", "median", "IQR", "95% CI", "n", "failed"):
        table.add_column(column, justify="right" if column in ("n", "failed") else "left")
    for row in rows:
        params = " ".join(f"{k}={v}" for k, v in row.params.items())
        arrow = "↓" if row.better == "lower" else "↑"
        s = row.summary
        stats = (
            [
                format_value(s.median, row.unit),
                format_value(s.iqr, row.unit),
                f"{format_value(s.ci_low, row.unit)} .. {format_value(s.ci_high, row.unit)}",
            ]
            if s
            else ["—", "—", "—"]
        )
        failed = str(row.failed) if row.failed else ""
        names = (row.suite, row.target, f"{row.metric} {arrow}", params)
        table.add_row(*map(escape, names), *stats, str(row.n), failed)
    return table
