"""Grouped bar charts that stay legible whatever the parameters: categories on x, one parameter
as colour (with a legend), up to two more as a grid of small panels, the rest as separate figures.

Each bar is a median with its 95 % bootstrap interval; each sample is a dot. Published values
(rows whose `source` column is "published") are drawn as hatched grey bars in the legend as such,
never mixed with ours. Values that span orders of magnitude get a log axis.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import seaborn as sns  # type: ignore[import-untyped]
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.typing import ColorType

from harness.report.figures import (
    PALETTE,
    Drawn,
    FigureWriter,
    direction,
    display_unit,
    errorbars,
    log_y,
    measured_twice,
    outside_legend,
    provenance,
    short,
    spans_orders,
)
from harness.stats import summarize

PUBLISHED = "published"
MAX_HUES = 8  # more colours than this and the palette no longer tells them apart
MAX_PANELS = 4  # per row or column of the grid
TICK_WIDTH = 14  # characters per line of a category label


@dataclass(frozen=True)
class Facets:
    """Which column of the frame each visual channel shows."""

    x: str
    hue: str | None = None
    col: str | None = None
    row: str | None = None

    @property
    def used(self) -> list[str]:
        return [c for c in (self.x, self.hue, self.col, self.row) if c]


def name_of(column: str) -> str:
    """A parameter's name as the user wrote it (frames keep parameters as `param:NAME`)."""
    return column.removeprefix("param:")


def values_of(frame: pd.DataFrame, column: str) -> list[str]:
    return list(dict.fromkeys(frame[column].astype(str)))


def choose_facets(
    frame: pd.DataFrame, varying: Sequence[str], x: str = "target"
) -> tuple[Facets, list[str]]:
    """Colour for the varying column with the fewest values, then panel columns and rows; the
    columns that fit none of them are returned, for the caller to draw one figure per value."""
    by_count = sorted(varying, key=lambda c: (frame[c].astype(str).nunique(), c))
    hue = next((c for c in by_count if frame[c].astype(str).nunique() <= MAX_HUES), None)
    rest = [c for c in by_count if c != hue]
    panels = [c for c in rest if frame[c].astype(str).nunique() <= MAX_PANELS][:2]
    col = panels[0] if panels else None
    row = panels[1] if len(panels) > 1 else None
    left = [c for c in rest if c not in (col, row)]
    return Facets(x=x, hue=hue, col=col, row=row), left


def wrap_label(text: str) -> str:
    return (
        "\n".join(textwrap.wrap(text, TICK_WIDTH, break_on_hyphens=False, break_long_words=False))
        or text
    )


def bars(
    writer: FigureWriter,
    frame: pd.DataFrame,
    facets: Facets,
    *,
    title: str,
    ylabel: str,
    caption: str,
    factor: float = 1.0,
) -> Drawn:
    """One grouped, faceted bar chart of `frame` (columns `value`, the facet columns, and
    optionally `source`)."""
    frame = frame.assign(**{c: frame[c].astype(str) for c in facets.used})
    if "source" not in frame:
        frame = frame.assign(source="ours")
    xs = values_of(frame, facets.x)
    hues = values_of(frame, facets.hue) if facets.hue else [""]
    cols = values_of(frame, facets.col) if facets.col else [""]
    rows = values_of(frame, facets.row) if facets.row else [""]
    colours = dict(zip(hues, sns.color_palette(PALETTE, len(hues)), strict=True))
    per_x = len(hues) * (2 if (frame["source"] == PUBLISHED).any() else 1)
    panel_width = max(3.0, min(0.35 * per_x, 1.2) * len(xs) + 1.2)
    sns.set_theme(style="whitegrid", context="notebook")
    fig = Figure(figsize=(min(panel_width * len(cols) + 2.8, 16), 3.2 * len(rows) + 1.4))
    axes = fig.subplots(len(rows), len(cols), sharey=True, squeeze=False)
    log = spans_orders(list(frame["value"]))
    for r, row_value in enumerate(rows):
        for c, col_value in enumerate(cols):
            ax = axes[r][c]
            panel = frame
            if facets.row:
                panel = panel[panel[facets.row] == row_value]
            if facets.col:
                panel = panel[panel[facets.col] == col_value]
            _draw_panel(ax, panel, facets, xs, hues, colours, factor)
            heading = [
                f"{name_of(f)}={v}"
                for f, v in ((facets.col, col_value), (facets.row, row_value))
                if f
            ]
            if heading:
                ax.set_title(", ".join(heading), fontsize=9)
            ax.set_xlabel("")
            ax.set_ylabel(ylabel if c == 0 else "")
            if log:
                log_y(ax)
    _legend(axes[0][-1], frame, facets, hues, colours)
    fig.suptitle(title, fontsize=10)
    return writer.save(fig, title, caption)


