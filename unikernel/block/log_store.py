"""A writable key-value store on a block device: an append-only log of records, compacted into
the other half of the device when the active half fills.

    store = await LogStore.open(await devices.disk("store").block())
    await store.put("counter", b"41")
    value = await store.get("counter")          # b"41", or None

Layout (block/log_format.py has the bytes): sectors 0 and 1 hold two copies of the superblock,
written alternately; the rest is two equal regions, one active. put() and delete() append a
record to the active region and return once it is written and flushed: a write acknowledged
survives a crash. Writes queued while one is in flight go out together, with one flush (group
commit), in the order they were made.

Opening scans the active region and rebuilds the index (key -> where its value lies), stopping
at the first record that is absent or torn: a crash loses only writes never acknowledged.

Compaction copies the live records into the other region under the next generation, flushes,
then switches the superblock (written to the other copy's sector, then flushed). A crash
before the switch leaves the old region, untouched, in force. Records name their generation
and chain to one another (each names its predecessor's crc, the first a random seed the
superblock keeps), so nothing left in a region from an earlier use, or from beyond a crash
point, is ever read back as new.
"""

from __future__ import annotations

from collections import deque

from unikernel.block.log_format import (
    DELETE,
    HEADER_SIZE,
    MAX_KEY,
    PUT,
    LogFormatError,
    LogScanner,
    Superblock,
    check_record,
    encode_into,
    is_superblock_sector,
    record_length,
)
from unikernel.block.pages import io_pages
from unikernel.core.entropy import random_u32
from unikernel.core.scheduler import spawn
from unikernel.core.sync import Event

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from unikernel.block.interface import BlockDevice
    from unikernel.core.scheduler import Thread

    Buffer = bytes | bytearray | memoryview
    # key -> (record offset on the device, record length, key length, value length)
    Index = dict[bytes, tuple[int, int, int, int]]

MAX_BATCH = 1 << 20  # bytes of records written in one request (more wait for the next)
SCAN_CHUNK = 1 << 20  # bytes read at a time when scanning a region or copying records
COMPACT = 3  # a request kind of the store's own, beside PUT and DELETE


class LogStoreError(Exception):
    """The device holds no log store, holds a damaged one, or cannot take it."""


class StoreFull(LogStoreError):
    """A put whose record would not fit beside the live data, even after compaction; nothing
    was written."""


class _Request:
    __slots__ = ("done", "error", "key", "kind", "value")

    def __init__(self, kind: int, key: bytes, value: bytes) -> None:
        self.kind = kind
        self.key = key
        self.value = value
        self.done = Event()
        self.error: BaseException | None = None


