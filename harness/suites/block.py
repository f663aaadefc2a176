"""The block suite: random block reads from a disk, as the paper's storage figure measured them.

What it needs: the suite's data file (baselines/block_data.py: 1 GiB written by fio, every
1 KiB stamped with its offset and checksum) attached read-only as the workload's disk "data":
a file to a process or a hosted unikernel, a bind mount into a container, a virtio-blk device
(cache=none) in a VM. Debian's fio reads it on Linux targets; the block-read appliance
(unikernel/apps/blockread) on the unikernels.
How it runs: one launch per repeat, reading at random block-aligned offsets for `seconds` with
`depth` reads in flight, direct (O_DIRECT) or buffered (through the guest's page cache).
What it returns: MiB/s, IOPS and the latency p50 and p99 of a read. A block that is not the one
asked for (wrong offset, blank, corrupt) fails the repeat: never a fast sample.

Parameters: block_size (bytes, 1 KiB to 4 MiB in powers of two), mode (direct, buffered),
depth (1 and 8), seconds (2). VM targets also record their disk cache mode (disk_cache), so
linux-vm-minimal and unikernel-qemu are compared on the same kind of device.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from baselines import block_data
from harness.model import Measurement, Metric, Params
from harness.suites.base import MEMORY, Param, RepeatContext, Suite, choice, seconds, whole
from harness.targets.base import Log, Target, Workload
from unikernel.devices import Console, Disk
from workloads import linux_script, unikernel_app

THROUGHPUT = Metric("read_throughput", "MiB/s", "higher")
IOPS = Metric("read_iops", "IOPS", "higher")
LATENCY_P50 = Metric("read_latency_p50", "s", "lower")
LATENCY_P99 = Metric("read_latency_p99", "s", "lower")
RESULT = "UNIBENCH-RESULT"

BLOCK_SIZES = tuple(str(1024 << shift) for shift in range(13))  # 1 KiB .. 4 MiB
DEFAULTS: dict[str, tuple[str, ...]] = {
    "block_size": BLOCK_SIZES,
    "mode": ("direct", "buffered"),
    "depth": ("1", "8"),
    "seconds": ("2",),
}
MODES = ("direct", "buffered")


@functools.cache
def block_read_workload(data: Path) -> Workload:
    """The workload, its disk backed by the file `data`."""
    return Workload(
        name="block-read",
        script=linux_script("block_read", "block_read.py"),
        args=(
            "--device",
            "{data}",
            "--block-size",
            "{block_size}",
            "--depth",
            "{depth}",
            "--seconds",
            "{seconds}",
            "--mode",
            "{mode}",
        ),
        devices=(
            Console(ready_marker=RESULT),
            Disk("data", read_only=True, backing=str(data)),
        ),
        unikernel_app=unikernel_app("block_read"),
        programs=("fio",),
    )


class BlockSuite(Suite):
    name = "block"
    params: ClassVar[Mapping[str, Param] | None] = {
        "block_size": whole("bytes", minimum=1024, multiple_of=1024),
        "mode": choice(*MODES),
        "depth": whole("reads in flight"),
        "seconds": seconds(),
        "memory": MEMORY,
    }
    description = "random block reads, 1 KiB to 4 MiB, direct and buffered (fio on Linux)"
    metrics = (THROUGHPUT, IOPS, LATENCY_P50, LATENCY_P99)
    default_repeat = 3
    default_warmup = 0  # each repeat is a fresh launch over a cold device

    def __init__(self, data_mib: int = block_data.SIZE_MIB, data: Path | None = None) -> None:
        """Reads the suite's data file of `data_mib` MiB (made by prepare() when missing), or
        the file `data` as it is."""
        self._data_mib = data_mib
        self._data = data

    def data(self) -> Path:
        return self._data if self._data is not None else block_data.data_path(self._data_mib)

    def workload(self, target: Target) -> Workload:
        return block_read_workload(self.data())

    def param_sets(self, requested: Mapping[str, Sequence[str]], target: Target) -> list[Params]:
        chosen = {**DEFAULTS, **requested}
        for mode in chosen["mode"]:
            if mode not in MODES:
                raise ValueError(f"mode={mode}: say direct or buffered")
        for size in chosen["block_size"]:
            if not size.isdigit() or int(size) < 1024 or int(size) % 1024:
                raise ValueError(f"block_size={size}: bytes, a multiple of 1024 (1 KiB units)")
        sets = super().param_sets(chosen, target)
        if target.disk_cache is not None:
            sets = [{**params, "disk_cache": target.disk_cache} for params in sets]
        return sets

    def prepare(
        self, target: Target, workload: Workload, param_sets: Sequence[Params], log: Log
    ) -> None:
        if self._data is None and not self.data().is_file():
            log(f"writing the block data ({self._data_mib} MiB with fio)")
            block_data.ensure_data_file(self._data_mib)

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        instance = ctx.create(self.workload(target))
        instance.start()
        _, line = instance.console.wait_for(RESULT, ctx.deadline)
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        if int(fields["bad_blocks"]):
            problems = [text for _, text in instance.console.lines() if "block-read:" in text]
            raise RuntimeError(
                f"{fields['bad_blocks']} blocks read were not the ones asked for: "
                + ("; ".join(problems)[-500:] or "no detail")
            )
        if not int(fields["reads"]):
            raise RuntimeError("the workload completed no read")
        return [
            Measurement(THROUGHPUT, float(fields["mib_per_s"])),
            Measurement(IOPS, float(fields["iops"])),
            Measurement(LATENCY_P50, float(fields["lat_p50"])),
            Measurement(LATENCY_P99, float(fields["lat_p99"])),
        ]
