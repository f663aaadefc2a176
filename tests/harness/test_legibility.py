"""harness.report.legibility: real figures, drawn as the report draws them (Figure, no pyplot),
each check shown to fire on an illegible figure and to stay quiet on a legible one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib as mpl
import pandas as pd  # type: ignore[import-untyped]
import pytest
import seaborn as sns  # type: ignore[import-untyped]
from matplotlib.axes import Axes
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure

from harness.report import legibility
from harness.report.legibility import drawn, outline, overlap, problems

# A report caption: long, with spaces to wrap at.
CAPTION = " · ".join(f"run 2024-01-{day:02d}T03:00 qemu-linux (kvm), n = 10" for day in range(1, 9))


@pytest.fixture(autouse=True)
def report_style() -> Iterator[None]:
    """The report's seaborn theme, without leaving it set for other tests."""
    with mpl.rc_context():
        sns.set_theme(style="whitegrid", context="notebook")
        yield


def figure(width: float = 6.0, height: float = 4.0) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def outside_legend(ax: Axes) -> None:
    """As harness.report.figures places it: right of the plot."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def save_layout(fig: Figure, caption: str = CAPTION, wrap: bool = True) -> None:
    """What FigureWriter.save does before savefig."""
    fig.text(0.01, 0.01, caption, fontsize=7, color="#444", wrap=wrap)
    fig.tight_layout(rect=(0, 0.06, 1, 1))


def test_a_legible_figure_has_no_problems() -> None:
    fig = Figure(figsize=(8, 4.2))
    bars, lines = fig.subplots(1, 2)
    bars.bar(["qemu", "fc", "xen"], [1.0, 2.0, 3.0], color="C0")
    bars.set_title("boot time per target")
    bars.set_ylabel("boot time (ms)")
    lines.plot([64, 128, 256], [3, 2, 1], marker="o", label="qemu")
    lines.plot([64, 128, 256], [2, 2, 1], marker="o", label="firecracker")
    lines.set_xlabel("memory (MiB)")
    outside_legend(lines)
    save_layout(fig)
    assert problems(fig) == []


def test_problems_puts_back_the_canvas_and_dpi_and_the_figure_still_saves(tmp_path: Path) -> None:
    fig, ax = figure()
    ax.plot([1, 2], [1, 2])
    assert type(fig.canvas) is FigureCanvasBase  # no pyplot: a canvas that cannot draw
    problems(fig, dpi=150)
    assert type(fig.canvas) is FigureCanvasBase
    assert fig.dpi == 100
    fig.savefig(tmp_path / "f.png", dpi=100)


# 1. Overlapping tick labels

LONG_CATEGORIES = [f"unikraft-{i:02d} mem=128M" for i in range(30)]


def test_long_unrotated_category_labels_overlap() -> None:
    fig, ax = figure(width=6)
    ax.bar(LONG_CATEGORIES, range(30))
    save_layout(fig)
    found = problems(fig)
    overlaps = [p for p in found if "overlap" in p]
    assert len(overlaps) == 1, found
    assert "x tick labels" in overlaps[0] and "axes 1" in overlaps[0]
    assert sum(label in overlaps[0] for label in LONG_CATEGORIES) == 2


def rotated(count: int) -> Figure:
    """Long category labels at 30 degrees, anchored right, as the report rotates them."""
    fig, ax = figure(width=6)
    ax.bar(LONG_CATEGORIES[:count], range(count))
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    save_layout(fig)
    return fig


def test_rotated_labels_count_by_their_own_boxes_not_the_upright_extents() -> None:
    fig = rotated(12)
    with drawn(fig, 100) as renderer:
        first, second = fig.axes[0].get_xticklabels()[:2]
        # Their upright window extents overlap, though the slanted texts do not...
        assert first.get_window_extent(renderer).overlaps(second.get_window_extent(renderer))
        assert not overlap(outline(first, renderer), outline(second, renderer))
    assert problems(fig) == []  # ...so they are not reported,
    assert any("overlap" in p for p in problems(rotated(20)))  # but packed tighter, they are.


def off_view_ticks() -> Figure:
    """Three ticks in view, and thirty more packed together far right of the view limits."""
    fig, ax = figure()
    hidden = [10 + i / 100 for i in range(30)]
    ax.set_xticks([0, 1, 2, *hidden], ["0", "1", "2", *(f"hidden {i}" for i in range(30))])
    ax.set_xlim(-0.5, 2.5)
    save_layout(fig)
    return fig


def test_labels_of_ticks_beyond_the_view_limits_do_not_count() -> None:
    assert problems(off_view_ticks()) == []


def test_matplotlib_keeps_labels_of_ticks_beyond_the_view_where_they_would_be_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were every tick counted, the hidden ones would overlap and be cut off: the test above tests
    something."""
    monkeypatch.setattr(legibility, "in_view", lambda tick: True)
    found = problems(off_view_ticks())
    assert any("'hidden 0' and 'hidden 1' overlap" in p for p in found), found
    assert any("'hidden 29'" in p and "right edge" in p for p in found), found


def test_overlapping_y_tick_labels_are_reported() -> None:
    fig, ax = figure(height=2.0)
    ax.barh([f"target {i}" for i in range(20)], range(20))
    save_layout(fig)
    assert any("the y tick labels 'target 0' and 'target 1' overlap" in p for p in problems(fig))


# 2. Texts cut off by the figure's edge


def test_long_tick_labels_without_tight_layout_are_cut_off_on_the_left() -> None:
    fig, ax = figure(width=4, height=3)
    ax.barh(["a very long category name that goes on and on", "short"], [1, 2])
    found = problems(fig)
    assert found[0].startswith("'a very long category name that goes on …' (a y tick label of")
    assert all("y tick label of axes 1" in p and "left edge" in p for p in found), found