class LogStore:
    """Made by LogStore.open(); see the module's docstring."""

    __slots__ = (
        "_broken",
        "_buffer",
        "_closed",
        "_device",
        "_index",
        "_live_bytes",
        "_position",
        "_previous",
        "_queue",
        "_sequence",
        "_super",
        "_writer",
        "compactions",
    )

    def __init__(self, device: BlockDevice, superblock: Superblock) -> None:
        self._device = device
        self._super = superblock
        self._index: Index = {}
        self._live_bytes = 0  # of the records the index points at
        self._position = 0  # in the active region: where the next record goes
        self._sequence = superblock.first_sequence
        self._previous = superblock.seed
        self._queue: deque[_Request] = deque()
        self._writer: Thread[None] | None = None
        self._buffer: memoryview | None = None  # the writer's I/O pages, kept between batches
        self._closed = False
        self._broken: LogStoreError | None = None
        self.compactions = 0

    # Opening.

    @classmethod
    async def open(cls, device: BlockDevice) -> LogStore:
        """The store on `device`: recovered from what the device holds, or made on a blank
        device (its first two sectors zero)."""
        sector = device.sector_size
        head = io_pages(2 * sector)[: 2 * sector]
        await device.read(0, head)
        copies = [Superblock.decode(head[i * sector : (i + 1) * sector]) for i in (0, 1)]
        valid = [found for found in copies if found is not None and _fits(found, device)]
        if valid:
            superblock = max(valid, key=lambda found: found.generation)
        elif any(found is not None for found in copies):
            raise LogStoreError(
                f"{_name(device)}: its log store does not fit the device "
                f"({device.capacity} bytes in sectors of {sector}): {copies}"
            )
        elif all(
            not any(head[i * sector : (i + 1) * sector])
            or is_superblock_sector(head[i * sector : (i + 1) * sector])
            for i in (0, 1)
        ):
            # Blank, or a format cut short: nothing there was ever acknowledged.
            superblock = await cls._format(device)
        else:
            raise LogStoreError(
                f"{_name(device)}: sectors 0 and 1 hold no log store superblock, nor zeros: "
                "not a log store, or one whose superblocks are both damaged"
            )
        store = cls(device, superblock)
        await store._recover()
        return store

    @classmethod
    async def _format(cls, device: BlockDevice) -> Superblock:
        if device.read_only:
            raise LogStoreError(f"{_name(device)}: blank, and read-only: no store to open")
        sector = device.sector_size
        data_start = max(2 * sector, 4096)  # regions start page-aligned
        usable = device.capacity - device.capacity % sector - data_start
        region_size = usable // 2 // sector * sector
        if region_size < 4 * sector:
            raise LogStoreError(
                f"{_name(device)}: {device.capacity} bytes is too small for a log store"
            )
        superblock = Superblock(1, 0, sector, data_start, region_size, 1, random_u32())
        await _write_superblock(device, superblock)
        return superblock

    async def _recover(self) -> None:
        superblock = self._super
        device = self._device
        scanner = LogScanner(
            superblock.generation,
            superblock.seed,
            superblock.first_sequence,
            superblock.sector_size,
            superblock.region_size,
            keep_values=False,
        )
        base = superblock.region_offset(superblock.active)
        chunk = io_pages(SCAN_CHUNK)
        position = 0
        while not scanner.done and position < superblock.region_size:
            size = min(SCAN_CHUNK, superblock.region_size - position)
            view = chunk[:size]
            await device.read(base + position, view)
            for record in scanner.feed(view):
                if record.kind == PUT:
                    self._set(
                        record.key,
                        (base + record.offset, record.length, len(record.key), record.value_length),
                    )
                else:
                    self._unset(record.key)
            position += size
        scanner.finish()
        self._position = scanner.position
        self._sequence = scanner.sequence
        self._previous = scanner.previous

    # Reading.

    def keys(self) -> list[bytes]:
        """Every key with a value, as bytes (str keys were stored UTF-8)."""
        return list(self._index)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._index)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (str, bytes)) and _key(key) in self._index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def generation(self) -> int:
        return self._super.generation

    @property
    def region_size(self) -> int:
        return self._super.region_size

    @property
    def used(self) -> int:
        """Bytes of the active region written so far."""
        return self._position

    @property
    def live_bytes(self) -> int:
        """Bytes the live records take: what compaction would copy."""
        return self._live_bytes

    async def get(self, key: bytes | str) -> bytes | None:
        """The value last put for `key`, None if there is none."""
        wanted = _key(key)
        while True:
            found = self._index.get(wanted)
            if found is None:
                return None
            offset, length, key_length, value_length = found
            buffer = io_pages(length)[:length]
            generation = self._super.generation
            await self._device.read(offset, buffer)
            try:
                check_record(buffer, generation, self._super.sector_size)
                if buffer[HEADER_SIZE : HEADER_SIZE + key_length] != wanted:
                    raise LogFormatError("the record is another key's")
            except LogFormatError as error:
                if self._index.get(wanted) is not found or generation != self._super.generation:
                    continue  # compaction moved it while we read: read it where it is now
                raise LogStoreError(
                    f"{_name(self._device)}: the record of {wanted!r} at {offset} is damaged: "
                    f"{error}"
                ) from None
            start = HEADER_SIZE + key_length
            return bytes(buffer[start : start + value_length])

    # Writing.

    async def put(self, key: bytes | str, value: Buffer) -> None:
        """Store `value` under `key`; returns once it is durable."""
        await self._submit(PUT, _key(key), value if isinstance(value, bytes) else bytes(value))

    async def delete(self, key: bytes | str) -> None:
        """Remove `key` (if present); returns once that is durable."""
        await self._submit(DELETE, _key(key), b"")

    async def compact(self) -> None:
        """Copy the live records into the other region now, and switch to it."""
        await self._submit(COMPACT, b"", b"")

    async def close(self) -> None:
        """Wait for the writes in flight; later writes fail. The device stays open: it is the
        caller's."""
        self._closed = True
        while self._writer is not None:
            await self._writer.join()

    async def _submit(self, kind: int, key: bytes, value: bytes) -> None:
        if self._closed:
            raise LogStoreError("the store is closed")
        if self._device.read_only:
            raise LogStoreError(f"{_name(self._device)}: the device is read-only")
        request = _Request(kind, key, value)
        self._queue.append(request)
        if self._writer is None:
            self._writer = spawn(self._write_queued)
        await request.done.wait()
        if request.error is not None:
            raise request.error

    async def _write_queued(self) -> None:
        """The one writer: takes the queued requests a batch at a time, in order."""
        try:
            while self._queue:
                batch = self._take_batch()
                if self._broken is not None:
                    _fail(batch, self._broken)
                    continue
                try:
                    await self._write_batch(batch)
                except Exception as error:  # the device failed: none of these is durable
                    _fail(batch, error)
                    continue
                except BaseException as error:  # cancelled: so is whatever waits
                    _fail(batch, error)
                    _fail(self._queue, error)
                    self._queue.clear()
                    raise
                for request in batch:
                    request.done.set()
        finally:
            self._writer = None

    def _take_batch(self) -> list[_Request]:
        queue = self._queue
        sector = self._super.sector_size
        batch = [queue.popleft()]
        if batch[0].kind == COMPACT:
            return batch
        size = record_length(len(batch[0].key), len(batch[0].value), sector)
        while queue and queue[0].kind != COMPACT:
            more = record_length(len(queue[0].key), len(queue[0].value), sector)
            if size + more > MAX_BATCH:
                break
            size += more
            batch.append(queue.popleft())
        return batch

    async def _write_batch(self, batch: list[_Request]) -> None:
        superblock = self._super
        sector = superblock.sector_size
        if batch[0].kind == COMPACT:
            await self._compact([])
            return
        records = []
        present: dict[bytes, bool] = {}  # whether the batch so far leaves a key with a value
        for request in batch:
            length = record_length(len(request.key), len(request.value), sector)
            if length > superblock.region_size:
                request.error = StoreFull(
                    f"a value of {len(request.value)} bytes cannot fit: the store's regions "
                    f"hold {superblock.region_size} bytes"
                )
            elif request.kind == DELETE and not present.get(
                request.key, request.key in self._index
            ):
                pass  # nothing to delete: nothing to write
            else:
                present[request.key] = request.kind == PUT
                records.append((request, length))
        if not records:
            return
        total = sum(length for _, length in records)
        if self._position + total > superblock.region_size:
            await self._compact([request for request, _ in records])
            return
        buffer = self._buffer
        if buffer is None or len(buffer) < total:
            buffer = io_pages(max(total, MAX_BATCH))
            self._buffer = buffer
        sequence, previous = self._sequence, self._previous
        at = 0
        for request, _ in records:
            length, previous = encode_into(
                buffer,
                at,
                request.kind,
                superblock.generation,
                sequence,
                previous,
                request.key,
                request.value,
                sector,
            )
            sequence += 1
            at += length
        base = superblock.region_offset(superblock.active) + self._position
        await self._device.write(base, buffer[:total])
        await self._device.flush()
        # Durable: only now does the index (what get() serves) change.
        at = base
        for request, length in records:
            if request.kind == PUT:
                self._set(request.key, (at, length, len(request.key), len(request.value)))
            else:
                self._unset(request.key)
            at += length
        self._position += total
        self._sequence, self._previous = sequence, previous

    async def _compact(self, batch: list[_Request]) -> None:
        """Write the live records, with `batch` applied, into the other region; then switch.
        Puts of the batch that would overflow the region fail with StoreFull."""
        old = self._super
        sector = old.sector_size
        region_size = old.region_size
        # Which records the new region holds: old ones (by location) and the batch's puts.
        live: dict[bytes, tuple[int, int, int, int] | _Request] = dict(self._index)
        live_bytes = self._live_bytes
        for request in batch:
            had = live.get(request.key)
            freed = 0 if had is None else _length(had, sector)
            if request.kind == DELETE:
                if had is not None:
                    del live[request.key]
                    live_bytes -= freed
                continue
            length = record_length(len(request.key), len(request.value), sector)
            if live_bytes - freed + length > region_size:
                request.error = StoreFull(
                    f"putting {len(request.value)} bytes under {request.key!r} would take the "
                    f"live data past the {region_size} bytes a region holds "
                    f"({live_bytes} bytes live): delete something first"
                )
                continue
            live[request.key] = request
            live_bytes += length - freed
        new = Superblock(
            old.generation + 1,
            1 - old.active,
            sector,
            old.data_start,
            region_size,
            self._sequence,
            random_u32(),
        )
        writer = _RegionWriter(self._device, new)
        index: Index = {}
        on_device = sorted(
            (where for where in live.values() if isinstance(where, tuple)), key=lambda w: w[0]
        )
        async for view, where in _RecordReader(self._device, old, on_device):
            key_end = HEADER_SIZE + where[2]
            copied = view[HEADER_SIZE:key_end]
            index[bytes(copied)] = await writer.add(copied, view[key_end : key_end + where[3]])
        for item in live.values():
            if isinstance(item, _Request):
                index[item.key] = await writer.add(item.key, item.value)
        await writer.finish()
        await self._device.flush()
        try:
            await _write_superblock(self._device, new)
        except BaseException as error:
            # Whether the switch reached the device is unknown, so is which region a reopen
            # would read: appending to either could lose acknowledged writes.
            self._broken = LogStoreError(
                f"{_name(self._device)}: the superblock write failed ({error!r}); reopen the store"
            )
            raise
        # The switch is durable: the new region is the store.
        self._super = new
        self._index = {}
        self._live_bytes = 0
        for key, location in index.items():
            self._set(key, location)
        self._position = writer.position
        self._sequence = writer.sequence
        self._previous = writer.previous
        self.compactions += 1

    def _set(self, key: bytes, where: tuple[int, int, int, int]) -> None:
        old = self._index.get(key)
        if old is not None:
            self._live_bytes -= old[1]
        self._index[key] = where
        self._live_bytes += where[1]

    def _unset(self, key: bytes) -> None:
        old = self._index.pop(key, None)
        if old is not None:
            self._live_bytes -= old[1]


