"""The report's figures, drawn from whatever samples the selected runs hold.

Each metric of a suite gets the figures its samples support:
  - overview (harness.report.bars): the median per target as a bar with its 95 % bootstrap
    interval, every sample as a dot, parameters as colours and panels;
  - against a parameter: for every numeric parameter swept over two or more values (memory,
    block size, clients, instances, threads), the median against it, one line per target, with
    published values beside ours where they match (Fig. 5 for boot time against memory);
  - a CDF, for per-wake-up distributions (metrics named *lateness* or *jitter*; Fig. 7b);
Every figure carries a footer naming its runs, targets, accelerators and n.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import seaborn as sns  # type: ignore[import-untyped]
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.typing import ColorType

from harness.compare import target_accel
from harness.model import Run, Sample
from harness.report.legibility import problems_drawn
from harness.report.published import series_for
from harness.stats import summarize

DPI = 100
BYTE_PARAMS = frozenset({"block_size"})  # parameters in bytes, ticked as 4K, 1M
LOG_SPAN = 30.0  # max / min beyond which an axis is drawn logarithmic
DISTRIBUTION = re.compile(r"lateness|jitter")
PALETTE = "colorblind"


@dataclass(frozen=True)
class Drawn:
    path: Path  # the PNG, inside the site
    title: str
    caption: str
    problems: tuple[str, ...] = ()  # what harness.report.legibility found hard to read
    width: int = 0  # pixels
    height: int = 0


def short(run_id: str) -> str:
    return run_id.split("-")[0][:15] + "…" if len(run_id) > 18 else run_id


def params_label(params: dict[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()))


def sample_frame(runs: Sequence[tuple[Run, Sequence[Sample]]]) -> pd.DataFrame:
    """One row per measured value; each parameter also gets its own column, `param:NAME`."""
    rows = []
    for run, samples in runs:
        for s in samples:
            if s.value is None:
                continue
            row: dict[str, object] = {
                "run": run.id,
                "target": s.target,
                "accel": str(target_accel(run, s.target) or "unknown"),
                "metric": s.metric,
                "unit": s.unit,
                "better": s.better,
                "params": params_label(dict(s.params)),
                "value": s.value,
            }
            row.update({f"param:{k}": v for k, v in s.params.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def display_unit(unit: str, values: Sequence[float]) -> tuple[float, str]:
    """(factor, label): seconds under one as ms, bytes as MiB, the rest as they are."""
    if unit == "s":
        return (1000.0, "ms") if max(values, default=0) < 1 else (1.0, "s")
    if unit == "bytes":
        return 1 / 2**20, "MiB"
    return 1.0, unit


def provenance(frame: pd.DataFrame) -> str:
    """Which runs, targets (with accel) and how many samples a figure shows."""
    runs = ", ".join(dict.fromkeys(frame["run"]))
    targets = ", ".join(
        f"{t} ({a})" for t, a in dict.fromkeys(zip(frame["target"], frame["accel"], strict=True))
    )
    counts = frame.groupby(["run", "target", "params"]).size()
    n = str(counts.min()) if counts.min() == counts.max() else f"{counts.min()} to {counts.max()}"
    return f"runs: {runs} · targets: {targets} · n = {n} per series"


def direction(better: str) -> str:
    return "lower is better" if better == "lower" else "higher is better"


class FigureWriter:
    """Saves figures as numbered PNGs under the site's img/ directory."""

    def __init__(self, site: Path, prefix: str) -> None:
        self.dir = site / "img"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.count = 0
        self.drawn: list[Drawn] = []

    def save(self, fig: Figure, title: str, caption: str) -> Drawn:
        """Saves with the caption below the plots, room made for as many lines as it wraps to,
        and says what legibility found wrong with it."""
        fig.dpi = DPI
        footer = fig.text(0.01, 0.01, caption, fontsize=7, color="#444", wrap=True)
        canvas = FigureCanvasAgg(fig)
        renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
        room = (footer.get_window_extent(renderer).height + 6) / fig.bbox.height
        fig.tight_layout(rect=(0, min(room, 0.4), 1, 1))
        # Drawn once: measured for legibility, and that same drawing written as the PNG.
        canvas.draw()  # type: ignore[no-untyped-call]
        found = tuple(problems_drawn(fig, canvas.get_renderer()))  # type: ignore[no-untyped-call]
        self.count += 1
        path = self.dir / f"{self.prefix}-{self.count:02d}.png"
        buffer = np.asarray(canvas.buffer_rgba())  # type: ignore[no-untyped-call]
        imsave(path, buffer)
        width, height = (round(v) for v in fig.bbox.size)
        self.drawn.append(Drawn(path, title, caption, found, width, height))
        return self.drawn[-1]


