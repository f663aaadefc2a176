"""The raw disk driver's two I/O engines side by side: Linux AIO and a few OS threads, on one
256 MiB file of random bytes opened with O_DIRECT, as fio's randread would read it: 4 KiB at
queue depth 1 and 8, 128 KiB at depth 1.

Run them with `pytest tests/unikernel/block/test_engines_bench.py --benchmark-enable`; by default
(--benchmark-disable) each body runs once, as a test. Each round is one run() of the scheduler
doing a fixed number of reads; both engines read the same offsets, round for round. Speed goals
live in the benchmark results, not here: the tests only check that the reads brought the right
bytes.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from unikernel.block.pages import io_pages
from unikernel.core.scheduler import run, spawn
from unikernel.drivers.rawdisk import RawDisk

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.drivers.rawdisk import Engine

FILE_SIZE = 256 * 2**20
CHUNK = 2**20


@pytest.fixture(scope="module")
def disk_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A file of random bytes, written back to the disk so that the first direct read does not
    wait for the page cache's writeback."""
    path = tmp_path_factory.mktemp("engines") / "disk.img"
    with open(path, "wb") as file:
        for _ in range(FILE_SIZE // CHUNK):
            file.write(os.urandom(CHUNK))
        file.flush()
        os.fsync(file.fileno())
    return str(path)


def _case(size: int, depth: int, reads: int) -> Any:
    name = f"{size // 1024}k-qd{depth}"
    return pytest.param(
        size,
        depth,
        reads,
        id=name,
        marks=pytest.mark.benchmark(group=f"random {size // 1024} KiB reads, queue depth {depth}"),
    )


@pytest.mark.parametrize("engine", ["aio", "threads"])
@pytest.mark.parametrize(
    ("size", "depth", "reads"),
    [_case(4096, 1, 1000), _case(4096, 8, 4000), _case(131072, 1, 400)],
)
def test_random_direct_reads(
    benchmark: Any, disk_image: str, engine: Engine, size: int, depth: int, reads: int
) -> None:
    disk = RawDisk(disk_image, read_only=True, direct=True, engine=engine)
    blocks = disk.capacity // size
    buffers = [io_pages(size)[:size] for _ in range(depth)]
    rounds = done = 0
    samples: list[tuple[int, bytes]] = []  # (offset, bytes read) of each reader's last read

    async def reader(index: int, count: int) -> None:
        nonlocal done
        pick = random.Random(f"{rounds}-{index}").randrange
        buffer = buffers[index]
        offset = 0
        for _ in range(count):
            offset = pick(blocks) * size
            await disk.read(offset, buffer)
            done += 1
        samples.append((offset, bytes(buffer)))

    async def main() -> None:
        threads = [spawn(reader, index, reads // depth) for index in range(depth)]
        for thread in threads:
            await thread.join()

    def one_round() -> int:
        nonlocal rounds, done
        rounds += 1
        done = 0
        run(main)
        return done

    benchmark.extra_info.update(engine=engine, block_size=size, depth=depth, reads=reads)
    try:
        assert benchmark(one_round) == reads
    finally:
        disk.close()
    assert len(samples) == rounds * depth
    with open(disk_image, "rb") as file:
        for offset, got in samples[:: max(1, len(samples) // 16)]:
            assert got == os.pread(file.fileno(), size, offset), f"wrong bytes at {offset}"
