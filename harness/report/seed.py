"""What the paper showed, reproduced from our samples: the section each suite page opens with.

One view per suite, each drawing the seed's own figure or table from whatever the selected runs
hold, with the published values beside ours and labelled as published:
  - boot: boot time against memory (Fig. 5), or, without a memory sweep, the times per target;
    and Xen's guests launched by xl as it is against pre-created ones (Fig. 6);
  - threads: thread creation against the count, and the wake-up lateness CDF (Fig. 7b);
  - tcp: the throughput table (Fig. 8) by path, flows and offloads, and the same as grouped bars;
  - block, dns, web: the throughput against block size, zone size and users;
  - size: image sizes per target, standard against pruned, and per part (Table 2).
A view also says which (metric, parameter) figures it drew, so the page does not draw them twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd  # type: ignore[import-untyped]
import seaborn as sns  # type: ignore[import-untyped]
from matplotlib.figure import Figure

from harness.report import bars, figures
from harness.report.figures import Drawn, FigureWriter, QuantileCurve
from harness.report.headline import references_for
from harness.report.markup import esc, table
from harness.report.published import TCP_FIG8
from harness.stats import summarize
from harness.summary import format_value


@dataclass
class Section:
    """Blocks of the section, in order: HTML, or a figure to embed."""

    blocks: list[str | Drawn] = field(default_factory=list)
    covers: set[tuple[str, str | None]] = field(default_factory=set)  # (metric, param) drawn


@dataclass(frozen=True)
class SuiteData:
    suite: str
    frame: pd.DataFrame  # figures.sample_frame of the selected runs' samples of the suite
    writer: FigureWriter
    curves: Mapping[str, Sequence[QuantileCurve]]  # stored distributions, by metric


def is_unikernel(target: str) -> bool:
    return target.startswith("unikernel")


def metric_rows(data: SuiteData, metric: str) -> pd.DataFrame:
    if data.frame.empty:
        return data.frame
    rows = data.frame[data.frame["metric"] == metric]
    return rows.dropna(axis="columns", how="all")


def has_sweep(rows: pd.DataFrame, param: str) -> bool:
    return not rows.empty and param in figures.numeric_sweeps(rows)


def note(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def against(data: SuiteData, metric: str, param: str, section: Section) -> None:
    rows = metric_rows(data, metric)
    if f"param:{param}" in rows and rows[f"param:{param}"].notna().all():
        section.blocks += figures.against_param_figures(data.writer, data.suite, rows, param)
        section.covers.add((metric, param))


def medians_table(rows: pd.DataFrame, metrics: Sequence[str], keys: Sequence[str]) -> str:
    """One row per target (and key parameters), one column per metric: medians."""
    present = [k for k in keys if f"param:{k}" in rows]
    by = ["target", "accel", *(f"param:{k}" for k in present)]
    found = [m for m in metrics if (rows["metric"] == m).any()]
    lines = []
    for key, group in rows[rows["metric"].isin(found)].groupby(by, sort=False, dropna=False):
        cells = ["—" if pd.isna(v) else str(v) for v in key]
        for metric in found:
            values = list(group[group["metric"] == metric]["value"])
            unit = str(rows[rows["metric"] == metric]["unit"].iloc[0])
            cells.append(format_value(summarize(values).median, unit) if values else "—")
        lines.append(cells)
    return table(["target", "accel", *present, *found], lines)


# The views.


def boot_view(data: SuiteData) -> Section:
    section = Section()
    rows = metric_rows(data, "time_to_service")
    if has_sweep(rows, "memory"):
        against(data, "time_to_service", "memory", section)
    else:
        section.blocks.append(
            note(
                "Figure 5 draws boot time against memory; these runs did not sweep memory "
                "(`bench run --suite boot --param memory=64,256,1024` does)."
            )
        )
    if not data.frame.empty:
        metrics = ("time_to_ready", "time_to_service", "guest_launch_to_kernel")
        section.blocks.append(medians_table(data.frame, metrics, ("memory",)))
    toolstack_view(data, section)
    return section


FIG6_METRICS = ("time_to_service", "guest_launch_to_kernel")


def toolstack_view(data: SuiteData, section: Section) -> None:
    """Fig. 6: Xen guests launched by xl as it is and pre-created (harness/xen/launches.py),
    side by side, where the runs measured both."""
    frame = data.frame
    if frame.empty or "param:launch" not in frame or frame["param:launch"].nunique() < 2:
        return
    rows = frame[frame["param:launch"].notna() & frame["metric"].isin(FIG6_METRICS)]
    if rows.empty:
        return
    # A Linux guest runs on Linux's own front-ends: the unikernel's drivers=kernel.
    drivers = rows.get("param:drivers")
    chart = rows.assign(
        drivers="kernel" if drivers is None else drivers.fillna("kernel"),
        launch=rows["param:launch"],
    )
    section.blocks.append("<h3>Boot with the toolstack's work done ahead (Fig. 6)</h3>")
    section.blocks.append(
        note(
            "xl-create: `xl create` on the clock, domain building and bash hotplug scripts "
            "included; pre-created: the domain built paused beforehand (phase_precreate), its "
            "vif put on the bridge by a two-command POSIX script, the clock running from "
            "`xl unpause`."
        )
    )
    varied = chart["drivers"].nunique() > 1
    section.blocks.append(
        bars.bars(
            data.writer,
            chart,
            bars.Facets(x="target", hue="launch", col="metric", row="drivers" if varied else None),
            title="boot: launched by xl as it is, and pre-created (Fig. 6)",
            ylabel="seconds",
            caption=figures.provenance(rows[rows["metric"] == FIG6_METRICS[0]]),
        )
    )
    metrics = (*FIG6_METRICS, "phase_precreate", "time_to_ready")
    section.blocks.append(medians_table(frame, metrics, ("launch", "drivers", "memory")))


def threads_view(data: SuiteData) -> Section:
    section = Section()
    against(data, "thread_create_seconds", "count", section)
    for metric, curves in data.curves.items():
        if curves:
            section.blocks.append(figures.quantile_cdf(data.writer, data.suite, metric, curves))
            section.covers.add((metric, None))
            break
    if not data.frame.empty:
        metrics = ("thread_create_seconds", "lateness_p50", "lateness_p95", "lateness_p99")
        section.blocks.append(medians_table(data.frame, metrics, ("mode", "kind", "count")))
    return section


def tcp_view(data: SuiteData) -> Section:
    section = Section()
    rows = metric_rows(data, "throughput")
    if rows.empty or "param:direction" not in rows:
        return section
    paths = tcp_paths(rows)
    for offloads in dict.fromkeys(paths["offloads"]):
        section.blocks.append(f"<h3>Offloads {esc(offloads)}</h3>")
        section.blocks.append(tcp_table(paths[paths["offloads"] == offloads]))
    published = [
        {"path": path, "flows": flows, "offloads": "off", "value": value, "source": bars.PUBLISHED}
        for path, flows, value in tcp_published_beside(paths)
    ]
    chart = pd.concat([paths, pd.DataFrame(published)], ignore_index=True)
    hatched = (
        " · hatched: the paper's Fig. 8 (offloads off): Linux → Linux beside the reference, "
        "Linux → Mirage beside each unikernel's receive, Mirage → Linux beside its send"
        if published
        else ""
    )
    section.blocks.append(
        bars.bars(
            data.writer,
            chart,
            bars.Facets(x="path", hue="flows", col="offloads"),
            title="tcp: throughput by path, flows and offloads (Fig. 8)",
            ylabel="throughput (Mbit/s)",
            caption=figures.provenance(rows) + hatched,
        )
    )
    section.covers.add(("throughput", None))
    return section


def tcp_paths(rows: pd.DataFrame) -> pd.DataFrame:
    """Each sample with its path in words: the client on the host sends to the target
    (to-target) or receives from it."""
    offloads = rows.get("param:offloads", "off")
    return rows.assign(
        path=[
            f"Linux → {t}" if d == "to-target" else f"{t} → Linux"
            for t, d in zip(rows["target"], rows["param:direction"], strict=True)
        ],
        flows=rows["param:flows"].astype(str),
        offloads=pd.Series(offloads, index=rows.index).astype(str),
        source="ours",
    )


def tcp_reference(paths: pd.DataFrame) -> str | None:
    """Linux <-> Linux: the first of the TCP headline's references these runs hold."""
    present = set(paths["target"])
    return next((t for t in references_for("tcp") if t in present), None)