def outside_legend(ax: Axes, handles: Sequence[Artist] | None = None) -> None:
    """The legend right of the plot, where it hides no data: of `handles`, or of what the
    axes drew with a label."""
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    ax.legend(
        handles=list(handles),
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        borderaxespad=0,
    )


def new_figure(width: float = 8.0, height: float = 4.2) -> tuple[Figure, Axes]:
    sns.set_theme(style="whitegrid", context="notebook")
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


PUBLISHED_MARKERS = ("X", "s", "^", "D")


def plot_published(
    ax: Axes, xs: Sequence[float], ys: Sequence[float], system: str, index: int = 0
) -> None:
    """Published values: black markers on a dashed line, labelled as published."""
    ax.plot(
        xs,
        ys,
        color="black",
        marker=PUBLISHED_MARKERS[index % len(PUBLISHED_MARKERS)],
        linestyle="--" if index % 2 == 0 else ":",
        markersize=7,
        label=f"published: {system}",
    )


def errorbars(
    ax: Axes,
    x: Sequence[float],
    values: Sequence[Sequence[float]],
    colour: ColorType,
    factor: float,
) -> list[float]:
    """Medians with their bootstrap interval from harness.stats; returns the medians."""
    summaries = [summarize(v) for v in values]
    medians = [s.median * factor for s in summaries]
    low = [(s.median - s.ci_low) * factor for s in summaries]
    high = [(s.ci_high - s.median) * factor for s in summaries]
    ax.errorbar(x, medians, yerr=[low, high], fmt="none", ecolor=colour, capsize=4, lw=1.5)
    return medians


def measured_twice(frame: pd.DataFrame, columns: list[str]) -> bool:
    """Whether several runs measured the same series, so that figures must tell runs apart."""
    return bool((frame.groupby(columns)["run"].nunique() > 1).any())


def numeric_sweeps(metric: pd.DataFrame) -> list[str]:
    """Numeric parameters that take two or more values on one target with every other parameter
    the same: worth a line against them. (A count that differs only because the kind of thread
    differs is no sweep.)"""
    params = [column for column in metric.columns if column.startswith("param:")]
    swept = []
    for column in params:
        values = pd.to_numeric(metric[column], errors="coerce")
        if not values.notna().all() or values.nunique() < 2:
            continue
        others = ["target", *(c for c in params if c != column)]
        per_group = metric.assign(_v=values).groupby(others, dropna=False)["_v"].nunique()
        if (per_group >= 2).any():
            swept.append(column.removeprefix("param:"))
    return swept


MAX_LINES = 10  # more, and the palette repeats and the legend outgrows the plot


def against_param_figures(
    writer: FigureWriter, suite: str, metric: pd.DataFrame, param: str
) -> list[Drawn]:
    """The metric against `param`: one figure, or, when that would hold more than MAX_LINES
    lines, one per value of the parameter that splits them best (mode=direct, mode=buffered)."""
    column = f"param:{param}"
    lines = metric.groupby(["target", "params"]).ngroups / max(metric[column].nunique(), 1)
    if lines <= MAX_LINES:
        return [against_param(writer, suite, metric, param)]
    splits = [
        c
        for c in metric.columns
        if c.startswith("param:")
        and c != column
        and 1 < metric[c].nunique() <= 4
        and metric[c].notna().all()  # a split must not drop the rows without the parameter
        and pd.to_numeric(metric[c], errors="coerce").isna().all()
    ]
    if not splits:
        return [against_param(writer, suite, metric, param)]
    split = min(splits, key=lambda c: metric[c].nunique())
    return [
        against_param(writer, suite, metric[metric[split] == value], param)
        for value in dict.fromkeys(metric[split].dropna())
    ]


