"""Random reads over a disk, as fio's randread does them: the block suite's appliance.

`depth` threads each keep one read in flight, at uniformly random block-aligned offsets, for
`seconds`; every block is checked by its stamps (stamps.py) and a wrong one is reported, never
counted as a fast read. Parameters come from the environment, as every appliance's:
UNIBENCH_BLOCK_SIZE (bytes), UNIBENCH_DEPTH, UNIBENCH_SECONDS, UNIBENCH_MODE (direct: O_DIRECT,
straight to the device; buffered: through the kernel's page cache).

It prints one line the harness reads, with the same fields as the Linux side's fio wrapper:
    UNIBENCH-RESULT mib_per_s=... iops=... lat_p50=... lat_p99=... reads=... bad_blocks=...
"""

from __future__ import annotations

import os
import random

from unikernel.apps.blockread.stamps import UNIT, check_block
from unikernel.block.pages import io_pages
from unikernel.core.scheduler import now, spawn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.block.interface import BlockDevice
    from unikernel.core.devices import Devices

RESULT = "UNIBENCH-RESULT"
MODES = ("direct", "buffered")


class Settings:
    __slots__ = ("block_size", "depth", "direct", "seconds")

    def __init__(self, environ: dict[str, str] | os._Environ[str]) -> None:
        self.block_size = int(environ.get("UNIBENCH_BLOCK_SIZE", "4096"))
        self.depth = int(environ.get("UNIBENCH_DEPTH", "1"))
        self.seconds = float(environ.get("UNIBENCH_SECONDS", "5"))
        mode = environ.get("UNIBENCH_MODE", "direct")
        if mode not in MODES:
            raise ValueError(f"UNIBENCH_MODE={mode}: say direct or buffered")
        self.direct = mode == "direct"
        if self.block_size < UNIT or self.block_size % UNIT:
            raise ValueError(f"UNIBENCH_BLOCK_SIZE={self.block_size}: a multiple of {UNIT}")
        if not 1 <= self.depth <= 1024 or self.seconds <= 0:
            raise ValueError("UNIBENCH_DEPTH is 1 to 1024 and UNIBENCH_SECONDS above 0")


class Outcome:
    __slots__ = ("bad", "latencies", "problem")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.bad = 0
        self.problem: str | None = None


async def random_reads(disk: BlockDevice, settings: Settings) -> tuple[Outcome, float]:
    """Reads until `seconds` have passed; the outcome and the seconds it took."""
    size = settings.block_size
    blocks = disk.capacity // size
    if blocks == 0:
        raise ValueError(f"the disk ({disk.capacity} bytes) is smaller than one block of {size}")
    outcome = Outcome()
    began = now()
    end = began + settings.seconds

    async def reader(seed: int) -> None:
        pick = random.Random(seed).randrange
        buffer = io_pages(size)[:size]
        latencies = outcome.latencies
        while True:
            start = now()
            if start >= end:
                return
            offset = pick(blocks) * size
            await disk.read(offset, buffer)
            latencies.append(now() - start)
            if len(latencies) % blocks == 0:
                # A pass over the disk's worth of blocks: fio drops the page cache before each
                # pass of a timed run (its invalidate=1), so a buffered read is as cold here.
                disk.expect_random_reads()
            problem = check_block(buffer, offset)
            if problem is not None:
                outcome.bad += 1
                outcome.problem = outcome.problem or problem

    readers = [spawn(reader, seed) for seed in range(settings.depth)]
    for thread in readers:
        await thread.join()
    return outcome, now() - began


def quantile(ordered: list[float], q: float) -> float:
    return ordered[round(q * (len(ordered) - 1))]


async def main(devices: Devices) -> int:
    console = devices.console
    try:
        settings = Settings(os.environ)
    except ValueError as error:
        console.line(f"block-read: {error}")
        return 2
    disk = await devices.disk("data").block(direct=settings.direct)
    disk.expect_random_reads()  # buffered: from a cold page cache, as fio reads
    try:
        outcome, elapsed = await random_reads(disk, settings)
    finally:
        disk.close()
    reads = len(outcome.latencies)
    if outcome.problem is not None:
        console.line(f"block-read: {outcome.bad} wrong blocks, the first: {outcome.problem}")
    ordered = sorted(outcome.latencies)
    console.line(
        f"{RESULT} mib_per_s={reads * settings.block_size / elapsed / 2**20:.3f} "
        f"iops={reads / elapsed:.1f} lat_p50={quantile(ordered, 0.5):.9f} "
        f"lat_p99={quantile(ordered, 0.99):.9f} reads={reads} bad_blocks={outcome.bad}"
    )
    return 0 if outcome.bad == 0 else 1
