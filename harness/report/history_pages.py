"""History pages: SUITE-history.html, every metric's per-run medians over the stored runs as
small multiples (one chart per metric and target), and a page per run in runs/ that each point
links to.

The charts are inline SVG rather than PNGs because only SVG lets a point be a link: matplotlib
writes a collection's urls as <a> elements around its markers. Text stays text (svg.fonttype
"none"), which keeps each chart a few kilobytes. Every chart of a page shares one x axis, one
evenly spaced position per stored run (as asv does: nightly gaps do not matter), so a change
that hit several metrics at once lines up down the page.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import matplotlib as mpl
import seaborn as sns  # type: ignore[import-untyped]
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from harness.history import History, Point, describe_step, histories
from harness.model import ParamValue, Run
from harness.report import figures
from harness.report.markup import KNOWN_SUITES, esc, page, results_table, runs_table, table
from harness.store import Store
from harness.summary import format_value, result_rows

MAX_LINES = 6  # more, and a small chart's lines and legend can no longer be told apart
WIDTH, HEIGHT, DPI = (
    3.6,
    2.4,
    100,
)  # inches; .small-multiples in markup.STYLE sizes columns to match
LEGEND_ROW = 0.17  # inches each legend row adds below the chart
MAX_TICKS = 4
LOG_RANGE = 100  # medians this many times apart get a log scale: two decades, two labels
MAX_LABEL = 48  # characters of a legend entry that fit the chart's width
MAX_TITLE = 38  # and of a line of its (larger) title
COLOURS = {"regressed": "#b00020", "improved": "#1b7a1b"}  # as the site's CSS classes
MIXED = "#444444"  # a label of steps some of which regressed and some improved
NEAR = 0.15  # of the runs on the x axis: steps this close share a label
LABEL_ROWS = 3  # rows the steps' labels take turns in
HEADROOM = 0.12  # of the y range, added above the data for each row of labels


def run_page_path(run_id: str) -> str:
    """The run's page, relative to the site root. Any character unsafe in a file name is
    percent-encoded, so an id with a slash is still one file in runs/."""
    return f"runs/{quote(run_id, safe='')}.html"


def run_href(run_id: str) -> str:
    """The link to a run's page from a page at the site root; quoted once more, because the
    browser decodes a link once before it asks for the file."""
    return quote(run_page_path(run_id))


# The charts.


@dataclass(frozen=True)
class Chart:
    metric: str
    target: str
    split: str  # the parameter value this chart holds when a target's lines were split
    unit: str  # of the y axis, shared by the metric's charts
    lines: tuple[History, ...]
    points: tuple[tuple[History, Point], ...]  # in the order of the markers and their links
    figure: Figure
    caption: str


def _order(value: ParamValue | None) -> tuple[int, float, str]:
    """Numbers in numeric order (threads=2 before threads=16), then the rest as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _differing(lines: Sequence[History]) -> list[str]:
    keys = sorted({k for h in lines for k in h.params})
    return [k for k in keys if len({repr(h.params.get(k)) for h in lines}) > 1]


def split_lines(lines: Sequence[History]) -> list[tuple[str, list[History]]]:
    """One chart's lines, or, when there are more than MAX_LINES, several charts split by the
    parameter with the fewest values (and again if a part is still too full)."""
    keys = _differing(lines)
    if len(lines) <= MAX_LINES or not keys:
        return [("", list(lines))]
    key = min(keys, key=lambda k: (len({repr(h.params.get(k)) for h in lines}), k))
    values = sorted({h.params.get(key) for h in lines}, key=_order)
    parts = []
    for value in values:
        named = f"{key}={value}" if value is not None else f"no {key}"
        for inner, part in split_lines([h for h in lines if h.params.get(key) == value]):
            parts.append((" · ".join(p for p in (named, inner) if p), part))
    return parts


def _labels(lines: Sequence[History]) -> list[str]:
    """Each line named by only what tells it apart: the parameters (and conditions) that
    differ between the lines; what they share goes in the caption."""
    keys = _differing(lines)
    where = [i for i in range(4) if len({str(h.conditions[i]) for h in lines}) > 1]
    labels = []
    for i, h in enumerate(lines):
        parts = [f"{k}={h.params[k]}" for k in keys if k in h.params]
        parts += [str(h.conditions[c]) for c in where]
        labels.append(_fit(" ".join(parts) or f"series {i + 1}"))
    return labels