def against_param(writer: FigureWriter, suite: str, metric: pd.DataFrame, param: str) -> Drawn:
    first = metric.iloc[0]
    column = f"param:{param}"
    factor, unit = display_unit(first["unit"], list(metric["value"]))
    # Lines are told apart by the parameters that differ between them; one value shared by
    # every line (accel=tcg, seconds=2) goes in the caption, not in each label.
    # A parameter that is one value per target (accel, memory) describes the target: the
    # caption names it, the line's label need not.
    others = [
        c
        for c in metric.columns
        if c.startswith("param:")
        and c != column
        and metric[c].astype(str).nunique() > 1
        and (metric.astype({c: str}).groupby("target")[c].nunique() > 1).any()
    ]
    shared = [
        f"{c[6:]}={metric[c].iloc[0]}"
        for c in metric.columns
        if c.startswith("param:") and c != column and c not in others and metric[c].notna().all()
    ]
    frame = metric.assign(x=pd.to_numeric(metric[column]))
    # A sweep spread over several runs is one line; runs are named only if they overlap.
    name_runs = measured_twice(frame, ["target", "params"])
    frame["line"] = [
        " · ".join(str(p) for p in parts if p)
        for parts in zip(
            frame["target"],
            *(frame[c].map(lambda v, c=c: "" if pd.isna(v) else f"{c[6:]}={v}") for c in others),
            frame["run"].map(short) if name_runs else [""] * len(frame),
            strict=True,
        )
    ]
    lines = list(dict.fromkeys(frame["line"]))
    colours = dict(zip(lines, sns.color_palette(PALETTE, len(lines)), strict=True))
    # Tall enough for the legend beside it: a line per series and published system.
    fig, ax = new_figure(height=max(4.2, 0.2 * (len(lines) + 3) + 1.6))
    for line in lines:
        rows = frame[frame["line"] == line]
        xs = sorted(rows["x"].unique())
        medians = errorbars(
            ax, xs, [list(rows[rows["x"] == x]["value"]) for x in xs], colours[line], factor
        )
        ax.plot(xs, medians, marker="o", color=colours[line], label=line)
    title = f"{suite}: {first['metric']} against {param} ({direction(first['better'])})"
    if shared:
        title += f"\n{', '.join(shared)}"
    caption = provenance(metric)
    if shared:
        caption += " · every line: " + ", ".join(shared)
    values = {
        c[6:]: set(metric[c].dropna().astype(str)) for c in metric.columns if c.startswith("param:")
    }
    sources: dict[str, None] = {}
    marker = 0  # each published system its own marker, across series
    published_xs: set[float] = set()
    for published in series_for(suite, first["metric"], param, values):
        for system in dict.fromkeys(p.system for p in published.points):
            points = [p for p in published.points if p.system == system]
            xs = [p.x for p in points if p.x is not None]
            published_xs.update(xs)
            plot_published(ax, xs, [p.value * factor for p in points], system, marker)
            marker += 1
        sources[published.source] = None
    for source in sources:
        caption += f" · published: {source}"
    if max([frame["x"].max(), *published_xs]) >= 8 * frame["x"].min() > 0:
        ax.set_xscale("log", base=2)
    drawn = [float(v) for line in ax.get_lines() for v in np.asarray(line.get_ydata())]
    if spans_orders(drawn):
        log_y(ax)
    # The values measured, and those the published points sit at, as ticks.
    swept = sorted({*frame["x"].unique(), *published_xs})
    if len(swept) <= 16:  # the values measured, as written, rather than powers of two
        labels = [tick_label(v, binary=param in BYTE_PARAMS) for v in swept]
        ax.set_xticks(swept, labels, rotation=45 if len(swept) > 4 else 0)
        ax.minorticks_off()
    ax.set_xlabel(param)
    ax.set_ylabel(f"{first['metric']} ({unit})")
    ax.set_title(title + "\nmedian and 95 % bootstrap CI per point", fontsize=10)
    outside_legend(ax)
    return writer.save(fig, title, caption)


