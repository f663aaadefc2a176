"""The log's record format and scanner (property tests over random logs, cut and damaged), and
the writable store over a raw disk: reads and writes, reopening, concurrent writers and group
commit, compaction, torn tails, a full store."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.stores import log_store_contents
from unikernel.block import log_format
from unikernel.block.interface import BlockDevice, BlockError
from unikernel.block.log_format import (
    DELETE,
    HEADER_SIZE,
    PUT,
    LogFormatError,
    LogRecord,
    LogScanner,
    Superblock,
    encode,
    record_length,
)
from unikernel.block.log_store import LogStore, LogStoreError, StoreFull
from unikernel.core.scheduler import run, spawn
from unikernel.drivers.rawdisk import RawDisk

# The record format and the scanner.

Op = tuple[int, bytes, bytes]  # kind, key, value

ops = st.lists(
    st.one_of(
        st.tuples(st.just(PUT), st.binary(min_size=1, max_size=40), st.binary(max_size=1500)),
        st.tuples(st.just(DELETE), st.binary(min_size=1, max_size=40), st.just(b"")),
    ),
    max_size=25,
)


def write_log(
    records: list[Op], generation: int = 7, seed: int = 0xC0FFEE, first: int = 1, sector: int = 512
) -> tuple[bytes, list[int]]:
    """The records as a region's bytes, and where each one starts."""
    out = bytearray()
    starts = []
    previous = seed
    for sequence, (kind, key, value) in enumerate(records, first):
        starts.append(len(out))
        data, previous = encode(kind, generation, sequence, previous, key, value, sector)
        out += data
    return bytes(out), starts


def scan(
    data: bytes,
    chunks: list[int] | None = None,
    generation: int = 7,
    seed: int = 0xC0FFEE,
    first: int = 1,
    sector: int = 512,
    region_size: int | None = None,
) -> tuple[list[LogRecord], LogScanner]:
    scanner = LogScanner(generation, seed, first, sector, region_size or max(len(data), 1 << 20))
    found: list[LogRecord] = []
    position = 0
    for size in chunks or [len(data)]:
        found += scanner.feed(data[position : position + size])
        position += size
    found += scanner.feed(data[position:])
    scanner.finish()
    return found, scanner


def as_ops(records: list[LogRecord]) -> list[Op]:
    return [(r.kind, r.key, r.value) for r in records]


@settings(max_examples=200, deadline=None)
@given(records=ops, data=st.data())
def test_the_scanner_returns_every_record_however_the_bytes_are_chunked(
    records: list[Op], data: st.DataObject
) -> None:
    log, starts = write_log(records)
    chunks = data.draw(st.lists(st.integers(1, 3000), max_size=20))
    found, scanner = scan(log + bytes(2048), chunks)
    assert as_ops(found) == records
    assert [r.offset for r in found] == starts
    assert [r.sequence for r in found] == list(range(1, len(records) + 1))
    assert scanner.position == len(log) and scanner.sequence == len(records) + 1
    assert scanner.reason == log_format.END


@settings(max_examples=300, deadline=None)
@given(records=ops.filter(bool), data=st.data())
def test_a_damaged_log_reads_back_as_exactly_a_prefix_of_what_was_written(
    records: list[Op], data: st.DataObject
) -> None:
    log, starts = write_log(records)
    damaged = bytearray(log)
    how = data.draw(st.sampled_from(["cut", "flip", "garbage", "zeros"]))
    at = data.draw(st.integers(0, len(log) - 1))
    if how == "cut":
        damaged = damaged[:at]
    elif how == "flip":
        damaged[at] ^= 1 << data.draw(st.integers(0, 7))
    else:
        size = data.draw(st.integers(1, 600))
        filler = os.urandom(size) if how == "garbage" else bytes(size)
        damaged[at : at + size] = filler[: len(damaged) - at]
    chunks = data.draw(st.lists(st.integers(1, 3000), max_size=10))
    found, _ = scan(bytes(damaged), chunks)
    assert as_ops(found) == records[: len(found)]  # a prefix, none of it corrupted
    # Nothing before the damage is lost; the damaged record itself never comes back (unless
    # the damage fell in its padding, which no reader looks at, or changed nothing).
    hit = max(i for i, start in enumerate(starts) if start <= at)
    assert len(found) >= hit
    _, key, value = records[hit]
    covered = starts[hit] + HEADER_SIZE + len(key) + len(value)
    if at < covered and bytes(damaged[starts[hit] : covered]) != log[starts[hit] : covered]:
        assert len(found) == hit