def _fit(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _title(target: str, split: str) -> str:
    """The chart's title on at most two lines that fit its width."""
    lines = textwrap.wrap(
        " · ".join(p for p in (target, split) if p), MAX_TITLE, break_on_hyphens=False
    )
    if len(lines) > 2:
        lines = [lines[0], lines[1][: MAX_TITLE - 1] + "…"]
    return "\n".join(lines)


def _compact(value: float, _position: float | None = None) -> str:
    """Tick values without an offset or exponent: 13,310 rather than 1.331e4."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _date_format(runs: Sequence[Run]) -> str:
    """The shortest date format that tells the runs' ticks apart."""
    times = [datetime.fromtimestamp(r.started) for r in runs]
    if len({t.date() for t in times}) == 1:
        return "%H:%M" if len({t.strftime("%H:%M") for t in times}) == len(times) else "%H:%M:%S"
    return "%b %d" if len({t.year for t in times}) == 1 else "%b %Y"


def _ticks(runs: Sequence[Run]) -> tuple[list[int], list[str]]:
    """At most MAX_TICKS evenly spread ticks, so short dates never overlap on a small chart;
    a tick that would repeat its neighbour's label is left out."""
    n = len(runs)
    count = min(n, MAX_TICKS)
    chosen = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})
    fmt = _date_format(runs)
    ticks: list[int] = []
    labels: list[str] = []
    for i in chosen:
        label = datetime.fromtimestamp(runs[i].started).strftime(fmt)
        if not labels or label != labels[-1]:
            ticks.append(i)
            labels.append(label)
    return ticks, labels


def _xlabel(runs: Sequence[Run]) -> str:
    first, last = (
        datetime.fromtimestamp(r.started).strftime("%Y-%m-%d") for r in (runs[0], runs[-1])
    )
    span = f"on {first}" if first == last else f"{first} to {last}"
    return f"{len(runs)} runs, {span}, oldest first"


def draw_chart(
    metric: str,
    target: str,
    split: str,
    lines: Sequence[History],
    runs: Sequence[Run],
    factor: float,
    unit: str,
) -> Chart:
    """One small chart: a line per history, the markers one scatter whose points link to their
    runs, steps as dashed lines. `runs` is the page's shared x axis."""
    position = {run.id: i for i, run in enumerate(runs)}
    order = _differing(lines)
    lines = sorted(
        lines,
        key=lambda h: ([_order(h.params.get(k)) for k in order], [str(c) for c in h.conditions]),
    )
    labels = _labels(lines)
    colours = sns.color_palette(figures.PALETTE, len(lines))
    fig, ax = figures.new_figure(WIDTH, HEIGHT)
    fig.set_layout_engine("constrained")
    xs: list[float] = []
    ys: list[float] = []
    marker_colours = []
    points: list[tuple[History, Point]] = []
    marks: list[tuple[float, str, float]] = []  # (x, verdict, ratio) of each step
    for h, colour in zip(lines, colours, strict=True):
        line_xs = [float(position[p.run.id]) for p in h.points]
        line_ys = [p.median * factor for p in h.points]
        ax.plot(line_xs, line_ys, color=colour, lw=1.3)
        xs += line_xs
        ys += line_ys
        marker_colours += [colour] * len(h.points)
        points += [(h, p) for p in h.points]
        for step in h.steps:
            marks.append((line_xs[step.index], h.step_verdict(step), step.ratio))
    # One collection for every marker, so that its urls are in the order of `points`.
    markers = ax.scatter(xs, ys, color=marker_colours, s=22, zorder=3, edgecolors="white", lw=0.5)
    markers.set_urls([run_href(p.run.id) for _, p in points])
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ticks, tick_labels = _ticks(runs)
    ax.set_xticks(ticks, tick_labels)
    if figures.spans_orders(ys, LOG_RANGE):
        # Lines orders of magnitude apart (block sizes) would flatten the lower ones.
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.yaxis.set_major_formatter(FuncFormatter(_compact))
    rows = _mark_steps(ax, marks, len(runs))
    if rows:  # room above the data for the steps' labels
        low, high = ax.get_ylim()
        room = HEADROOM * rows
        log = ax.get_yscale() == "log"
        ax.set_ylim(low, high * (high / low) ** room if log else high + (high - low) * room)
    ax.tick_params(labelsize=7)
    ax.set_xlabel(_xlabel(runs), fontsize=7)
    ax.set_ylabel(unit, fontsize=7)
    ax.set_title(_title(target, split), fontsize=9)
    if len(lines) > 1:
        handles = [
            Line2D([], [], color=c, marker="o", markersize=4, lw=1.3, label=label)
            for c, label in zip(colours, labels, strict=True)
        ]
        columns = 2 if max(len(label) for label in labels) <= 22 else 1
        fig.set_figheight(HEIGHT + LEGEND_ROW * math.ceil(len(handles) / columns))
        fig.legend(
            handles=handles, loc="outside lower center", ncols=columns, fontsize=7, frameon=False
        )
    notes = [verdict for _, verdict, _ in marks]
    caption = _caption(lines, notes)
    return Chart(metric, target, split, unit, tuple(lines), tuple(points), fig, caption)