def tcp_table(paths: pd.DataFrame) -> str:
    """The seed's table: one row per path, one column per flow count; each cell the median and
    its ratio to the Linux ↔ Linux reference on the same direction."""
    reference = tcp_reference(paths)
    flows = sorted(dict.fromkeys(paths["flows"]), key=float)
    medians = {
        key: summarize(list(group["value"])).median
        for key, group in paths.groupby(["target", "param:direction", "flows"])
    }
    targets = sorted(dict.fromkeys(paths["target"]), key=lambda t: (t != reference, t))
    lines = []
    for target in targets:
        for direction in ("to-target", "from-target"):
            label = f"Linux → {target}" if direction == "to-target" else f"{target} → Linux"
            if target == reference:
                label += " (Linux ↔ Linux reference)"
            cells = [label]
            for n in flows:
                value = medians.get((target, direction, n))
                base = medians.get((reference, direction, n)) if reference else None
                if value is None:
                    cells.append("—")
                elif base and target != reference:
                    cells.append(f"{value:,.0f} (x{value / base:.2f})")
                else:
                    cells.append(f"{value:,.0f}")
            lines.append(cells)
    if set(paths["offloads"]) == {"off"}:
        for path, (one, ten) in TCP_FIG8.items():
            by_flows = {"1": one, "10": ten}
            lines.append(
                [
                    f"published: {path}",
                    *(f"{by_flows[n]:,.0f}" if n in by_flows else "—" for n in flows),
                ]
            )
    columns = ["path", *(f"{n} flow{'s' if n != '1' else ''} (Mbit/s)" for n in flows)]
    caption = (
        f"<p>Ratios: ours ÷ {esc(reference)} on the same direction and flows.</p>"
        if reference
        else ""
    )
    return table(columns, lines) + caption


