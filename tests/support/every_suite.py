"""A store holding every suite with the parameter sweeps its real runs have: the metrics,
units, parameters and targets each suite stores (see harness/suites/), values from a simple
model with noise, two runs of each so that history pages exist."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

import numpy as np

from harness.model import Params, Run
from harness.store import Store
from tests.support.stored_runs import sample

ACCEL = {
    "process": "native",
    "docker": "native",
    "docker-minimal": "native",
    "linux-veth": "native",
    "unikernel-hosted": "native",
    "unikernel-qemu": "tcg",
    "linux-vm": "tcg",
    "linux-vm-minimal": "tcg",
}
METADATA: dict[str, object] = {
    "hostname": "bench-1",
    "cpu_model": "AMD EPYC",
    "cpu_count": 2,
    "kernel": "6.1.0",
    "targets": {t: {"accel": a} for t, a in ACCEL.items()},
}

# (target, metric, unit, better, params) -> median
Series = Iterator[tuple[str, str, str, str, Mapping[str, object], float]]


def grid(**values: tuple[object, ...]) -> Iterator[dict[str, object]]:
    for combination in itertools.product(*values.values()):
        yield dict(zip(values, combination, strict=True))


def vm_params(target: str) -> dict[str, object]:
    return {"accel": ACCEL[target], "memory": 512} if ACCEL[target] == "tcg" else {}


def boot() -> Series:
    for target in ("process", "docker", "unikernel-hosted", "unikernel-qemu", "linux-vm"):
        base = {"process": 0.03, "docker": 0.5, "unikernel-hosted": 0.05}.get(target, 2.0)
        memories = (64, 256, 1024) if ACCEL[target] == "tcg" else (None,)
        for memory in memories:
            params = {"accel": ACCEL[target], "memory": memory} if memory else {}
            scale = 1 + (memory or 0) / 2048
            yield target, "time_to_ready", "s", "lower", params, base * scale
            yield target, "time_to_service", "s", "lower", params, base * scale * 1.2
            yield target, "host_peak_memory", "bytes", "lower", params, 3e7 * scale


def threads() -> Series:
    for target, kinds in (("process", ("asyncio", "pthread")), ("unikernel-hosted", ("uthread",))):
        for kind in kinds:
            cost = {"asyncio": 7e-6, "pthread": 9e-5, "uthread": 1.5e-6}[kind]
            for count in (10_000, 100_000, 1_000_000):
                params = {"mode": "create", "kind": kind, "count": count, **vm_params(target)}
                yield target, "thread_create_seconds", "s", "lower", params, cost * count
            params = {"mode": "jitter", "kind": kind, "count": 100_000, "period": 10.0}
            for name, lateness in (("p50", 5e-5), ("p95", 2e-4), ("p99", 1e-3)):
                yield target, f"lateness_{name}", "s", "lower", params, lateness * (1 + len(kind))


def tcp() -> Series:
    speeds = {"linux-veth": 6000, "process": 17000, "unikernel-hosted": 520, "unikernel-qemu": 40}
    for target, speed in speeds.items():
        offloads = ("off", "on") if target != "process" else ("on",)
        for p in grid(direction=("to-target", "from-target"), flows=(1, 10), offloads=offloads):
            params = {**p, "seconds": 5, **vm_params(target)}
            value = speed * (2.5 if p["offloads"] == "on" else 1) * (0.8 if p["flows"] == 10 else 1)
            yield target, "throughput", "Mbit/s", "higher", params, value
            yield target, "retransmits", "segments", "lower", params, 10 + value / 100


def block() -> Series:
    for target in ("unikernel-qemu", "linux-vm"):
        for p in grid(
            block_size=(1024, 4096, 65536, 131072, 1 << 20, 4 << 20),
            mode=("direct", "buffered"),
            depth=(1, 8),
        ):
            params = {**p, "seconds": 2, **vm_params(target)}
            size = cast(int, p["block_size"])
            mib = min(size / 200, 1400) * (1.5 if p["mode"] == "buffered" else 1)
            yield target, "read_throughput", "MiB/s", "higher", params, mib
            yield target, "read_latency_p50", "s", "lower", params, size / (mib * 2**20)


def dns() -> Series:
    sides = (
        ("process", {"server": "nsd"}, 100_000),
        ("process", {"server": "bind9"}, 90_000),
        ("linux-vm", {"server": "nsd"}, 20_000),
        ("unikernel-hosted", {"server": "unikernel", "memoise": "off"}, 45_000),
        ("unikernel-hosted", {"server": "unikernel", "memoise": "on"}, 90_000),
        ("unikernel-qemu", {"server": "unikernel", "memoise": "off"}, 2_700),
        ("unikernel-qemu", {"server": "unikernel", "memoise": "on"}, 6_000),
    )
    for target, side, qps in sides:
        for names in (100, 1000, 10000):
            params: dict[str, object] = {**side, "names": names, "seconds": 5}
            params |= vm_params(target)
            yield target, "queries_per_second", "queries/s", "higher", params, qps
            yield target, "query_latency_p50", "s", "lower", params, 1 / qps


def web() -> Series:
    sides = (
        ("process", {"app": "static", "server": "nginx"}, 7000),
        ("process", {"app": "static", "server": "apache2"}, 5000),
        ("process", {"app": "dynamic", "server": "sockets"}, 600),
        ("unikernel-hosted", {"app": "static", "server": "unikernel"}, 3300),
        ("unikernel-hosted", {"app": "dynamic", "server": "unikernel"}, 300),
        ("unikernel-qemu", {"app": "static", "server": "unikernel"}, 300),
        ("linux-vm", {"app": "static", "server": "apache2"}, 560),
    )
    for target, side, rate in sides:
        for users in (10, 50, 100):
            params: dict[str, object] = {**side, "users": users, "generator": "locust"}
            params |= {"seconds": 10, "instances": 1, **vm_params(target)}
            yield target, "requests_per_second", "requests/s", "higher", params, rate
            yield target, "sessions_per_second", "sessions/s", "higher", params, rate / 4
            yield target, "request_latency_p95", "s", "lower", params, users / rate


def size() -> Series:
    images = {
        ("docker", None): {"image": 160e6, "base_image": 159e6},
        ("docker-minimal", None): {"image": 40e6, "base_image": 39e6},
        ("linux-vm-minimal", None): {"image": 70e6, "kernel": 8e6, "initrd": 30e6},
        ("unikernel-hosted", "standard"): {"image": 12e6, "bytecode": 12e6},
        ("unikernel-hosted", "pruned"): {"image": 2e6, "bytecode": 2e6},
        ("unikernel-qemu", "standard"): {
            "image": 52e6,
            "kernel": 15e6,
            "initramfs": 37e6,
            "interpreter": 7e6,
            "libraries": 15e6,
            "bytecode": 12e6,
        },
        ("unikernel-qemu", "pruned"): {
            "image": 27e6,
            "kernel": 15e6,
            "initramfs": 12e6,
            "interpreter": 7e6,
            "libraries": 3e6,
            "bytecode": 1.2e6,
        },
    }
    for app, scale in (("boot-probe", 1.0), ("dns", 1.2), ("web", 1.5)):
        for (target, build), parts in images.items():
            params = {"app": app, **({"build": build} if build else {})}
            for part, size in parts.items():
                yield target, f"size_{part}", "bytes", "lower", params, size * scale
                yield target, f"size_{part}_compressed", "bytes", "lower", params, size / 3


SUITES = {
    "boot": boot,
    "threads": threads,
    "tcp": tcp,
    "block": block,
    "dns": dns,
    "web": web,
    "size": size,
}


def fill(path: Path, runs_per_suite: int = 2, repeats: int = 3) -> list[str]:
    """Stores runs of every suite in `path`; returns their ids, oldest first."""
    rng = np.random.default_rng(7)
    ids = []
    with Store(path) as store:
        for i in range(runs_per_suite):
            for s, (suite, series) in enumerate(SUITES.items()):
                run_id = f"{suite}-{i}"
                started = 1_700_000_000.0 + 3600 * (i * len(SUITES) + s)
                metadata = json.loads(json.dumps(METADATA))
                store.begin_run(Run(id=run_id, started=started, command="t", metadata=metadata))
                n = 1 if suite == "size" else repeats
                for target, metric, unit, better, params, median in series():
                    clean = cast(Params, {k: v for k, v in params.items() if v is not None})
                    for repeat in range(n):
                        noise = 0.0 if suite == "size" else 0.03 * rng.standard_normal()
                        value = median * (1 + noise)
                        key = (target, metric, unit, better)
                        store.add_sample(sample(run_id, suite, key, clean, repeat, started, value))
                store.end_run(run_id, started + 100, "complete")
                ids.append(run_id)
    return ids