def test_a_legend_outside_the_axes_without_room_is_cut_off() -> None:
    fig, ax = figure()
    ax.plot([1, 2], [1, 2], label="qemu-linux on kvm")
    ax.plot([1, 2], [2, 1], label="firecracker on kvm")
    outside_legend(ax)  # and no tight_layout to make room for it
    found = problems(fig)
    assert len(found) == 1, found
    assert "legend of axes 1 ('qemu-linux on kvm'" in found[0] and "right edge" in found[0]
    save_layout(fig)  # tight_layout shrinks the axes to make room
    assert problems(fig) == []


def test_a_wrapped_caption_fits_and_the_same_caption_unwrapped_is_cut_off() -> None:
    wrapped, ax = figure(width=8, height=4.2)
    ax.plot([1, 2], [1, 2])
    save_layout(wrapped, wrap=True)
    assert problems(wrapped) == []

    unwrapped, ax = figure(width=8, height=4.2)
    ax.plot([1, 2], [1, 2])
    save_layout(unwrapped, wrap=False)
    found = problems(unwrapped)
    assert len(found) == 1, found
    assert found[0].startswith("'run 2024-01-01T03:00") and "a text of the figure" in found[0]
    assert "right edge" in found[0]


def test_a_title_pushed_above_the_figure_is_cut_off() -> None:
    fig, ax = figure()
    ax.plot([1, 2], [1, 2])
    fig.suptitle("boot time", y=1.05)
    assert any("'boot time' (a text of the figure)" in p and "top edge" in p for p in problems(fig))


def test_an_annotation_past_the_edge_is_cut_off_and_one_matplotlib_skips_is_not() -> None:
    fig, ax = figure()
    ax.plot([1, 2], [1, 2])
    note = "regressed +12 % at the last run"
    ax.annotate(note, (2, 2), textcoords="offset points", xytext=(4, 6))
    # Its point lies outside the axes, so matplotlib does not draw it at all.
    ax.annotate("never drawn", (50, 50), textcoords="offset points", xytext=(4, 6))
    found = problems(fig)
    assert len(found) == 1, found
    assert found[0].startswith(f"'{note}' (on axes 1) is cut off") and "right edge" in found[0]


# 3. Several series without a legend


def two_lines(
    colours: tuple[str, str], labels: tuple[str, str] = ("_a", "_b"), legend: bool = False
) -> Figure:
    """Two lines; labels starting with "_" are matplotlib's way of leaving a line unlabelled."""
    fig, ax = figure()
    ax.plot([1, 2, 3], [1, 2, 3], color=colours[0], label=labels[0])
    ax.plot([1, 2, 3], [3, 2, 1], color=colours[1], label=labels[1])
    if legend:
        ax.legend()
    save_layout(fig)
    return fig


def test_two_coloured_lines_without_a_legend_are_reported() -> None:
    assert problems(two_lines(("C0", "C1"))) == [
        "Axes 1 shows 2 series (no labels; 2 colours) but has no legend to tell them apart."
    ]


def test_two_labelled_lines_in_one_colour_without_a_legend_are_reported() -> None:
    found = problems(two_lines(("C0", "C0"), ("qemu", "firecracker")))
    assert found == [
        "Axes 1 shows 2 series ('qemu', 'firecracker'; 1 colour) but has no legend to tell them "
        "apart."
    ]


def test_two_coloured_lines_with_a_legend_are_not_reported() -> None:
    assert problems(two_lines(("C0", "C1"), ("qemu", "firecracker"), legend=True)) == []


def test_black_lines_with_error_bars_are_one_series() -> None:
    fig, ax = figure()
    ax.errorbar([1, 2, 3], [1, 2, 3], yerr=0.2, color="black", capsize=4)
    ax.errorbar([1, 2, 3], [3, 2, 1], yerr=0.2, color="black", linestyle="--", capsize=4)
    ax.axhline(2, color="0.5", linestyle=":")  # a grey reference line
    save_layout(fig)
    assert problems(fig) == []


def test_facets_sharing_one_figure_legend_are_not_reported() -> None:
    fig = Figure(figsize=(8, 4.2))
    for ax, title in zip(fig.subplots(1, 2, sharey=True), ("tcp", "udp"), strict=True):
        ax.plot([1, 2, 3], [1, 2, 3], color="C0", label="qemu")
        ax.plot([1, 2, 3], [3, 2, 1], color="C1", label="firecracker")
        ax.set_title(title)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="upper center", ncols=2)
    fig.text(0.01, 0.01, CAPTION, fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 0.9))
    assert problems(fig) == []
    fig.legends[0].remove()
    found = problems(fig)
    assert [p.split(" shows")[0] for p in found] == ['Axes 1 "tcp"', 'Axes 2 "udp"']


def strip(legend: bool) -> Figure:
    frame = pd.DataFrame(
        {
            "category": [c for c in ("boot", "ping", "size") for _ in range(6)],
            "value": [float(i % 7) for i in range(18)],
            "target": ["qemu", "firecracker", "xen"] * 6,
        }
    )
    fig, ax = figure()
    sns.stripplot(
        data=frame,
        x="category",
        y="value",
        hue="target",
        palette="colorblind",
        legend=legend,
        ax=ax,
    )
    save_layout(fig)
    return fig


def test_a_stripplot_coloured_by_hue_without_a_legend_is_reported() -> None:
    found = problems(strip(legend=False))
    assert found == [
        "Axes 1 shows 3 series (no labels; 3 colours) but has no legend to tell them apart."
    ]
    assert problems(strip(legend=True)) == []
