"""Whether a figure can be read once saved: three problems, found from where its texts are drawn.

  - tick labels of one axis that overlap each other;
  - texts (and legends) that reach past the figure's edge, so the saved PNG cuts them off;
  - an Axes showing more than one series with no legend to tell them apart.

The figure is drawn on an Agg canvas at the dpi it will be saved with, as savefig would draw it;
its canvas and dpi are put back afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import combinations

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.axis import Axis, Tick, XAxis, XTick
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import to_rgba_array
from matplotlib.container import BarContainer
from matplotlib.figure import Figure, FigureBase
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.typing import ColorType

TOLERANCE = 1.0  # px: rounding and anti-aliasing, nothing a reader would see
NEUTRAL = 0.05  # a colour whose r, g and b differ by no more is black, white or grey

Outline = np.ndarray  # the four corners of a text's own box, in pixels (4 x 2)


def problems(fig: Figure, dpi: float = 100) -> list[str]:
    """What makes this figure hard to read, as sentences naming the axes and the texts; [] when
    legible."""
    with drawn(fig, dpi) as renderer:
        return problems_drawn(fig, renderer)


def problems_drawn(fig: Figure, renderer: RendererBase) -> list[str]:
    """problems() of a figure just drawn with `renderer`, at the size it is saved at: for a
    caller that draws it anyway, so it is not drawn twice."""
    names = {ax: axes_name(ax, i) for i, ax in enumerate(fig.axes)}
    found: list[str] = []
    for ax in fig.axes:
        if ax.get_visible() and ax.axison:
            for axis in (ax.xaxis, ax.yaxis):
                found += overlapping_tick_labels(axis, names[ax], renderer)
    found += cut_off(fig, names, renderer)
    found += series_without_legend(fig, names)
    return found


@contextmanager
def drawn(fig: Figure, dpi: float) -> Iterator[RendererBase]:
    """The figure drawn at `dpi` on an Agg canvas of its own; the renderer, to measure with.
    A Figure made without pyplot has a bare FigureCanvasBase, which cannot draw."""
    canvas, saved_dpi = fig.canvas, fig.dpi
    agg = FigureCanvasAgg(fig)
    fig.dpi = dpi  # what savefig does: the size in inches stays, the pixels change
    try:
        # backend_agg has no type stubs; draw() also runs any layout engine.
        agg.draw()  # type: ignore[no-untyped-call]
        yield agg.get_renderer()  # type: ignore[no-untyped-call]
    finally:
        fig.dpi = saved_dpi
        fig.set_canvas(canvas)


def axes_name(ax: Axes, index: int) -> str:
    """'axes 2 "title"': its place in fig.axes, counted from 1, and the first line of its title."""
    title = ax.get_title().split("\n")[0].strip()
    return f'axes {index + 1} "{snippet(title)}"' if title else f"axes {index + 1}"


def letter(axis: Axis) -> str:
    return "x" if isinstance(axis, XAxis) else "y"


def snippet(text: str, limit: int = 40) -> str:
    line = text.strip().split("\n")[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


# 1. Overlapping tick labels


def overlapping_tick_labels(axis: Axis, where: str, renderer: RendererBase) -> list[str]:
    """One sentence per axis whose tick labels overlap, naming the first pair."""
    if not axis.get_visible():
        return []
    labels = [
        label
        for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]
        if tick.get_visible() and in_view(tick)
        for label in (tick.label1, tick.label2)
        if label.get_visible() and label.get_text().strip()
    ]
    outlines = [outline(label, renderer) for label in labels]
    pairs = [
        (labels[i], labels[j])
        for i, j in combinations(range(len(labels)), 2)
        if overlap(outlines[i], outlines[j])
    ]
    if not pairs:
        return []
    a, b = pairs[0]
    more = {1: "", 2: " (and 1 more pair)"}.get(len(pairs), f" (and {len(pairs) - 1} more pairs)")
    return [
        f"On {where}, the {letter(axis)} tick labels '{snippet(a.get_text())}' and "
        f"'{snippet(b.get_text())}' overlap{more}."
    ]


def in_view(tick: Tick) -> bool:
    """Whether matplotlib draws the tick: it keeps ticks beyond the view limits, undrawn, with
    labels left wherever they were."""
    ax = tick.axes
    if not isinstance(ax, Axes):
        return True
    if isinstance(tick, XTick):
        x = ax.get_xaxis_transform().transform((tick.get_loc(), 0))[0]
        return bool(ax.bbox.x0 - TOLERANCE <= x <= ax.bbox.x1 + TOLERANCE)
    y = ax.get_yaxis_transform().transform((0, tick.get_loc()))[1]
    return bool(ax.bbox.y0 - TOLERANCE <= y <= ax.bbox.y1 + TOLERANCE)


def outline(text: Text, renderer: RendererBase) -> Outline:
    """The corners of the text's own (rotated) box. The window extent of a rotated text is the
    upright box around it: labels at 30 degrees overlap there long before their letters do."""
    box = text.get_window_extent(renderer)
    angle = text.get_rotation()
    if angle % 90 == 0:
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    text.set_rotation(0)  # measured upright for its width and height, then turned back
    try:
        upright = text.get_window_extent(renderer)
    finally:
        text.set_rotation(angle)
    w, h = upright.width, upright.height
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]]) @ np.array([[cos, sin], [-sin, cos]])
    # The rotated box touches the upright one on every side: place it by its lowest corner.
    placed: Outline = corners - corners.min(axis=0) + (box.x0, box.y0)
    return placed


def overlap(a: Outline, b: Outline) -> bool:
    """Whether two rectangles overlap by more than TOLERANCE: they do unless the normal of some
    edge separates them (the separating axis theorem)."""
    for corners in (a, b):
        for edge in np.diff(corners[:3], axis=0):  # a rectangle has two edge directions
            length = math.hypot(edge[0], edge[1])
            if length == 0:
                continue
            normal = np.array([-edge[1], edge[0]]) / length
            pa, pb = a @ normal, b @ normal
            if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= TOLERANCE:
                return False
    return True


# 2. Texts cut off by the figure's edge


def cut_off(fig: Figure, names: dict[Axes, str], renderer: RendererBase) -> list[str]:
    """Every text and legend drawn (partly) outside the figure, with the edges it crosses."""
    bounds = fig.bbox
    found = []
    for artist, what in shown(fig, "the figure", "a text of the figure", names):
        box = artist.get_window_extent(renderer)
        beyond = {
            "left": bounds.x0 - box.x0,
            "right": box.x1 - bounds.x1,
            "bottom": bounds.y0 - box.y0,
            "top": box.y1 - bounds.y1,
        }
        edges = [f"{edge} edge by {px:.0f} px" for edge, px in beyond.items() if px > TOLERANCE]
        if edges:
            found.append(
                f"{what[0].upper()}{what[1:]} is cut off: it passes the figure's "
                f"{' and '.join(edges)}."
            )
    return found


def shown(
    artist: Artist, owner: str, place: str, names: dict[Axes, str]
) -> Iterator[tuple[Text | Legend, str]]:
    """The non-empty texts and the legends drawn under `artist`, each with a phrase saying what
    and where it is (`owner` is the figure or the axes, `place` what a text found here is):
    visible artists under visible parents, tick labels only of ticks in view."""
    for child in artist.get_children():
        if not child.get_visible():
            continue
        inner_owner, inner_place = owner, place
        if isinstance(child, Axes):
            inner_owner = names.get(child, f"an inset of {owner}")
            inner_place = f"on {inner_owner}"
        elif isinstance(child, Axis):
            if not isinstance(child.axes, Axes) or not child.axes.axison:
                continue  # ax.axis("off") hides the axes' axes without making them invisible
            inner_place = f"on the {letter(child)} axis of {owner}"
        elif isinstance(child, Tick):
            if not in_view(child):
                continue
            inner_place = f"{'an x' if isinstance(child, XTick) else 'a y'} tick label of {owner}"
        elif isinstance(child, Legend):
            # Its box holds its entries and title: measured whole, and named by its first entries.
            legend = (
                "the figure legend" if isinstance(artist, FigureBase) else f"the legend of {owner}"
            )
            entries = ", ".join(f"'{snippet(t.get_text(), 20)}'" for t in child.get_texts()[:3])
            yield child, f"{legend} ({entries})" if entries else legend
            continue
        elif isinstance(child, Text) and child.get_text().strip():
            yield child, f"'{snippet(child.get_text())}' ({place})"
        yield from shown(child, inner_owner, inner_place, names)


# 3. Several series without a legend


def series_without_legend(fig: Figure, names: dict[Axes, str]) -> list[str]:
    """Axes that show more than one series, by label or by colour, and have no legend; a legend of
    the figure's, or of one of its panels (facets share one legend), counts for every Axes."""
    if any(legend.get_visible() for legend in fig.legends):
        return []
    if any((legend := ax.get_legend()) is not None and legend.get_visible() for ax in fig.axes):
        return []
    found = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if not ax.get_visible() or (legend is not None and legend.get_visible()):
            continue
        labels = list(dict.fromkeys(ax.get_legend_handles_labels()[1]))
        colours = series_colours(ax)
        if len(labels) > 1 or len(colours) > 1:
            named = ", ".join(f"'{snippet(label, 20)}'" for label in labels) or "no labels"
            hues = f"{len(colours)} colour{'' if len(colours) == 1 else 's'}"
            found.append(
                f"{names[ax][0].upper()}{names[ax][1:]} shows {max(len(labels), len(colours))} "
                f"series ({named}; {hues}) but has no legend to tell them apart."
            )
    return found