def _draw_panel(
    ax: Axes,
    panel: pd.DataFrame,
    facets: Facets,
    xs: list[str],
    hues: list[str],
    colours: dict[str, ColorType],
    factor: float,
) -> None:
    # Only the categories this panel has, and in each only the bars it has, centred: an
    # absent combination leaves no gap.
    xs = [x for x in xs if (panel[facets.x] == x).any()]
    rng = np.random.default_rng(0)
    for i, x in enumerate(xs):
        here = panel[panel[facets.x] == x]
        slots = [
            (hue, source)
            for hue in hues
            for source in ("ours", PUBLISHED)
            if _bar_rows(here, facets, hue, source).size
        ]
        width = 0.8 / max(len(slots), 2)
        for j, (hue, source) in enumerate(slots):
            chosen = _bar_rows(here, facets, hue, source)
            position = i + width * (j - (len(slots) - 1) / 2)
            values = [float(v) for v in chosen["value"]]
            if source == PUBLISHED:
                median = summarize(values).median * factor
                ax.bar(position, median, width, color="#bbbbbb", hatch="//", alpha=0.9)
                continue
            (median,) = errorbars(ax, [position], [values], "black", factor)
            ax.bar(position, median, width, color=colours[hue], alpha=0.45)
            jitter = rng.uniform(-width / 4, width / 4, len(values))
            dots = [v * factor for v in values]
            ax.scatter(position + jitter, dots, s=9, color=colours[hue], zorder=3, linewidths=0)
    labels = [wrap_label(x) for x in xs]
    rotate = len(xs) > 3 and max(len(line) for x in labels for line in x.split("\n")) > 8
    ax.set_xticks(
        range(len(xs)),
        labels,
        rotation=30 if rotate else 0,
        ha="right" if rotate else "center",
        fontsize=8,
    )
    ax.set_xlim(-0.6, len(xs) - 0.4)


def _bar_rows(here: pd.DataFrame, facets: Facets, hue: str, source: str) -> pd.DataFrame:
    chosen = here[here["source"] == source]
    return chosen[chosen[facets.hue] == hue] if facets.hue else chosen


def _legend(
    ax: Axes, frame: pd.DataFrame, facets: Facets, hues: list[str], colours: dict[str, ColorType]
) -> None:
    handles: list[Patch] = []
    if facets.hue:
        handles = [
            Patch(
                color=colours[h],
                alpha=0.6,
                label=f"{name_of(facets.hue)}={h}" if h != "—" else f"no {name_of(facets.hue)}",
            )
            for h in hues
        ]
    if (frame["source"] == PUBLISHED).any():
        handles.append(
            Patch(facecolor="#bbbbbb", hatch="//", label="published (not measured here)")
        )
    if handles:
        outside_legend(ax, handles)


def overview(writer: FigureWriter, suite: str, metric: pd.DataFrame) -> list[Drawn]:
    """The metric per target: parameters that vary become colours and panels, and, past what
    one figure can show legibly, separate figures."""
    first = metric.iloc[0]
    factor, unit = display_unit(first["unit"], list(metric["value"]))
    params = [c for c in metric.columns if c.startswith("param:")]
    frame = metric.assign(
        **{c: metric[c].map(lambda v: "—" if pd.isna(v) else str(v)) for c in params}
    )
    # A parameter that is one value per target (memory=512 on the VMs, accel) describes the
    # target rather than a sweep: it goes in the caption, not on its own axis.
    varying = [c for c in params if (frame.groupby("target")[c].nunique() > 1).any()]
    shared = [
        f"{name_of(c)}={frame[c].iloc[0]}"
        for c in params
        if frame[c].nunique() == 1 and frame[c].iloc[0] != "—"
    ]
    # What describes each target, where targets differ: "unikernel-qemu: accel=tcg memory=512".
    described = [c for c in params if c not in varying and frame[c].nunique() > 1]
    per_target = []
    for target, rows in frame.groupby("target", sort=False):
        settings = [f"{name_of(c)}={rows[c].iloc[0]}" for c in described if rows[c].iloc[0] != "—"]
        if settings:
            per_target.append(f"{target}: {' '.join(settings)}")
    if measured_twice(metric, ["target", "params"]):
        frame["run"] = frame["run"].map(short)
        varying.append("run")
    facets, split = choose_facets(frame, varying)
    title = f"{suite}: {first['metric']} per target ({direction(first['better'])})"
    drawn = []
    groups = frame.groupby(split, sort=False) if split else [((), frame)]
    for key, group in groups:
        keys = key if isinstance(key, tuple) else (key,)
        named = ", ".join(f"{name_of(c)}={v}" for c, v in zip(split, keys, strict=True))
        caption = provenance(metric.loc[group.index])
        if shared:
            caption += " · every bar: " + ", ".join(shared)
        if per_target:
            caption += " · " + "; ".join(per_target)
        drawn.append(
            bars(
                writer,
                group,
                facets,
                title=title + (f"\n{named}" if named else ""),
                ylabel=f"{first['metric']} ({unit})",
                caption=caption + " · bars: median, whiskers: 95 % bootstrap CI, dots: samples",
                factor=factor,
            )
        )
    return drawn