class _RegionWriter:
    """Appends put records to a fresh region through a buffer of I/O pages."""

    __slots__ = ("_buffer", "_device", "_filled", "_super", "position", "previous", "sequence")

    def __init__(self, device: BlockDevice, superblock: Superblock) -> None:
        self._device = device
        self._super = superblock
        self._buffer = io_pages(SCAN_CHUNK)
        self._filled = 0  # bytes of the buffer not yet written
        self.position = 0  # in the region, of the next record
        self.sequence = superblock.first_sequence
        self.previous = superblock.seed

    async def add(self, key: Buffer, value: Buffer) -> tuple[int, int, int, int]:
        """Append a put record; where it lies on the device."""
        key_length, value_length = memoryview(key).nbytes, memoryview(value).nbytes
        length = record_length(key_length, value_length, self._super.sector_size)
        if self._filled + length > len(self._buffer):
            await self._write()
            if length > len(self._buffer):
                self._buffer = io_pages(length)
        _, self.previous = encode_into(
            self._buffer,
            self._filled,
            PUT,
            self._super.generation,
            self.sequence,
            self.previous,
            key,
            value,
            self._super.sector_size,
        )
        where = (
            self._super.region_offset(self._super.active) + self.position,
            length,
            key_length,
            value_length,
        )
        self.sequence += 1
        self.position += length
        self._filled += length
        return where

    async def finish(self) -> None:
        await self._write()

    async def _write(self) -> None:
        if self._filled:
            start = self._super.region_offset(self._super.active) + self.position - self._filled
            await self._device.write(start, self._buffer[: self._filled])
            self._filled = 0