def log_y(ax: Axes) -> None:
    """A logarithmic y axis labelled at 1, 2 and 5 times each power of ten, written plainly:
    with only powers of ten, a span of one or two decades shows a single label."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def spans_orders(values: Sequence[float], span: float = LOG_SPAN) -> bool:
    """Whether positive values span so many orders of magnitude (max over min beyond `span`)
    that a linear axis would squash the small ones to nothing."""
    positive = [float(v) for v in values if float(v) > 0]
    return len(positive) == len(values) > 1 and max(positive) > span * min(positive)


def tick_label(value: float, binary: bool = False) -> str:
    """A swept value as written; counts from ten thousand as 10k, 1M, 20M; a size in bytes
    (binary) of whole KiB as 4K, 128K, 4M."""
    if not binary:
        if value >= 10_000 and value == int(value):
            whole = int(value)
            if whole % 1_000_000 == 0:
                return f"{whole // 1_000_000}M"
            if whole % 1000 == 0:
                return f"{whole // 1000}k"
        return f"{value:g}"
    if value >= 1024 and value == int(value) and int(value) % 1024 == 0:
        kib = int(value) // 1024
        return f"{kib // 1024}M" if kib % 1024 == 0 else f"{kib}K"
    return f"{value:g}"


def cdf(writer: FigureWriter, suite: str, metric: pd.DataFrame) -> Drawn:
    first = metric.iloc[0]
    factor, unit = display_unit(first["unit"], list(metric["value"]))
    frame = metric.assign(scaled=metric["value"] * factor)
    fig, ax = new_figure()
    targets = list(dict.fromkeys(frame["target"]))
    for target, colour in zip(targets, sns.color_palette(PALETTE, len(targets)), strict=True):
        rows = frame[frame["target"] == target]
        sns.ecdfplot(x=rows["scaled"], color=colour, label=target, ax=ax)
    caption = provenance(metric)
    for published in series_for(suite, first["metric"], None):
        for p in published.points:  # x is the fraction of wake-ups, value the lateness
            plot_published(ax, [p.value * factor], [p.x or 0.0], p.system)
        caption += f" · published: {published.source}"
    ax.set_xlabel(f"{first['metric']} ({unit})")
    ax.set_ylabel("fraction of samples")
    title = f"{suite}: {first['metric']} CDF ({direction(first['better'])})"
    ax.set_title(title, fontsize=10)
    outside_legend(ax)
    return writer.save(fig, title, caption)


@dataclass(frozen=True)
class QuantileCurve:
    """One series' distribution: its quantiles (evenly spaced fractions), pooled over repeats by
    taking each quantile's median, and where it came from."""

    label: str
    run: str
    accel: str
    repeats: int
    quantiles: tuple[float, ...]


def quantile_cdf(
    writer: FigureWriter, suite: str, metric: str, curves: Sequence[QuantileCurve]
) -> Drawn:
    """The CDF of every wake-up's lateness, from the quantiles each repeat kept (Fig. 7b)."""
    factor, unit = display_unit("s", [v for c in curves for v in c.quantiles])
    fig, ax = new_figure()
    for curve, colour in zip(curves, sns.color_palette(PALETTE, len(curves)), strict=True):
        last = len(curve.quantiles) - 1
        fractions = [i / last for i in range(last + 1)]
        ax.plot([v * factor for v in curve.quantiles], fractions, color=colour, label=curve.label)
    caption = "runs: " + ", ".join(dict.fromkeys(c.run for c in curves))
    caption += " · " + ", ".join(f"{c.label} ({c.accel}, n = {c.repeats})" for c in curves)
    for published in series_for(suite, metric, None):
        for p in published.points:  # x is the fraction of wake-ups, value the lateness
            plot_published(ax, [p.value * factor], [p.x or 0.0], p.system)
        caption += f" · published: {published.source}"
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel(f"lateness of each wake-up ({unit})")
    ax.set_ylabel("fraction of wake-ups")
    title = f"{suite}: wake-up lateness CDF (lower is better)"
    ax.set_title(title, fontsize=10)
    outside_legend(ax)
    return writer.save(fig, title, caption)


def is_distribution(metric: str) -> bool:
    return DISTRIBUTION.search(metric) is not None
