"""The headline of each suite: the unikernel against its reference, as one ratio.

Read the way our own comparison is read: the median of ours over the median of the reference,
with a 95 % bootstrap interval resampling both, and the accelerator each side ran under; for
example "TCP receive, unikernel-hosted ÷ linux-veth, offloads=off flows=1: 0.09".

Each headline names the measure, the pairs of targets worth comparing (a unikernel and the Linux
target closest to how it runs, in order of preference), and the parameter values that make the
comparison the paper's (each side's own, such as server=unikernel against server=nsd, and the
shared ones, in order of preference). The first pair the selected runs hold both sides of, at
the first parameter values both sides have, is the headline.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd  # type: ignore[import-untyped]

from harness.stats import ratio_of_medians_ci

Choice = Mapping[str, tuple[str, ...]]  # parameter -> acceptable values, preferred first

AS_VMS = (
    ("unikernel-qemu", "linux-vm-minimal"),
    ("unikernel-qemu", "linux-vm"),
    ("unikernel-xen", "linux-xen"),
)
AS_PROCESSES = (
    ("unikernel-hosted-veth", "linux-veth"),  # the same link: a veth pair
    ("unikernel-hosted", "linux-veth"),
    ("unikernel-hosted", "process"),
    ("unikernel-hosted", "docker"),
)
# Parameters that describe a target rather than the experiment: never matched across sides.
TARGET_PARAMS = frozenset({"accel", "memory", "hypervisor", "build"})


@dataclass(frozen=True)
class HeadlineSpec:
    suite: str
    measure: str  # what the ratio is of, in words
    metric: str
    pairs: tuple[tuple[str, str], ...]  # (ours, reference)
    shared: Choice = field(default_factory=dict)  # the same on both sides
    ours: Choice = field(default_factory=dict)
    reference: Choice = field(default_factory=dict)


@dataclass(frozen=True)
class Headline:
    spec: HeadlineSpec
    ours: str
    reference: str
    params: str  # the parameter values compared, as name=value
    ratio: float
    low: float
    high: float
    accel: str  # "native", "tcg", or "tcg / native" when the sides differ
    better: str
    runs: tuple[str, ...]
    n: tuple[int, int]

    @property
    def comparison(self) -> str:
        return f"{self.ours} ÷ {self.reference}"

    def sentence(self) -> str:
        settings = f", {self.params}" if self.params else ""
        return (
            f"{self.spec.measure}, {self.comparison}{settings}: {self.ratio:.2f} "
            f"[{self.low:.2f}, {self.high:.2f}] under {self.accel}"
        )


SPECS = (
    HeadlineSpec("boot", "Boot to service, as VMs", "time_to_service", AS_VMS),
    HeadlineSpec("boot", "Boot to service, as processes", "time_to_service", AS_PROCESSES),
    *(
        HeadlineSpec(
            "threads",
            measure,
            metric,
            AS_PROCESSES + AS_VMS,
            ours={"kind": ("uthread",)},
            reference={"kind": ("asyncio", "pthread")},
        )
        for measure, metric in (
            ("Thread creation", "thread_create_seconds"),
            ("Timer lateness p95", "lateness_p95"),
        )
    ),
    *(
        HeadlineSpec(
            "tcp",
            f"TCP {way}, offloads {offloads}",
            "throughput",
            AS_PROCESSES + AS_VMS,
            shared={"direction": (direction,), "offloads": (offloads,), "flows": ("1", "10")},
        )
        for offloads in ("off", "on")
        for way, direction in (("receive", "to-target"), ("send", "from-target"))
    ),
    HeadlineSpec(
        "block",
        "Random reads, direct",
        "read_throughput",
        AS_VMS + AS_PROCESSES,
        shared={"mode": ("direct",), "block_size": ("131072", "65536", "1048576", "4096")},
    ),
    HeadlineSpec(
        "dns",
        "DNS queries/s against NSD",
        "queries_per_second",
        AS_VMS + AS_PROCESSES,
        shared={"names": ("1000", "100", "10000")},
        ours={"server": ("unikernel",), "memoise": ("off", "on")},
        reference={"server": ("nsd",)},
    ),
    HeadlineSpec(
        "web",
        "Static web sessions/s against Apache2",
        "sessions_per_second",
        AS_VMS + AS_PROCESSES,
        shared={"app": ("static",), "users": ("50", "10", "100"), "generator": ("locust", "wrk")},
        ours={"server": ("unikernel",)},
        reference={"server": ("apache2", "nginx")},
    ),
    HeadlineSpec(
        "size",
        "Image size, pruned",
        "size_image",
        (
            ("unikernel-qemu", "linux-vm-minimal"),
            ("unikernel-qemu", "docker-minimal"),
            ("unikernel-hosted", "docker-minimal"),
            ("unikernel-qemu", "docker"),
        ),
        shared={"app": ("dns", "web", "boot-probe")},
        ours={"build": ("pruned",)},
    ),
)


def headlines(frame: pd.DataFrame, suite: str | None = None) -> list[Headline]:
    """The headline of each spec (of `suite`, or of every suite) the samples in `frame` (as
    figures.sample_frame builds it) can answer."""
    found = []
    for spec in SPECS:
        if suite is not None and spec.suite != suite:
            continue
        rows = frame[(frame["metric"] == spec.metric)] if not frame.empty else frame
        if "suite" in rows:
            rows = rows[rows["suite"] == spec.suite]
        headline = _first_answer(spec, rows)
        if headline:
            found.append(headline)
    return found


def _first_answer(spec: HeadlineSpec, rows: pd.DataFrame) -> Headline | None:
    if rows.empty:
        return None
    for ours, reference in spec.pairs:
        mine = _choose(rows[rows["target"] == ours], spec.ours)
        theirs = _choose(rows[rows["target"] == reference], spec.reference)
        if mine.empty or theirs.empty:
            continue
        for values in _combinations(spec.shared, mine, theirs):
            a = _where(mine, values)
            b = _where(theirs, values)
            if a.empty or b.empty:
                continue
            a, b = _same_experiment(a, b, {*spec.ours, *spec.reference})
            if a.empty or b.empty:
                continue
            return _headline(spec, ours, reference, a, b, values)
    return None


def _choose(rows: pd.DataFrame, choice: Choice) -> pd.DataFrame:
    """The rows at each parameter's most preferred value that is present."""
    for name, preferred in choice.items():
        column = f"param:{name}"
        if column not in rows:
            continue
        present = set(rows[column].astype(str))
        value = next((v for v in preferred if v in present), None)
        if value is None:
            return rows.iloc[0:0]
        rows = rows[rows[column].astype(str) == value]
    return rows