class _RecordReader:
    """The records at `locations` (sorted by offset), verified, each as a view of I/O pages
    valid until the next one is asked for: neighbours are read together, up to SCAN_CHUNK
    bytes a request."""

    __slots__ = ("_buffer", "_device", "_locations", "_next", "_span", "_super")

    def __init__(
        self,
        device: BlockDevice,
        superblock: Superblock,
        locations: list[tuple[int, int, int, int]],
    ) -> None:
        self._device = device
        self._super = superblock
        self._locations = locations
        self._next = 0
        self._buffer = io_pages(SCAN_CHUNK)
        self._span: list[tuple[memoryview, tuple[int, int, int, int]]] = []

    def __aiter__(self) -> _RecordReader:
        return self

    async def __anext__(self) -> tuple[memoryview, tuple[int, int, int, int]]:
        if not self._span:
            await self._read_span()
        if not self._span:
            raise StopAsyncIteration
        return self._span.pop()

    async def _read_span(self) -> None:
        locations = self._locations
        if self._next >= len(locations):
            return
        first = self._next
        start = locations[first][0]
        end = start + locations[first][1]
        last = first + 1
        while last < len(locations) and locations[last][0] + locations[last][1] - start <= len(
            self._buffer
        ):
            end = locations[last][0] + locations[last][1]
            last += 1
        self._next = last
        buffer = self._buffer if end - start <= len(self._buffer) else io_pages(end - start)
        view = buffer[: end - start]
        await self._device.read(start, view)
        span = []
        for where in locations[first:last]:
            record = view[where[0] - start : where[0] - start + where[1]]
            try:
                check_record(record, self._super.generation, self._super.sector_size)
            except LogFormatError as error:
                raise LogStoreError(
                    f"{_name(self._device)}: a live record at {where[0]} is damaged: {error}"
                ) from None
            span.append((record, where))
        span.reverse()  # popped from the end: in order
        self._span = span