def _mark_steps(ax: Axes, marks: Sequence[tuple[float, str, float]], runs: int) -> int:
    """A dashed line where each step began; steps nearer each other than a label is wide (the
    lines of a chart often step together) share one label, the range of their changes, and
    each label sits a row below the one before, so that labels never overlap. Returns the
    rows of labels drawn."""
    near = NEAR * runs  # about the width of a label, in runs
    clusters: list[list[tuple[float, str, float]]] = []
    for mark in sorted(marks):
        if clusters and mark[0] - clusters[-1][0][0] < near:
            clusters[-1].append(mark)
        else:
            clusters.append([mark])
    for row, cluster in enumerate(clusters):
        for x, verdict, _ in cluster:
            # A line collection, not an axvline: a mark on the axes, not a series to name.
            ax.vlines(x, 0, 1, transform=ax.get_xaxis_transform(), colors=COLOURS[verdict], ls="--")
        verdicts = {verdict for _, verdict, _ in cluster}
        changes = sorted(
            {f"{ratio - 1:+.0%}": ratio for _, _, ratio in cluster}.items(), key=lambda c: c[1]
        )
        text = (
            " ".join(c for c, _ in changes)
            if len(changes) <= 2
            else f"{changes[0][0]}…{changes[-1][0]}"
        )
        right = cluster[0][0] > (runs - 1) / 2  # the label on the side with room
        ax.annotate(
            text,
            (cluster[0][0] if right else cluster[-1][0], 1.0),  # beside the whole cluster
            xycoords=("data", "axes fraction"),
            xytext=(-3 if right else 3, -2 - 9 * (row % LABEL_ROWS)),
            textcoords="offset points",
            ha="right" if right else "left",
            va="top",
            fontsize=7,
            color=COLOURS[verdicts.pop()] if len(verdicts) == 1 else MIXED,
        )
    return min(len(clusters), LABEL_ROWS)


def _caption(lines: Sequence[History], notes: Sequence[str]) -> str:
    shared: dict[str, object] = {
        k: v for k, v in lines[0].params.items() if all(h.params.get(k) == v for h in lines)
    }
    parts = [f"params: {figures.params_label(shared)}"] if shared else []
    if len({h.conditions for h in lines}) == 1:
        host, _, cpus, accel = lines[0].conditions
        parts.append(f"on {host}, {cpus} CPUs, {accel or 'unknown'} accel")
    n = [len(p.values) for h in lines for p in h.points]
    parts.append(f"n = {min(n)} per run" if min(n) == max(n) else f"n = {min(n)} to {max(n)}")
    # The steps themselves are in the table above the charts.
    counts = [f"{notes.count(v)} {v}" for v in ("regressed", "improved") if v in notes]
    parts.append("steps: " + (", ".join(counts) if counts else "none"))
    return " · ".join(parts)


def history_charts(found: Sequence[History]) -> list[Chart]:
    """A chart per metric and target (and split), over the runs the histories hold."""
    by_id = {p.run.id: p.run for h in found for p in h.points}
    runs = sorted(by_id.values(), key=lambda r: r.started)
    groups: dict[tuple[str, str], list[History]] = {}
    for h in found:
        groups.setdefault((h.metric, h.target), []).append(h)
    charts = []
    for metric in dict.fromkeys(h.metric for h in found):
        of_metric = [h for h in found if h.metric == metric]
        # One unit per metric: its charts side by side read in the same terms.
        factor, unit = figures.display_unit(
            of_metric[0].unit, [p.median for h in of_metric for p in h.points]
        )
        for (m, target), lines in groups.items():
            if m == metric:
                for split, part in split_lines(lines):
                    charts.append(draw_chart(metric, target, split, part, runs, factor, unit))
    return charts


# SVG for inlining.


def _prefix_ids(svg: str, prefix: str) -> str:
    """Every id (and reference to one) prefixed, so that several charts on one page do not
    share ids; only inside tags, as text content has its < and > escaped."""

    def tag(match: re.Match[str]) -> str:
        return re.sub(r'(\sid="|href="#|url\(#)', lambda m: m.group(1) + prefix, match.group(0))

    return re.sub(r"<[^<>]+>", tag, svg)


