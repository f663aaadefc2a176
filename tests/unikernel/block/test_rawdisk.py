"""The block interface on the hosted raw disk driver (drivers/rawdisk.py): a file opened with
O_DIRECT or through the page cache, its requests on Linux AIO or on a few OS threads.

Every test runs on the real clock (the kernel does the I/O), inside a deadline that turns a
hang into a failure. A raw block device is a loop device the test attaches to a file of its
own, where it may (root, losetup).
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import fcntl
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from unikernel.block.interface import BlockError
from unikernel.block.pages import io_pages
from unikernel.core.scheduler import (
    Cancelled,
    CancelScope,
    fail_after,
    move_on_after,
    now,
    run,
    sleep,
    spawn,
    yield_,
)
from unikernel.drivers import rawdisk
from unikernel.drivers.linux_aio import dio_offset_alignment
from unikernel.drivers.rawdisk import RawDisk

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.drivers.rawdisk import Engine

T = TypeVar("T")

ENGINES = ("aio", "threads")
FILE_SIZE = 4 * 2**20
MAX_REQUEST = 65536  # bytes: the largest request the tests make
DEADLINE = 60.0  # seconds a test's run() may take before it counts as hung


def drive(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """run(body) on the real clock; a hang raises TimeoutError instead of stalling the suite."""

    async def main() -> T:
        with fail_after(DEADLINE):
            result = await body()
        return result

    return run(main)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    chosen: Engine = request.param
    return chosen


@pytest.fixture(params=[True, False], ids=["direct", "buffered"])
def direct(request: pytest.FixtureRequest) -> bool:
    chosen: bool = request.param
    return chosen


@pytest.fixture
def disk_file(tmp_path: Path) -> tuple[str, bytes]:
    """A file of FILE_SIZE random bytes, and its bytes."""
    data = random.Random(1).randbytes(FILE_SIZE)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    return str(path), data


def random_request(rng: random.Random, disk: RawDisk) -> tuple[int, int]:
    """(offset, size) of a request of whole sectors inside the device, up to MAX_REQUEST.
    (A file's sectors are 512 bytes, or 4 KiB for O_DIRECT on a disk of 4 KiB sectors.)"""
    sector = disk.sector_size
    sectors = rng.randint(1, min(MAX_REQUEST, disk.capacity) // sector)
    offset = rng.randrange(disk.capacity // sector - sectors + 1) * sector
    return offset, sectors * sector


def same_bytes(got: memoryview, expected: bytes, offset: int) -> None:
    """Assert the read at `offset` brought `expected`, reporting where it first differs."""
    actual = bytes(got)
    if actual != expected:
        pairs = enumerate(zip(actual, expected, strict=False))
        first = next((i for i, (a, b) in pairs if a != b), min(len(actual), len(expected)))
        pytest.fail(
            f"read of {len(expected)} bytes at {offset} ({len(actual)} in the buffer): wrong "
            f"from byte {first} on (device offset {offset + first})"
        )


# Reads and writes


def test_reads_return_the_files_bytes_at_random_offsets_and_sizes(
    disk_file: tuple[str, bytes], engine: Engine, direct: bool
) -> None:
    path, data = disk_file
    rng = random.Random(2)

    async def body() -> int:
        disk = RawDisk(path, read_only=True, direct=direct, engine=engine)
        try:
            assert disk.engine == engine
            buffer = io_pages(MAX_REQUEST)
            sector = disk.sector_size
            edges = [(0, sector), (FILE_SIZE - sector, sector), (FILE_SIZE - 65536, 65536)]
            requests = edges + [random_request(rng, disk) for _ in range(300)]
            for offset, size in requests:
                view = buffer[:size]
                await disk.read(offset, view)
                same_bytes(view, data[offset : offset + size], offset)
            return len(requests)
        finally:
            disk.close()

    assert drive(body) == 303


def test_writes_read_back_and_are_in_the_file_after_a_flush(
    disk_file: tuple[str, bytes], engine: Engine, direct: bool
) -> None:
    path, data = disk_file
    model = bytearray(data)
    rng = random.Random(3)

    async def body() -> None:
        disk = RawDisk(path, read_only=False, direct=direct, engine=engine)
        try:
            page = io_pages(MAX_REQUEST)
            back = io_pages(MAX_REQUEST)
            for _ in range(100):
                offset, size = random_request(rng, disk)
                block = rng.randbytes(size)
                page[:size] = block
                await disk.write(offset, page[:size])
                model[offset : offset + size] = block
                await disk.read(offset, back[:size])
                same_bytes(back[:size], block, offset)
            # Overlapping writes: the last one wins, as it would on a disk.
            for offset, size in random.Random(4).sample(
                [(o * disk.sector_size, 8 * disk.sector_size) for o in range(64)], 16
            ):
                block = rng.randbytes(size)
                page[:size] = block
                await disk.write(offset, page[:size])
                model[offset : offset + size] = block
            await disk.flush()
            whole = io_pages(FILE_SIZE)
            await disk.read(0, whole)
            same_bytes(whole, bytes(model), 0)
        finally:
            disk.close()

    drive(body)
    assert Path(path).read_bytes() == model  # through the page cache, as any reader sees it


def test_a_write_may_come_from_a_read_only_view_of_io_pages(
    disk_file: tuple[str, bytes], engine: Engine, direct: bool
) -> None:
    """Writes only read their buffer: a read-only view of I/O pages is as good (ctypes could
    not map one for AIO, which raised TypeError where the threads engine wrote)."""
    path, _ = disk_file
    block = random.Random(5).randbytes(8192)

    async def body() -> None:
        disk = RawDisk(path, read_only=False, direct=direct, engine=engine)
        try:
            page = io_pages(8192)
            page[:] = block
            await disk.write(4096, page.toreadonly())
            await disk.flush()
        finally:
            disk.close()

    drive(body)
    assert Path(path).read_bytes()[4096 : 4096 + 8192] == block


def test_the_default_engine_follows_the_mode(disk_file: tuple[str, bytes]) -> None:
    """The default engine follows the mode: AIO for O_DIRECT, OS threads when buffered (where
    io_submit would block the scheduler)."""
    path, _ = disk_file
    for direct, expected in ((True, "aio"), (False, "threads")):
        disk = RawDisk(path, read_only=True, direct=direct)
        try:
            assert disk.engine == expected
            assert disk.direct is direct
            assert os.get_blocking(disk._fd)  # the engine, not the file, keeps us from blocking
            flags = fcntl.fcntl(disk._fd, fcntl.F_GETFL)
            assert flags & os.O_DIRECT == (os.O_DIRECT if direct else 0)
        finally:
            disk.close()


# Many requests in flight


def test_many_threads_with_reads_in_flight_each_get_their_own_data_and_time_goes_on(
    disk_file: tuple[str, bytes], engine: Engine, direct: bool
) -> None:
    path, data = disk_file
    readers = 64
    tick = 0.001

    async def body() -> tuple[int, float, int, int]:
        disk = RawDisk(path, read_only=True, direct=direct, engine=engine)
        ticks = reads = in_flight = most = 0
        reading = True

        async def ticker() -> None:
            nonlocal ticks
            while reading:
                await sleep(tick)
                ticks += 1

        async def reader(seed: int, began: float) -> None:
            nonlocal reads, in_flight, most
            rng = random.Random(seed)
            buffer = io_pages(MAX_REQUEST)
            done = 0
            # A few reads each, and for long enough that the ticker's count means something.
            while done < 8 or now() < began + 0.3:
                offset, size = random_request(rng, disk)
                view = buffer[:size]
                in_flight += 1
                most = max(most, in_flight)
                try:
                    await disk.read(offset, view)
                finally:
                    in_flight -= 1
                same_bytes(view, data[offset : offset + size], offset)
                done += 1
            reads += done

        try:
            ticking = spawn(ticker)
            began = now()
            threads = [spawn(reader, seed, began) for seed in range(readers)]
            for thread in threads:
                await thread.join()
            elapsed = now() - began
            reading = False
            await ticking.join()
            return ticks, elapsed, most, reads
        finally:
            disk.close()

    ticks, elapsed, most, reads = drive(body)
    assert reads >= 8 * readers
    assert most >= readers // 2, f"at most {most} reads were in flight at once"
    # The ticker sleeps a millisecond at a time: it cannot tick more often than that, and it
    # ticks far less only if the reads block the scheduler. Bounds are loose on purpose.
    possible = elapsed / tick
    assert ticks <= possible + 2
    assert ticks >= possible / 20, f"{ticks} ticks in {elapsed:.3f} s: the scheduler was blocked"


# Requests the device refuses


def _pages(size: int) -> memoryview:
    return io_pages(max(size, 1))[:size]


# What a bad read asks, and what its error says, for a device of `s`-byte sectors:
# (offset, buffer, message).
BadRead = tuple[Callable[[int], int], Callable[[int], memoryview], Callable[[int], str]]
BAD_READS: dict[str, BadRead] = {
    "misaligned-offset": (lambda s: 100, _pages, lambda s: f"whole sectors of {s} bytes"),
    "misaligned-size": (
        lambda s: 0,
        lambda s: _pages(s + 100),
        lambda s: f"request of {s + 100} bytes at 0: offsets and sizes are whole sectors",
    ),
    "empty": (lambda s: 0, lambda s: _pages(0), lambda s: "request of 0 bytes"),
    "at-end": (lambda s: FILE_SIZE, _pages, lambda s: f"beyond the device's {FILE_SIZE} bytes"),
    "across-end": (
        lambda s: FILE_SIZE - s,
        lambda s: _pages(2 * s),
        lambda s: f"request of {2 * s} bytes at {FILE_SIZE - s}: beyond",
    ),
    "negative-offset": (lambda s: -s, _pages, lambda s: "beyond the device"),
    "strided": (lambda s: 0, lambda s: io_pages(4 * s)[::2][: 2 * s], lambda s: "contiguous"),
    "read-only-buffer": (
        lambda s: 0,
        lambda s: _pages(s).toreadonly(),
        lambda s: "contiguous, writable I/O pages",
    ),
}


@pytest.mark.parametrize("bad", BAD_READS.values(), ids=BAD_READS.keys())
def test_a_bad_read_raises_block_error_saying_what_is_wrong(
    disk_file: tuple[str, bytes], engine: Engine, direct: bool, bad: BadRead
) -> None:
    path, data = disk_file
    offset, make_buffer, message = bad

    async def body() -> None:
        disk = RawDisk(path, read_only=True, direct=direct, engine=engine)
        sector = disk.sector_size
        try:
            with pytest.raises(BlockError, match=re.escape(message(sector))):
                await disk.read(offset(sector), make_buffer(sector))
            page = io_pages(4096)  # and the device goes on
            await disk.read(8192, page)
            same_bytes(page, data[8192 : 8192 + 4096], 8192)
        finally:
            disk.close()

    drive(body)


def test_a_write_to_a_read_only_device_is_refused(
    disk_file: tuple[str, bytes], engine: Engine
) -> None:
    path, data = disk_file

    async def body() -> None:
        disk = RawDisk(path, read_only=True, engine=engine)
        try:
            assert disk.read_only
            page = io_pages(4096)
            page[:] = b"x" * 4096
            with pytest.raises(BlockError, match="write at 0: the device is read-only"):
                await disk.write(0, page)
            await disk.flush()  # nothing to make durable: a no-op
        finally:
            disk.close()

    drive(body)
    assert Path(path).read_bytes() == data


def test_a_closed_device_refuses_every_request(
    disk_file: tuple[str, bytes], engine: Engine
) -> None:
    path, _ = disk_file

    async def body() -> None:
        for read_only in (True, False):
            disk = RawDisk(path, read_only=read_only, engine=engine)
            disk.close()
            disk.close()  # twice is harmless
            page = io_pages(4096)
            with pytest.raises(BlockError, match="the device is closed"):
                await disk.read(0, page)
            with pytest.raises(BlockError, match="the device is closed"):
                await disk.flush()
            if not read_only:
                with pytest.raises(BlockError, match="the device is closed"):
                    await disk.write(0, page)

    drive(body)


def test_a_files_capacity_is_its_whole_sectors(tmp_path: Path, engine: Engine) -> None:
    path = tmp_path / "odd.img"
    data = random.Random(6).randbytes(FILE_SIZE + 100)  # a partial sector at the end
    path.write_bytes(data)
    # Through the page cache a file's sectors are 512 bytes (O_DIRECT's: the next test).
    disk = RawDisk(str(path), read_only=True, direct=False, engine=engine)
    try:
        assert (disk.sector_size, disk.capacity) == (512, FILE_SIZE)

        async def body() -> None:
            page = io_pages(512)[:512]
            await disk.read(FILE_SIZE - 512, page)
            same_bytes(page, data[FILE_SIZE - 512 : FILE_SIZE], FILE_SIZE - 512)
            with pytest.raises(BlockError, match="beyond"):
                await disk.read(FILE_SIZE, page)

        drive(body)
    finally:
        disk.close()

    empty = tmp_path / "empty.img"
    empty.touch()
    disk = RawDisk(str(empty), read_only=True, direct=False, engine=engine)
    try:
        assert (disk.sector_size, disk.capacity) == (512, 0)
    finally:
        disk.close()


def test_a_files_sectors_are_what_direct_io_needs_on_its_disk(
    disk_file: tuple[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_DIRECT needs requests aligned to the logical sectors of the disk under the file
    system: 512 bytes here, 4 KiB on a disk of 4 KiB sectors, where 512-byte requests would
    fail with EINVAL. statx tells (Linux 6.1 on); through the page cache any 512 will do."""
    path, _ = disk_file
    fd = os.open(path, os.O_RDONLY)
    try:
        alignment = dio_offset_alignment(fd)
    finally:
        os.close(fd)
    assert alignment is None or alignment >= 512  # the file system's disk's sector size
    for direct, expected in ((True, max(512, alignment or 0)), (False, 512)):
        disk = RawDisk(path, read_only=True, direct=direct)
        try:
            assert disk.sector_size == expected
        finally:
            disk.close()

    odd = tmp_path / "odd.img"
    odd.write_bytes(bytes(FILE_SIZE + 1024))
    monkeypatch.setattr(rawdisk, "dio_offset_alignment", lambda fd: 4096)  # a 4Kn disk

    async def body() -> None:
        disk = RawDisk(str(odd), read_only=True, direct=True)
        try:
            assert (disk.sector_size, disk.capacity) == (4096, FILE_SIZE)
            with pytest.raises(BlockError, match="whole sectors of 4096 bytes"):
                await disk.read(512, io_pages(512)[:512])
            await disk.read(FILE_SIZE - 4096, io_pages(4096))
        finally:
            disk.close()

    drive(body)


def test_an_unknown_engine_or_no_depth_is_refused(
    disk_file: tuple[str, bytes],
) -> None:
    path, _ = disk_file
    with pytest.raises(ValueError, match="engine='uring'"):
        RawDisk(path, read_only=True, engine="uring")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth=0"):
        RawDisk(path, read_only=True, depth=0)


# Cancellation and closing


def _count_engine_requests(disk: RawDisk, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the requests the engine holds now and at most, by wrapping its methods."""
    counts = {"now": 0, "most": 0}
    io = disk._io
    submit, completed = io.submit, io.completed

    def counting_submit(*args: Any) -> None:
        submit(*args)
        counts["now"] += 1
        counts["most"] = max(counts["most"], counts["now"])

    def counting_completed() -> list[tuple[int, int]]:
        done = completed()
        counts["now"] -= len(done)
        return done

    monkeypatch.setattr(io, "submit", counting_submit)
    monkeypatch.setattr(io, "completed", counting_completed)
    return counts


def test_reads_cancelled_in_flight_leave_the_others_and_the_device_working(
    disk_file: tuple[str, bytes], engine: Engine, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled request stays in the engine until it completes: its slot is not free before
    then, or more than `depth` requests would be in flight (AIO's io_submit refused them with
    EAGAIN)."""
    path, data = disk_file
    depth = 4
    disk = RawDisk(path, read_only=True, direct=direct, engine=engine, depth=depth)
    counts = _count_engine_requests(disk, monkeypatch)
    outcomes = {"read": 0, "cancelled": 0}

    async def reader(seed: int) -> None:
        offset, size = random_request(random.Random(seed), disk)
        view = io_pages(size)[:size]
        try:
            await disk.read(offset, view)
        except Cancelled:
            outcomes["cancelled"] += 1
            raise
        same_bytes(view, data[offset : offset + size], offset)
        outcomes["read"] += 1

    async def body() -> None:
        for round_ in range(60):
            threads = [spawn(reader, round_ * 100 + i) for i in range(3 * depth)]
            await yield_()  # every reader has submitted its request or waits for a slot
            for thread in threads[::2]:
                thread.cancel()
            for thread in threads:
                with contextlib.suppress(Cancelled):
                    await thread.join()
        # Timeouts cancel too, through a scope.
        page = io_pages(65536)
        for _ in range(50):
            with move_on_after(0):
                await disk.read(0, page)
        # The device still reads right, and every abandoned request is reaped in the end.
        for seed in range(100):
            await reader(10_000 + seed)
        with fail_after(10):
            while counts["now"]:
                await sleep(0.001)

    try:
        drive(body)
    finally:
        disk.close()
    assert outcomes["cancelled"] > 0
    assert outcomes["read"] >= 100 + 60 * depth  # the ones nobody cancelled, and the last 100
    assert counts["most"] <= depth, f"{counts['most']} requests in flight on {depth} slots"


def test_a_cancel_scope_around_many_readers_leaves_the_device_working(
    disk_file: tuple[str, bytes], engine: Engine
) -> None:
    path, data = disk_file

    async def body() -> None:
        disk = RawDisk(path, read_only=True, engine=engine)
        try:
            scopes: list[CancelScope] = []

            async def reader(seed: int) -> None:
                rng = random.Random(seed)
                buffer = io_pages(MAX_REQUEST)
                with CancelScope() as scope:
                    scopes.append(scope)
                    while True:
                        offset, size = random_request(rng, disk)
                        await disk.read(offset, buffer[:size])
                        same_bytes(buffer[:size], data[offset : offset + size], offset)

            threads = [spawn(reader, seed) for seed in range(32)]
            await sleep(0.05)
            for scope in scopes:
                scope.cancel()
            for thread in threads:
                await thread.join()  # its scope caught the Cancelled: each returns normally
            assert all(scope.cancelled_caught for scope in scopes)
            for seed in range(50):
                offset, size = random_request(random.Random(seed), disk)
                view = io_pages(size)[:size]
                await disk.read(offset, view)
                same_bytes(view, data[offset : offset + size], offset)
        finally:
            disk.close()

    drive(body)


def _os_threads() -> int:
    return _thread._count()  # threads started with _thread (the threads engine's workers)


def _wait_for_os_threads(at_most: int) -> int:
    deadline = time.monotonic() + 10
    while (count := _os_threads()) > at_most and time.monotonic() < deadline:
        time.sleep(0.01)
    return count


def test_close_with_reads_in_flight_fails_them_and_leaves_nothing_behind(
    disk_file: tuple[str, bytes], engine: Engine, direct: bool
) -> None:
    """close() wakes every requester with BlockError (they used to wait forever, the reaper on
    an eventfd closed under it); afterwards no OS worker touches the closed descriptors, and
    a device opened next, whose eventfd takes the same number, works."""
    path, data = disk_file
    threads_before = _os_threads()
    outcomes: list[str] = []

    async def reader(disk: RawDisk, seed: int) -> None:
        offset, size = random_request(random.Random(seed), disk)
        view = io_pages(size)[:size]
        try:
            await disk.read(offset, view)
        except BlockError as error:
            outcomes.append(str(error))
            return
        same_bytes(view, data[offset : offset + size], offset)
        outcomes.append("read")

    async def body() -> None:
        for round_ in range(5):
            disk = RawDisk(path, read_only=True, direct=direct, engine=engine)
            eventfd = disk._eventfd
            threads = [spawn(reader, disk, round_ * 100 + i) for i in range(32)]
            await yield_()  # all submitted
            disk.close()
            for thread in threads:
                await thread.join()
            with pytest.raises(BlockError, match="closed"):
                await disk.read(0, io_pages(4096))
            again = RawDisk(path, read_only=True, direct=direct, engine=engine)
            try:
                assert again._eventfd == eventfd  # the kernel reuses the lowest free number
                page = io_pages(65536)
                await again.read(65536, page)
                same_bytes(page, data[65536 : 2 * 65536], 65536)
            finally:
                again.close()

    drive(body)
    closed = [o for o in outcomes if o != "read"]
    assert len(outcomes) == 5 * 32
    assert closed, "close() came after every read had completed: nothing was tested"
    for message in closed:
        assert "the device was closed while the request was in flight" in message
    assert _wait_for_os_threads(threads_before) <= threads_before


def test_reads_left_in_flight_when_run_ends_do_not_spoil_the_next_run(
    disk_file: tuple[str, bytes], engine: Engine
) -> None:
    """main returns with reads in flight: run() cancels their threads (and the reaper); the
    same device then serves the next run()."""
    path, data = disk_file
    disk = RawDisk(path, read_only=True, engine=engine, depth=8)

    async def abandon() -> None:
        async def reader() -> None:
            await disk.read(0, io_pages(65536))

        for _ in range(16):
            spawn(reader)
        await yield_()

    async def use() -> None:
        for seed in range(100):
            offset, size = random_request(random.Random(seed), disk)
            view = io_pages(size)[:size]
            await disk.read(offset, view)
            same_bytes(view, data[offset : offset + size], offset)

    try:
        for _ in range(3):
            run(abandon)
            drive(use)
    finally:
        disk.close()


# Errors from below


def test_a_read_past_where_the_file_was_truncated_is_a_short_read_error(
    disk_file: tuple[str, bytes], engine: Engine, direct: bool
) -> None:
    """The capacity is the size at open; a file truncated since then ends early, as a disk
    whose medium shrank: the kernel moves fewer bytes, or none, and we say so."""
    path, data = disk_file
    disk = RawDisk(path, read_only=True, direct=direct, engine=engine)
    sector = disk.sector_size
    size = 8 * sector
    new_end = 2**20 + sector
    os.truncate(path, new_end)

    async def body() -> None:
        page = io_pages(size)[:size]
        moved = f"{sector} of {size} bytes moved"
        with pytest.raises(BlockError, match=f"at {new_end - sector}: {moved}"):
            await disk.read(new_end - sector, page)
        with pytest.raises(BlockError, match=f"at {2**21}: 0 of {size} bytes moved"):
            await disk.read(2**21, page)
        await disk.read(0, page)  # what is left still reads
        same_bytes(page, data[:size], 0)

    try:
        assert disk.capacity == FILE_SIZE
        drive(body)
    finally:
        disk.close()


def test_an_errno_from_below_is_a_block_error_with_that_errno(
    disk_file: tuple[str, bytes], engine: Engine
) -> None:
    """O_DIRECT needs memory aligned for DMA: a buffer that is not (here, a bytearray one byte
    off) passes check() but the kernel refuses it with EINVAL."""
    path, data = disk_file

    async def body() -> None:
        disk = RawDisk(path, read_only=False, direct=True, engine=engine)
        try:
            misaligned = memoryview(bytearray(8192 + 1))[1 : 1 + 4096]
            with pytest.raises(BlockError, match="at 4096: Invalid argument") as caught:
                await disk.read(4096, misaligned)
            assert caught.value.errno == errno.EINVAL
            with pytest.raises(BlockError, match="Invalid argument") as caught:
                await disk.write(4096, misaligned)
            assert caught.value.errno == errno.EINVAL
            page = io_pages(4096)
            await disk.read(4096, page)
            same_bytes(page, data[4096:8192], 4096)
        finally:
            disk.close()

    drive(body)


# A raw block device: a loop device on a file of the test's own


def _not_possible(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI must test a raw block device: {message}")
    pytest.skip(message)


@pytest.fixture(params=[512, 4096], ids=["512-byte-sectors", "4k-sectors"])
def loop_device(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, int, bytes]]:
    """A loop device over a file of 8 MiB random bytes, with the given logical sector size:
    (device path, sector size, bytes). Skipped where we may not attach one (failed under CI)."""
    sector: int = request.param
    problems = []
    if os.geteuid() != 0:
        problems.append("attaching a loop device needs root")
    if shutil.which("losetup") is None:
        problems.append("losetup is missing")
    if not os.path.exists("/dev/loop-control"):
        problems.append("/dev/loop-control is missing (no loop driver)")
    if problems:
        _not_possible("; ".join(problems))
    data = random.Random(7).randbytes(8 * 2**20)
    backing = tmp_path / "loop.img"
    backing.write_bytes(data)
    argv = ["losetup", "--find", "--show", "--sector-size", str(sector), str(backing)]
    attached = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    device = attached.stdout.strip()
    if attached.returncode != 0 or not device:
        _not_possible(f"losetup cannot attach a loop device: {attached.stderr.strip()}")
    try:
        yield device, sector, data
    finally:
        subprocess.run(["losetup", "--detach", device], timeout=60, check=True)


def test_a_block_devices_geometry_comes_from_its_ioctls_and_it_reads_right(
    loop_device: tuple[str, int, bytes], engine: Engine
) -> None:
    device, sector, data = loop_device
    rng = random.Random(8)

    async def body() -> None:
        disk = RawDisk(device, read_only=True, engine=engine)
        try:
            assert (disk.sector_size, disk.capacity) == (sector, len(data))
            assert dio_offset_alignment(disk._fd) in (None, sector)  # statx agrees
            buffer = io_pages(65536)
            for _ in range(100):
                offset, size = random_request(rng, disk)
                await disk.read(offset, buffer[:size])
                same_bytes(buffer[:size], data[offset : offset + size], offset)
            if sector > 512:
                with pytest.raises(BlockError, match=f"whole sectors of {sector} bytes"):
                    await disk.read(512, buffer[:512])
        finally:
            disk.close()

    drive(body)


def test_writes_to_a_block_device_reach_its_file_after_a_flush(
    loop_device: tuple[str, int, bytes], engine: Engine, tmp_path: Path
) -> None:
    device, sector, data = loop_device
    block = random.Random(9).randbytes(4 * sector)
    offset = 16 * sector

    async def body() -> None:
        disk = RawDisk(device, read_only=False, engine=engine)
        try:
            page = io_pages(len(block))[: len(block)]
            page[:] = block
            await disk.write(offset, page)
            await disk.flush()
        finally:
            disk.close()

    drive(body)
    on_file = (tmp_path / "loop.img").read_bytes()
    assert on_file[offset : offset + len(block)] == block
    assert on_file[:offset] == data[:offset]


def cached_pages(path: str) -> int:
    """How many of the file's pages the page cache holds (util-linux's fincore)."""
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "PAGES", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[0])


def test_random_reads_of_a_buffered_disk_start_from_a_cold_cache(
    disk_file: tuple[str, bytes], engine: Engine
) -> None:
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is missing")
    path, data = disk_file
    with open(path, "rb") as cached:
        assert cached.read() == data  # now every page is in the cache
    assert cached_pages(path) > 0

    async def body() -> None:
        disk = RawDisk(path, read_only=True, direct=False, engine=engine)
        try:
            disk.expect_random_reads()
            assert cached_pages(path) == 0  # dropped, as fio's invalidate=1 does
            buffer = _pages(4096)
            await disk.read(8192, buffer)
            same_bytes(buffer, data[8192 : 8192 + 4096], 8192)
            # With read-ahead off, one page read brings about that page, not a window of them.
            assert cached_pages(path) <= 4
        finally:
            disk.close()

    drive(body)
