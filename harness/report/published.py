"""Published figures to draw or list beside ours, as data with their source.

Copied from shared/reference/anchors.md (beside this repository), which took them from the
papers; "about" means read off a plot. They are shown labelled as published, never mixed into
our measurements.
A published series is drawn on one of our figures only where the metric and the swept parameter
match ours (`suite`, `metric` pattern, `param`); the rest are listed as tables on the suite page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

ANCHORS = "shared/reference/anchors.md"
MIRAGE_PAPER = "MirageOS (Madhavapeddy et al., ASPLOS 2013)"


@dataclass(frozen=True)
class PublishedPoint:
    system: str
    x: float | None  # the swept parameter's value, in the parameter's unit; None for a single value
    value: float  # in the figure's unit


@dataclass(frozen=True)
class PublishedSeries:
    """Values from one published figure, drawable against one of our metrics."""

    suite: str
    metric_pattern: str  # a regular expression our metric's name must match
    param: str | None  # our parameter on the x axis, in the same unit as the points' x
    unit: str  # the unit of our metric the values are in
    title: str
    source: str
    points: tuple[PublishedPoint, ...]
    # Drawn only on figures whose samples have these parameter values (mode=buffered), or
    # that do not have the parameter at all.
    when: tuple[tuple[str, str], ...] = ()

    def matches(
        self, suite: str, metric: str, param: str | None, values: Mapping[str, set[str]]
    ) -> bool:
        return (
            suite == self.suite
            and re.search(self.metric_pattern, metric) is not None
            and param == self.param
            and all(name not in values or value in values[name] for name, value in self.when)
        )


@dataclass(frozen=True)
class PublishedTable:
    """Published results listed, as written, on a suite page."""

    suite: str
    title: str
    source: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


# Figure 5: "toolstack create to service ready", which is our time_to_service; memory in MiB.
BOOT_AGAINST_MEMORY = PublishedSeries(
    suite="boot",
    metric_pattern=r"^time_to_service$",
    param="memory",
    unit="s",
    title="boot time against memory (Fig. 5)",
    source=f"{MIRAGE_PAPER}, Figure 5, values read off the plot (about)",
    points=(
        PublishedPoint("Mirage on Xen", 64, 0.03),
        PublishedPoint("Mirage on Xen", 256, 0.05),
        PublishedPoint("Mirage on Xen", 1024, 0.11),
        PublishedPoint("Mirage on Xen", 2048, 0.2),
        PublishedPoint("Linux PV on Xen", 128, 0.43),
        PublishedPoint("Linux PV on Xen", 2048, 0.6),
    ),
)

# Figure 7b: one point of the lateness CDF, as a fraction within a lateness in seconds.
JITTER_CDF = PublishedSeries(
    suite="threads",
    metric_pattern=r"lateness|jitter",
    param=None,
    unit="s",
    title="timer lateness CDF (Fig. 7b)",
    source=f"{MIRAGE_PAPER}, Figure 7b: about 95 % of wake-ups within 0.05 ms",
    points=(PublishedPoint("Mirage on Xen", 0.95, 0.05e-3),),
)

# The storage figure: random reads, MiB/s against the block size in bytes. The paper gives the
# plateau from 128 KiB (Mirage matching Linux direct I/O) and Linux buffered's level, not the
# curve below 128 KiB, so only those are drawn, each beside our reads of the same mode.
BLOCK_SOURCE = (
    f"{MIRAGE_PAPER}: Mirage matches Linux direct I/O, about 1400-1450 MiB/s from 128 KiB; "
    "Linux buffered about 300 MiB/s (about)"
)
BLOCK_DIRECT = PublishedSeries(
    suite="block",
    metric_pattern=r"^read_throughput$",
    param="block_size",
    unit="MiB/s",
    title="random block reads against block size, direct",
    source=BLOCK_SOURCE,
    points=(
        PublishedPoint("Mirage and Linux direct I/O", 128 * 1024, 1400),
        PublishedPoint("Mirage and Linux direct I/O", 4 * 1024 * 1024, 1450),
    ),
    when=(("mode", "direct"),),
)
BLOCK_BUFFERED = PublishedSeries(
    suite="block",
    metric_pattern=r"^read_throughput$",
    param="block_size",
    unit="MiB/s",
    title="random block reads against block size, buffered",
    source=BLOCK_SOURCE,
    points=(
        PublishedPoint("Linux buffered", 128 * 1024, 300),
        PublishedPoint("Linux buffered", 4 * 1024 * 1024, 300),
    ),
    when=(("mode", "buffered"),),
)

# The DNS figure: queries per second against the zone's size in names (100, 1,000, 10,000).
# The anchors give one level per server, not one value per zone size, so NSD and Mirage are
# drawn level across the sweep; BIND's range (29k-52k) is listed, not drawn.
DNS_SOURCE = (
    f"{MIRAGE_PAPER}, DNS with queryperf: NSD about 66k, Mirage about 40k, memoised about 75-78k "
    "queries/s over zones of 100-10,000 names (about)"
)
DNS_QPS = PublishedSeries(
    suite="dns",
    metric_pattern=r"^queries_per_second$",
    param="names",
    unit="queries/s",
    title="DNS queries per second against zone size",
    source=DNS_SOURCE,
    points=tuple(
        PublishedPoint(system, names, value)
        for system, value in (
            ("NSD", 66_000),
            ("Mirage", 40_000),
            ("Mirage memoised", 76_500),
        )
        for names in (100, 1000, 10000)
    ),
)

# The static web figure (Fig. 13): connections per second, one level per system at the
# paper's largest configuration (6 instances, or one host of 6 vCPUs). Our static sessions
# are one connection each, so sessions/s is the same measure; drawn level across users.
WEB_STATIC_SOURCE = (
    f"{MIRAGE_PAPER}, Fig. 13, static pages with httperf: 6 Mirage unikernels about 2040, "
    "Apache2 on one host of 6 vCPUs about 1660 connections/s (about)"
)
WEB_STATIC_SESSIONS = PublishedSeries(
    suite="web",
    metric_pattern=r"^sessions_per_second$",
    param="users",
    unit="sessions/s",
    title="Static web sessions (connections) per second against users",
    source=WEB_STATIC_SOURCE,
    points=tuple(
        PublishedPoint(system, users, value)
        for system, value in (
            ("Mirage, 6 unikernels (Fig. 13)", 2040),
            ("Apache2, 6 vCPUs (Fig. 13)", 1660),
        )
        for users in (10, 50, 100)
    ),
    when=(("app", "static"),),
)

# Thread creation (the paper's thread figure): seconds to create 20 million threads.
THREAD_CREATE = PublishedSeries(
    suite="threads",
    metric_pattern=r"^thread_create_seconds$",
    param="count",
    unit="s",
    title="seconds to create threads against their count",
    source=f"{MIRAGE_PAPER}: 20 M threads, Mirage 1.6 s, Linux native 2.3 s, Linux guest 4.3 s",
    points=(
        PublishedPoint("Mirage on Xen", 20e6, 1.6),
        PublishedPoint("Linux native", 20e6, 2.3),
        PublishedPoint("Linux guest", 20e6, 4.3),
    ),
)

# Fig. 8, iperf with offloads off, Mbit/s: path -> (1 flow, 10 flows).
TCP_FIG8 = {
    "Linux → Linux": (1590.0, 1534.0),
    "Linux → Mirage": (1742.0, 1710.0),
    "Mirage → Linux": (975.0, 952.0),
}

SERIES = (
    BOOT_AGAINST_MEMORY,
    THREAD_CREATE,
    JITTER_CDF,
    BLOCK_DIRECT,
    BLOCK_BUFFERED,
    DNS_QPS,
    WEB_STATIC_SESSIONS,
)

TABLES = (
    PublishedTable(
        suite="boot",
        title="Boot time against memory (Fig. 5)",
        source=f"{MIRAGE_PAPER}, Figure 5 (about)",
        columns=("system", "result"),
        rows=(
            (
                "Mirage on Xen",
                "0.03 s at 64 MiB, 0.05 s at 256 MiB, 0.11 s at 1 GiB, 0.2 s at 2 GiB",
            ),
            ("Linux PV on Xen", "0.43 s at 128 MiB rising to 0.6 s at 2 GiB"),
        ),
    ),
    PublishedTable(
        suite="boot",
        title="Boot times of other unikernels and lightweight VMs (each measured its own way)",
        source=ANCHORS,
        columns=("system", "boot as published"),
        rows=(
            (
                "Unikraft hello (EuroSys 2021)",
                "Firecracker about 2.7 ms, QEMU microvm about 9 ms, QEMU about 38 ms",
            ),
            ("MirageOS on Solo5", "1-2 ms"),
            ("OSv", "4-5 ms"),
            ("Lupine Linux", "about 18 ms without KML, 68 ms with"),
            ("LightVM (Xen, noxs + chaos)", "2.3 ms VM creation"),
            ("Alpine Linux VM on Firecracker", "about 330 ms"),
            ("Docker hello-world (start to exit)", "about 66 ms"),
        ),
    ),
    PublishedTable(
        suite="threads",
        title="Thread creation and timer jitter",
        source=f"{MIRAGE_PAPER} (about)",
        columns=("experiment", "result"),
        rows=(
            ("create 20 M threads", "Mirage 1.6 s, Linux native 2.3 s, Linux guest 4.3 s"),
            ("create 1 M threads", "all about 0.2 s or less"),
            (
                "timer lateness (Fig. 7b)",
                "Mirage about 95 % within 0.05 ms; Linux native about "
                "0.09-0.10 ms; Linux guest about 0.11 ms",
            ),
        ),
    ),
    PublishedTable(
        suite="dns",
        title="Authoritative DNS, queries per second, zones of 100, 1,000 and 10,000 names",
        source=f"{MIRAGE_PAPER}; {ANCHORS}",
        columns=("system", "queries/s"),
        rows=(
            ("BIND9", "about 29k-52k"),
            ("NSD", "about 66k"),
            ("Mirage", "about 40k"),
            ("Mirage, memoised responses", "about 75k-78k"),
            ("PHP-DNS-SERVER (an interpreted-language analogue)", "14,233 (97.9 % completed)"),
        ),
    ),
    PublishedTable(
        suite="tcp",
        title="TCP throughput, iperf, offload disabled (Fig. 8)",
        source=MIRAGE_PAPER,
        columns=("direction", "1 flow (Mbit/s)", "10 flows (Mbit/s)"),
        rows=tuple((path, f"{one:g}", f"{ten:g}") for path, (one, ten) in TCP_FIG8.items()),
    ),
    PublishedTable(
        suite="block",
        title="Random block reads, 1 KiB to 4 MiB blocks",
        source=f"{MIRAGE_PAPER} (about)",
        columns=("system", "result"),
        rows=(
            ("Mirage", "matches Linux direct I/O: plateau about 1400-1450 MiB/s from 128 KiB"),
            ("Linux buffered", "about 300 MiB/s"),
        ),
    ),
    PublishedTable(
        suite="web",
        title="Static (Fig. 13) and dynamic (Fig. 12) web serving",
        source=f"{MIRAGE_PAPER} (about)",
        columns=("experiment", "result"),
        rows=(
            (
                "static web, connections/s (httperf)",
                "Apache2, 1 host x 6 vCPUs about 1660; 6 Mirage unikernels about 2040",
            ),
            (
                "dynamic web, Twitter-like appliance, sessions/s against clients (httperf)",
                "Mirage scales better (figure only)",
            ),
        ),
    ),
    PublishedTable(
        suite="web",
        title="Static pages with wrk (1 min, 14 threads, 30 connections, a 612 B page)",
        source="unikraft/eurosys21-artifacts, fig_13_nginx-perf (medians of 5 runs, derived); "
        + ANCHORS,
        columns=("system", "requests/s"),
        rows=(
            ("Unikraft nginx on QEMU", "291.9k"),
            ("native Linux nginx", "176.0k"),
            ("Docker nginx", "159.3k"),
            ("Linux microVM nginx on QEMU", "103.4k"),
            ("MirageOS on Solo5 (HTTP)", "25.9k"),
            ("locust, one FastHttpUser process (its docs)", "about 16k per core"),
        ),
    ),
    PublishedTable(
        suite="size",
        title="Image sizes, standard build → dead-code eliminated (Table 2)",
        source=MIRAGE_PAPER,
        columns=("appliance", "standard (MB)", "dead-code eliminated (MB)"),
        rows=(
            ("DNS", "0.449", "0.184"),
            ("web server", "0.673", "0.172"),
            ("OpenFlow switch", "0.393", "0.164"),
            ("OpenFlow controller", "0.392", "0.168"),
        ),
    ),
)


def series_for(
    suite: str, metric: str, param: str | None, values: Mapping[str, set[str]] | None = None
) -> list[PublishedSeries]:
    """The published series to draw on a figure of `metric` against `param`, whose samples
    have `values` (parameter -> the values it takes there)."""
    return [s for s in SERIES if s.matches(suite, metric, param, values or {})]


def tables_for(suite: str) -> list[PublishedTable]:
    return [t for t in TABLES if t.suite == suite]