def _fail(requests: Iterable[_Request], error: BaseException) -> None:
    for request in requests:
        if request.error is None:
            request.error = error
        request.done.set()


def _length(where: tuple[int, int, int, int] | _Request, sector: int) -> int:
    if isinstance(where, tuple):
        return where[1]
    return record_length(len(where.key), len(where.value), sector)


async def _write_superblock(device: BlockDevice, superblock: Superblock) -> None:
    """Write the superblock over the older copy (sector generation % 2), then flush: a write
    torn on the way leaves the other copy, the state before."""
    sector = superblock.sector_size
    buffer = io_pages(sector)[:sector]
    buffer[:] = superblock.encode()
    await device.write((superblock.generation % 2) * sector, buffer)
    await device.flush()


def _fits(superblock: Superblock, device: BlockDevice) -> bool:
    sector = device.sector_size
    return (
        superblock.sector_size == sector
        and superblock.data_start >= 2 * sector
        and superblock.data_start % sector == 0
        and superblock.region_size % sector == 0
        and superblock.region_size >= 4 * sector
        and superblock.data_start + 2 * superblock.region_size <= device.capacity
    )


def _key(key: bytes | str) -> bytes:
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not 0 < len(raw) <= MAX_KEY:
        raise ValueError(f"a key is 1 to {MAX_KEY} bytes, not {len(raw)}")
    return raw


def _name(device: BlockDevice) -> str:
    return str(getattr(device, "path", type(device).__name__))