@given(records=ops.filter(bool))
def test_records_of_another_generation_or_chain_are_not_read(records: list[Op]) -> None:
    log, _ = write_log(records, generation=7)
    assert scan(log, generation=8)[0] == []
    assert scan(log, seed=1)[0] == []
    assert scan(log, first=2)[0] == []
    # Left over past the end of a newer log: the newer records only.
    newer, _ = write_log(records[:1], generation=8)
    mixed = newer + log[len(newer) :]
    found, scanner = scan(mixed, generation=8)
    assert as_ops(found) == records[:1] and scanner.reason in (log_format.STALE, log_format.END)


def test_a_record_running_past_the_region_is_torn() -> None:
    log, _ = write_log([(PUT, b"k", b"v" * 1000)] * 3)  # 1536 bytes each
    found, scanner = scan(log, region_size=2 * 1536 + 512)
    assert len(found) == 2 and scanner.reason == log_format.TORN
    found, scanner = scan(log, region_size=3 * 1536)
    assert len(found) == 3 and scanner.reason == log_format.FULL


def test_records_are_whole_sectors_and_padded_with_zeros() -> None:
    for sector in (512, 4096):
        data, _ = encode(PUT, 1, 1, 0, b"key", b"v" * 600, sector)
        assert len(data) == record_length(3, 600, sector) and len(data) % sector == 0
        assert data[HEADER_SIZE + 603 :] == bytes(len(data) - HEADER_SIZE - 603)
    with pytest.raises(LogFormatError):
        encode(PUT, 1, 1, 0, b"", b"v")
    with pytest.raises(LogFormatError):
        encode(DELETE, 1, 1, 0, b"k", b"v")


def test_the_superblock_round_trips_and_any_damage_voids_it() -> None:
    block = Superblock(9, 1, 512, 4096, 1 << 20, 77, 0xDEADBEEF)
    sector = block.encode()
    assert len(sector) == 512
    again = Superblock.decode(sector)
    assert again is not None
    assert (again.generation, again.active, again.region_size, again.seed) == (
        9,
        1,
        1 << 20,
        0xDEADBEEF,
    )
    for at in range(log_format.SUPER_SIZE):
        damaged = bytearray(sector)
        damaged[at] ^= 0x10
        assert Superblock.decode(bytes(damaged)) is None
    assert Superblock.decode(bytes(512)) is None


# The store.