def tcp_published_beside(paths: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(path, flows, Mbit/s) of Fig. 8 placed beside our paths of the same kind."""
    ours = paths[paths["offloads"] == "off"]
    if ours.empty:
        return []
    reference = tcp_reference(ours)
    placed = []
    for path, target, direction in dict.fromkeys(
        zip(ours["path"], ours["target"], ours["param:direction"], strict=True)
    ):
        if target == reference and direction == "to-target":
            published = TCP_FIG8["Linux → Linux"]
        elif is_unikernel(target):
            published = TCP_FIG8["Linux → Mirage" if direction == "to-target" else "Mirage → Linux"]
        else:
            continue
        for flows, value in zip(("1", "10"), published, strict=True):
            if flows in set(ours["flows"]):
                placed.append((path, flows, value))
    return placed


def size_view(data: SuiteData) -> Section:
    section = Section()
    frame = data.frame
    if frame.empty or not (frame["metric"] == "size_image").any():
        return section
    app = frame.get("param:app", pd.Series("boot-probe", index=frame.index)).fillna("boot-probe")
    build = frame.get("param:build", pd.Series(None, index=frame.index))
    frame = frame.assign(
        app=app.astype(str),
        build=build,
        image=[
            f"{a} · {t}" + (f" ({b})" if isinstance(b, str) and b else "")
            for a, t, b in zip(app, frame["target"], build, strict=True)
        ],
    )
    section.blocks.append(size_table(frame))
    parts = size_parts(data.writer, frame)
    if parts:
        section.blocks.append(parts)
    section.covers.add(("size_image", None))
    return section


def size_table(frame: pd.DataFrame) -> str:
    """Table 2's shape: per appliance and target, the standard image and the pruned one."""
    whole = frame[frame["metric"] == "size_image"]
    packed = frame[frame["metric"] == "size_image_compressed"]
    lines = []
    for (app, target), rows in whole.groupby(["app", "target"], sort=False):
        by_build = rows.groupby(rows["build"].astype(object).fillna(""))["value"].median()
        standard = by_build.get("standard", by_build.get("", None))
        pruned = by_build.get("pruned")
        small = packed[(packed["app"] == app) & (packed["target"] == target)]
        if pruned is not None:
            small = small[small["build"] == "pruned"]
        lines.append(
            [
                app,
                target,
                f"{standard / 1e6:.3f}" if standard is not None else "—",
                f"{pruned / 1e6:.3f}" if pruned is not None else "—",
                f"{pruned / standard:.2f}" if pruned is not None and standard else "",
                f"{small['value'].median() / 1e6:.3f}" if not small.empty else "—",
            ]
        )
    columns = (
        "appliance",
        "target",
        "standard (MB)",
        "pruned (MB)",
        "pruned ÷ standard",
        "compressed (MB)",
    )
    return table(columns, lines) + note(
        "MB are 10^6 bytes, as Table 2 of the paper gives them (listed below as published: "
        "DNS 0.449 → 0.184 MB, web server 0.673 → 0.172 MB). A target with one build shows it "
        "as standard; compressed is the pruned image where there is one."
    )


# Parts that hold other parts: the initramfs holds the interpreter, libraries, extension
# modules and bytecode. Stacking it too would count them twice.
CONTAINING_PARTS = frozenset({"size_initramfs"})


def size_parts(writer: FigureWriter, frame: pd.DataFrame) -> Drawn | None:
    """Stacked bars of the images built both ways (the unikernels'), standard above pruned:
    what pruning removed, part by part. Linux images are one or two parts and ten to a
    hundred times larger; the table holds them."""
    built = frame[frame["build"].notna()]
    leaves = built[
        built["metric"].str.startswith("size_")
        & ~built["metric"].str.endswith("_compressed")
        & ~built["metric"].isin(["size_image", *CONTAINING_PARTS])
    ]
    images = list(dict.fromkeys(built[built["metric"] == "size_image"]["image"]))
    if not images:
        return None
    names = list(dict.fromkeys(leaves["metric"]))
    medians = leaves.groupby(["image", "metric"])["value"].median()
    whole = built[built["metric"] == "size_image"].groupby("image")["value"].median()
    sns.set_theme(style="whitegrid", context="notebook")
    fig = Figure(figsize=(8.0, max(2.5, 0.4 * len(images) + 1.6)))
    ax = fig.subplots()
    colours = sns.color_palette(figures.PALETTE, len(names) + 1)
    left = [0.0] * len(images)
    for name, colour in zip(names, colours, strict=False):
        widths = [float(medians.get((image, name), 0.0)) / 2**20 for image in images]
        label = name.removeprefix("size_")
        ax.barh(range(len(images)), widths, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    rest = [
        max(float(whole[image]) / 2**20 - done, 0.0)
        for image, done in zip(images, left, strict=True)
    ]
    if any(r > 0.01 for r in rest):
        ax.barh(range(len(images)), rest, left=left, color=colours[-1], label="rest of the image")
    ax.set_yticks(range(len(images)), images, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("size (MiB)")
    title = "size: the unikernel images by part, standard and pruned (Table 2)"
    ax.set_title(title, fontsize=10)
    figures.outside_legend(ax)
    return writer.save(fig, title, figures.provenance(built[built["metric"] == "size_image"]))


def block_view(data: SuiteData) -> Section:
    section = Section()
    against(data, "read_throughput", "block_size", section)
    return section


def dns_view(data: SuiteData) -> Section:
    section = Section()
    against(data, "queries_per_second", "names", section)
    return section


def web_view(data: SuiteData) -> Section:
    section = Section()
    for metric in ("sessions_per_second", "requests_per_second"):
        against(data, metric, "users", section)
    return section


VIEWS: dict[str, Callable[[SuiteData], Section]] = {
    "boot": boot_view,
    "threads": threads_view,
    "tcp": tcp_view,
    "block": block_view,
    "dns": dns_view,
    "web": web_view,
    "size": size_view,
}


def seed_section(data: SuiteData) -> Section:
    view = VIEWS.get(data.suite)
    return view(data) if view else Section()