def _combinations(shared: Choice, mine: pd.DataFrame, theirs: pd.DataFrame) -> list[dict[str, str]]:
    """The shared parameters' values, in order of preference; a parameter neither side has is
    left out."""
    names = [n for n in shared if f"param:{n}" in mine or f"param:{n}" in theirs]
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(shared[n] for n in names))
    ]


def _where(rows: pd.DataFrame, values: Mapping[str, str]) -> pd.DataFrame:
    for name, value in values.items():
        column = f"param:{name}"
        if column not in rows:
            return rows.iloc[0:0]
        rows = rows[rows[column].astype(str) == value]
    return rows


def _same_experiment(
    a: pd.DataFrame, b: pd.DataFrame, own: set[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both sides at the same values of every other parameter they both have, other than each
    side's own (the first such setting in the order the runs measured them)."""
    common = [
        c
        for c in a.columns
        if c.startswith("param:")
        and c in b.columns
        and c.removeprefix("param:") not in TARGET_PARAMS | own
        and a[c].notna().all()
        and b[c].notna().all()
    ]
    if not common:
        return a, b
    key_a = a[common].astype(str).agg("|".join, axis=1)
    key_b = b[common].astype(str).agg("|".join, axis=1)
    both = [k for k in dict.fromkeys(key_a) if k in set(key_b)]
    if not both:
        return a.iloc[0:0], b.iloc[0:0]
    return a[key_a == both[0]], b[key_b == both[0]]


def _headline(
    spec: HeadlineSpec,
    ours: str,
    reference: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    values: Mapping[str, str],
) -> Headline:
    mine = [float(v) for v in a["value"]]
    theirs = [float(v) for v in b["value"]]
    median_a = float(pd.Series(mine).median())
    median_b = float(pd.Series(theirs).median())
    ratio = median_a / median_b if median_b else math.nan
    low, high = ratio_of_medians_ci(theirs, mine)
    accels = list(dict.fromkeys([*a["accel"], *b["accel"]]))
    settings = dict(values)
    for side, choice in ((a, spec.ours), (b, spec.reference)):
        for name in choice:
            column = f"param:{name}"
            if column in side and side[column].notna().all():
                label = name if side is a else f"{name} (reference)"
                settings[label] = str(side[column].iloc[0])
    return Headline(
        spec=spec,
        ours=ours,
        reference=reference,
        params=" ".join(f"{k}={v}" for k, v in settings.items()),
        ratio=ratio,
        low=low,
        high=high,
        accel=" / ".join(accels),
        better=str(a["better"].iloc[0]),
        runs=tuple(dict.fromkeys([*a["run"], *b["run"]])),
        n=(len(mine), len(theirs)),
    )


def pairs_for(suite: str) -> list[tuple[str, str]]:
    """The (ours, reference) pairs a suite's headlines look for, in order of preference."""
    return list(dict.fromkeys(pair for spec in SPECS if spec.suite == suite for pair in spec.pairs))


def references_for(suite: str) -> list[str]:
    """The Linux targets a suite's headlines compare with, in order of preference."""
    return list(dict.fromkeys(reference for _, reference in pairs_for(suite)))