def syncrun(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run(main)


def blank(path: Path, size: int) -> str:
    with path.open("wb") as file:
        file.truncate(size)
    return str(path)


class Recording(BlockDevice):
    """A device passing requests on, counting them; `fail_write` may refuse a write (a crash
    at that point, as far as the device's contents go)."""

    def __init__(self, inner: BlockDevice) -> None:
        self.inner = inner
        self.sector_size = inner.sector_size
        self.capacity = inner.capacity
        self.read_only = inner.read_only
        self.writes = 0
        self.flushes = 0
        self.fail_write: Callable[[int, int], bool] = lambda offset, size: False

    async def read(self, offset: int, buffer: memoryview) -> None:
        await self.inner.read(offset, buffer)

    async def write(self, offset: int, buffer: memoryview) -> None:
        if self.fail_write(offset, buffer.nbytes):
            raise BlockError(f"refused write at {offset}")
        self.writes += 1
        await self.inner.write(offset, buffer)

    async def flush(self) -> None:
        self.flushes += 1
        await self.inner.flush()

    def close(self) -> None:
        self.inner.close()


async def reopened(path: str) -> dict[bytes, bytes]:
    """Everything a fresh open of the store at `path` holds."""
    return await log_store_contents(path)


def active_region(path: str) -> tuple[int, int, int]:
    """(offset, size, generation) of the active region of the store at `path`."""
    with open(path, "rb") as file:
        head = file.read(1024)
    copies = [Superblock.decode(head[:512]), Superblock.decode(head[512:])]
    best = max((c for c in copies if c is not None), key=lambda c: c.generation)
    return best.region_offset(best.active), best.region_size, best.generation


def test_put_get_delete_and_reopen(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img", 8 << 20)
    big = os.urandom(3 << 20)  # larger than one batch of records

    async def main() -> None:
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            assert store.keys() == [] and await store.get("nothing") is None
            await store.put("text", b"one")
            await store.put(b"bytes", b"two")
            await store.put("text", b"three")  # replaces
            await store.put("empty", b"")
            await store.put("big", big)
            await store.put("gone", b"soon")
            await store.delete("gone")
            await store.delete("never-there")
            assert await store.get("text") == b"three"
            assert await store.get(b"text") == b"three"
            assert await store.get("bytes") == b"two"
            assert await store.get("empty") == b""
            assert await store.get("big") == big
            assert await store.get("gone") is None
            assert sorted(store.keys()) == [b"big", b"bytes", b"empty", b"text"]
            assert "text" in store and b"gone" not in store and len(store) == 4
            with pytest.raises(ValueError):
                await store.put("", b"no key")
        finally:
            device.close()

    syncrun(main)
    assert syncrun(lambda: reopened(path)) == {
        b"text": b"three",
        b"bytes": b"two",
        b"empty": b"",
        b"big": big,
    }


def test_a_write_returns_only_once_written_and_flushed(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img", 1 << 20)

    async def main() -> None:
        device = Recording(RawDisk(path, read_only=False))
        try:
            store = await LogStore.open(device)
            writes, flushes = device.writes, device.flushes
            await store.put("k", b"v")
            assert (device.writes, device.flushes) == (writes + 1, flushes + 1)
            await store.delete("k")
            assert (device.writes, device.flushes) == (writes + 2, flushes + 2)
            await store.delete("k")  # nothing to delete: nothing written
            assert (device.writes, device.flushes) == (writes + 2, flushes + 2)
        finally:
            device.close()

    syncrun(main)


def test_concurrent_puts_from_many_threads_are_ordered_and_group_committed(
    tmp_path: Path,
) -> None:
    path = blank(tmp_path / "store.img", 8 << 20)
    threads, each = 50, 20
    expected: dict[bytes, bytes] = {}

    async def writer(store: LogStore, index: int) -> None:
        for round_ in range(each):
            await store.put(f"t{index}-{round_}", f"value {index} {round_}".encode() * index)
        await store.put("shared", str(index).encode())

    async def main() -> None:
        device = Recording(RawDisk(path, read_only=False))
        try:
            store = await LogStore.open(device)
            flushes = device.flushes
            started = [spawn(writer, store, index) for index in range(threads)]
            for thread in started:
                await thread.join()
            # Queued writes went out together: far fewer flushes than writes.
            assert device.flushes - flushes < threads * each / 5
            for index in range(threads):
                for round_ in range(each):
                    key = f"t{index}-{round_}".encode()
                    expected[key] = f"value {index} {round_}".encode() * index
            expected[b"shared"] = str(threads - 1).encode()  # the last put made wins
            for key, value in expected.items():
                assert await store.get(key) == value
        finally:
            device.close()

    syncrun(main)
    assert syncrun(lambda: reopened(path)) == expected


def test_compaction_keeps_exactly_the_live_data_and_survives_reopening(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img", 256 << 10)
    rng = random.Random(5)
    live: dict[bytes, bytes] = {}

    async def main() -> None:
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            for step in range(1500):
                key = f"key{rng.randrange(40)}".encode()
                if rng.random() < 0.2:
                    await store.delete(key)
                    live.pop(key, None)
                else:
                    value = rng.randbytes(rng.randrange(0, 1500))
                    await store.put(key, value)
                    live[key] = value
                if step % 100 == 0:
                    assert {k: await store.get(k) for k in store} == live
            assert store.compactions >= 5  # regions of ~126 KiB, ~1 MiB written
            assert {k: await store.get(k) for k in store} == live
            generation = store.generation
            await store.compact()
            assert store.generation == generation + 1
            assert store.used == store.live_bytes
            assert {k: await store.get(k) for k in store} == live
        finally:
            device.close()

    syncrun(main)
    assert syncrun(lambda: reopened(path)) == live


def test_reads_during_compaction_see_the_data(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img", 4 << 20)
    values = {f"k{i}".encode(): os.urandom(i * 37) for i in range(200)}

    async def reader(store: LogStore, rounds: int) -> None:
        for _ in range(rounds):
            for key, value in list(values.items())[::17]:
                assert await store.get(key) == value

    async def main() -> None:
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            for key, value in values.items():
                await store.put(key, value)
            readers = [spawn(reader, store, 5) for _ in range(4)]
            for _ in range(3):
                await store.compact()
            for thread in readers:
                await thread.join()
            assert store.compactions == 3
        finally:
            device.close()

    syncrun(main)


def test_deleted_data_left_in_a_reused_region_stays_deleted(tmp_path: Path) -> None:
    """A compaction that fails before its switch leaves records of the next generation in the
    other region. The retried compaction writes the same generation, from the same sequence
    number, the same first records: the one it no longer has must not be read after them."""
    path = blank(tmp_path / "store.img", 64 << 10)  # regions of 30 KiB: six 5 KiB records
    values = {name.encode(): name.encode() * 5000 for name in "abcdef"}

    async def main() -> None:
        device = Recording(RawDisk(path, read_only=False))
        try:
            store = await LogStore.open(device)
            for key, value in values.items():
                await store.put(key, value)
            assert store.used == store.region_size
            # The compaction writes the live records, then fails at the superblock: a crash.
            device.fail_write = lambda offset, size: offset < 1024
            with pytest.raises(BlockError):
                await store.compact()
            with pytest.raises(LogStoreError, match="superblock"):
                await store.put("after", b"refused: the store's state is unknown")
        finally:
            device.close()
        assert await reopened(path) == values
        device = Recording(RawDisk(path, read_only=False))
        try:
            store = await LogStore.open(device)
            generation = store.generation
            await store.delete("f")  # no room for its record: compaction, with f left out
            assert store.generation == generation + 1
        finally:
            device.close()

    syncrun(main)
    del values[b"f"]
    assert syncrun(lambda: reopened(path)) == values


@pytest.mark.parametrize("damage", ["garbage", "zeros", "cut"])
def test_a_torn_last_record_is_dropped_on_reopening(tmp_path: Path, damage: str) -> None:
    path = blank(tmp_path / "store.img", 1 << 20)
    torn_value = os.urandom(3000)
    positions: list[int] = []

    async def main() -> None:
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            for i in range(10):
                await store.put(f"k{i}", f"v{i}".encode())
            positions.append(store.used)
            await store.put("k3", torn_value)
            positions.append(store.used)
        finally:
            device.close()

    syncrun(main)
    base, _, _ = active_region(path)
    start, end = base + positions[0], base + positions[1]
    with open(path, "r+b") as file:
        if damage == "garbage":
            file.seek(start + 1000)
            file.write(os.urandom(1500))
        elif damage == "zeros":
            file.seek(start + 2048)
            file.write(bytes(end - start - 2048))  # the last sectors never reached the disk
        else:
            file.truncate(start + 1024)  # the disk itself ends inside the record
            file.truncate(1 << 20)
    expected = {f"k{i}".encode(): f"v{i}".encode() for i in range(10)}
    assert syncrun(lambda: reopened(path)) == expected

    async def more() -> None:
        # Appends go where the torn record was, and reopen after it.
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            assert store.used == positions[0]
            await store.put("k3", b"again")
            await store.put("k10", b"new")
        finally:
            device.close()

    syncrun(more)
    expected[b"k3"] = b"again"
    expected[b"k10"] = b"new"
    assert syncrun(lambda: reopened(path)) == expected


def test_a_full_store_refuses_puts_and_keeps_what_it_has(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img", 64 << 10)  # regions of 30 KiB
    stored: dict[bytes, bytes] = {}

    async def main() -> None:
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            with pytest.raises(StoreFull, match="cannot fit"):
                await store.put("huge", bytes(store.region_size))
            with pytest.raises(StoreFull, match="delete something first"):
                for i in range(1000):
                    await store.put(f"k{i}", bytes([i % 256]) * 900)
                    stored[f"k{i}".encode()] = bytes([i % 256]) * 900
            assert len(stored) == store.region_size // 1024
            assert {k: await store.get(k) for k in store} == stored
            # Overwriting in place still works, and so does deleting to make room.
            await store.put("k0", b"smaller")
            stored[b"k0"] = b"smaller"
            for i in range(1, 4):
                await store.delete(f"k{i}")
                del stored[f"k{i}".encode()]
            await store.put("fits", bytes(2000))
            stored[b"fits"] = bytes(2000)
            assert {k: await store.get(k) for k in store} == stored
        finally:
            device.close()

    syncrun(main)
    assert syncrun(lambda: reopened(path)) == stored


def test_a_disk_holding_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.img"
    path.write_bytes(os.urandom(1 << 20))

    async def main() -> None:
        device = RawDisk(str(path), read_only=False)
        try:
            with pytest.raises(LogStoreError, match="not a log store"):
                await LogStore.open(device)
        finally:
            device.close()
        tiny = RawDisk(blank(tmp_path / "tiny.img", 6144), read_only=False)
        try:
            with pytest.raises(LogStoreError, match="too small"):
                await LogStore.open(tiny)
        finally:
            tiny.close()
        shrunk = blank(tmp_path / "shrunk.img", 1 << 20)
        device = RawDisk(shrunk, read_only=False)
        try:
            await (await LogStore.open(device)).put("k", b"v")
        finally:
            device.close()
        os.truncate(shrunk, 512 << 10)  # never formatted over: the store is still there
        device = RawDisk(shrunk, read_only=False)
        try:
            with pytest.raises(LogStoreError, match="does not fit"):
                await LogStore.open(device)
        finally:
            device.close()
        blank_read_only = RawDisk(blank(tmp_path / "ro.img", 1 << 20), read_only=True)
        try:
            with pytest.raises(LogStoreError, match="read-only"):
                await LogStore.open(blank_read_only)
        finally:
            blank_read_only.close()

    syncrun(main)


def test_a_read_only_device_serves_a_store_it_cannot_change(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img", 1 << 20)

    async def main() -> None:
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            await store.put("k", b"v")
        finally:
            device.close()
        device = RawDisk(path, read_only=True)
        try:
            store = await LogStore.open(device)
            assert await store.get("k") == b"v"
            with pytest.raises(LogStoreError, match="read-only"):
                await store.put("k", b"w")
        finally:
            device.close()

    syncrun(main)


def test_a_format_cut_short_is_formatted_again(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img", 1 << 20)
    torn = bytearray(Superblock(1, 0, 512, 4096, 500 << 10, 1, 5).encode())
    torn[20:60] = os.urandom(40)
    with open(path, "r+b") as file:
        file.seek(512)
        file.write(torn)

    async def main() -> None:
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            await store.put("k", b"v")
        finally:
            device.close()

    syncrun(main)
    assert syncrun(lambda: reopened(path)) == {b"k": b"v"}


def test_a_torn_superblock_write_leaves_the_other_copy(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img", 1 << 20)

    async def main() -> None:
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            await store.put("k", b"before")
            await store.compact()  # generation 2, in sector 0
            await store.put("k", b"after")
        finally:
            device.close()

    syncrun(main)
    _, _, generation = active_region(path)
    assert generation == 2
    with open(path, "r+b") as file:
        file.seek(30)
        file.write(b"\xff" * 10)  # sector 0 torn: generation 1's copy in sector 1 is left
    assert syncrun(lambda: reopened(path)) == {b"k": b"before"}