def chart_svg(chart: Chart, prefix: str) -> str:
    """The chart as an <svg> element to inline in HTML, scaling to its container's width, each
    marker a link to its run with the point as its hover title."""
    buffer = io.StringIO()
    # A fixed salt makes the hashed ids, and so the page, the same from one build to the next.
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        chart.figure.savefig(buffer, format="svg", dpi=DPI, metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # no XML prolog or DOCTYPE inside HTML
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.DOTALL)
    svg = re.sub(
        r'<svg([^>]*?) width="[^"]*" height="[^"]*"',
        r'<svg\1 width="100%" style="height:auto"',
        svg,
        count=1,
    )
    svg = _prefix_ids(svg, prefix)
    svg = svg.replace(' target="_blank"', "")  # a run opens where the site's links open
    links = re.findall(r"<a [^>]*>", svg)
    if len(links) == len(chart.points):
        titles = iter(_point_title(h, p) for h, p in chart.points)
        svg = re.sub(
            r"(<a [^>]*>)", lambda m: f"{m.group(1)}<title>{esc(next(titles))}</title>", svg
        )
    return svg


def _point_title(h: History, p: Point) -> str:
    when = datetime.fromtimestamp(p.run.started).strftime("%Y-%m-%d %H:%M")
    params = figures.params_label(dict(h.params))
    series = " ".join(part for part in (h.target, params) if part)
    return (
        f"{series}: {format_value(p.median, h.unit)} (n = {len(p.values)}), run {p.run.id}, {when}"
    )


# The pages.


def history_page(store: Store, suite: str, upto: float) -> tuple[str, set[str]]:
    """The body of SUITE-history.html over every stored run of the suite started at or before
    `upto`, and the ids of the runs its points link to (each needs its page in runs/)."""
    stored = [(run, samples) for run, samples in store.series(suite) if run.started <= upto]
    every = histories(stored)
    found = [h for h in every if len(h.points) >= 2]
    if not found:
        return (
            f'<p class="empty">History needs two or more stored runs with values; the store '
            f"holds {len(stored)} run(s) of this suite.</p>",
            set(),
        )
    charts = history_charts(found)
    parts = [
        "<p>The median of each stored run, oldest first, one evenly spaced position per run. "
        "Dashed lines mark steps, where a lasting change began: red where it regressed, green "
        "where it improved. Each point links to its run.</p>",
        "<h2>Steps</h2>",
        _steps_table(found),
    ]
    once = len(every) - len(found)
    if once:
        parts.append(f"<p>{once} series measured in one run only are not drawn.</p>")
    by_metric: dict[str, list[str]] = {}
    for i, chart in enumerate(charts):
        by_metric.setdefault(chart.metric, []).append(
            f"<figure>{chart_svg(chart, f'c{i + 1}-')}"
            f"<figcaption>{esc(chart.caption)}</figcaption></figure>"
        )
    for metric, drawn in by_metric.items():
        first = next(c for c in charts if c.metric == metric)
        better = figures.direction(first.lines[0].better)
        parts.append(f"<h2>{esc(metric)} ({esc(first.unit)}, {better})</h2>")
        parts.append(f'<div class="small-multiples">{"".join(drawn)}</div>')
    return "\n".join(parts), {p.run.id for c in charts for _, p in c.points}


def _steps_table(found: Sequence[History]) -> str:
    rows = [
        (
            esc(h.target),
            esc(h.metric),
            esc(figures.params_label(dict(h.params))),
            f'<span class="{h.step_verdict(s)}">{esc(describe_step(h, s))}</span>',
            f'<a href="{esc(run_href(h.points[s.index].run.id))}">run page</a>',
        )
        for h in found
        for s in h.steps
    ]
    if not rows:
        return "<p>No steps found: no lasting change in any series.</p>"
    return table(("target", "metric", "params", "step", "where it started"), rows, raw=True)


def run_body(run: Run, suites: Sequence[str], store: Store) -> str:
    """A run's facts and the results of every sample it holds, a table per suite."""
    samples = store.samples(run.id)
    targets = list(dict.fromkeys(s.target for s in samples))
    parts = [runs_table([run], {run.id: targets})]
    for suite in dict.fromkeys(s.suite for s in samples):
        parts.append(f"<h2>{esc(KNOWN_SUITES.get(suite, (suite,))[0])}</h2>")
        if suite in suites:  # the site has pages only for these
            parts.append(
                f'<p><a href="../{esc(suite)}-history.html">History of {esc(suite)}</a> · '
                f'<a href="../{esc(suite)}.html">the {esc(suite)} page</a></p>'
            )
        rows = result_rows(s for s in samples if s.suite == suite)
        parts.append(results_table([(run, rows)]))
    return "\n".join(parts)


def write_run_pages(
    store: Store, run_ids: Iterable[str], site: Path, suites: Sequence[str]
) -> list[Path]:
    """runs/RUN.html for each run: what the history pages' points link to."""
    (site / "runs").mkdir(parents=True, exist_ok=True)
    written = []
    for run_id in sorted(set(run_ids)):
        run = store.run(run_id)
        path = site / run_page_path(run.id)
        body = run_body(run, suites, store)
        path.write_text(page(f"Run {run.id}", suites, body, root="../"))
        written.append(path)
    return written