def shown_colour(line: Line2D) -> ColorType:
    """The colour a line is seen in: its markers' when it has no line (an error bar's caps
    keep the colour cycle's colour as their line colour but are drawn in their marker's)."""
    if line.get_linestyle() in ("None", "", " ") and line.get_marker() not in (None, "None", ""):
        return line.get_markeredgecolor()
    return line.get_color()


def series_colours(ax: Axes) -> set[tuple[float, ...]]:
    """The distinct colours of the data (lines, dots, bars, bands). Black, white and greys are
    left out: they mark error bars and reference values, not series. Colour-mapped collections
    show a value, not series, and are left out too."""
    colours = [to_rgba_array(shown_colour(line)) for line in ax.lines if line.get_visible()]
    for container in ax.containers:
        if isinstance(container, BarContainer):
            colours += [
                to_rgba_array(bar.get_facecolor()) for bar in container.patches if bar.get_visible()
            ]
    for collection in ax.collections:
        if (
            isinstance(collection, PathCollection | PolyCollection)
            and collection.get_visible()
            and collection.get_array() is None
        ):
            colours.append(to_rgba_array(collection.get_facecolor()))
    return {
        tuple(round(float(v), 2) for v in rgba[:3])
        for rgba in np.concatenate(colours or [np.empty((0, 4))])
        if rgba[3] > 0 and max(rgba[:3]) - min(rgba[:3]) > NEUTRAL
    }
