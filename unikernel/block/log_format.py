"""The on-disk format of the log store (block/log_store.py), without I/O: records, the scanner
that reads them back after a crash, and the superblock.

A record is a 40-byte header, the key and the value, zero-padded to whole sectors so that every
record starts on a sector boundary:

    magic "uLOG" | version u8 | kind u8 (1 put, 2 delete) | flags u16 (0)
    | generation u64 | sequence u64 | previous record's crc u32
    | key length u32 | value length u32 | crc u32

all little-endian; the crc (zlib's CRC-32) covers the header up to itself, the key and the
value. A region's records carry its generation, count up one sequence number at a time, and
each names its predecessor's crc (the first one the region's seed, from the superblock). The
scanner stops at the first record that breaks any of that: absent (a blank sector), torn (its
crc does not match, or it runs past the region), or left over (another generation, or
stale bytes of this one beyond a crash point, which chain from a record that is not there).

The superblock, one sector, kept twice (sectors 0 and 1, written alternately):

    magic "uLOGSUPR" | version u16 | active region u16 | sector size u32 | generation u64
    | data start u64 | region size u64 | first sequence u64 | seed u32 | crc u32
"""

from __future__ import annotations

import struct
import zlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview

VERSION = 1
PUT = 1
DELETE = 2
MAGIC = b"uLOG"
HEADER = struct.Struct("<4sBBHQQIIII")
HEADER_SIZE = HEADER.size  # 40
_CRC_AT = HEADER_SIZE - 4
MAX_KEY = 65535
SUPER_MAGIC = b"uLOGSUPR"
SUPER = struct.Struct("<8sHHIQQQQI")
SUPER_SIZE = SUPER.size + 4  # and its crc


class LogFormatError(ValueError):
    """A record or superblock that cannot be encoded, or a stored one that is damaged."""


def record_length(key_length: int, value_length: int, sector_size: int) -> int:
    """Bytes a record takes on the device: whole sectors."""
    return -(-(HEADER_SIZE + key_length + value_length) // sector_size) * sector_size


def encode_into(
    buffer: memoryview,
    offset: int,
    kind: int,
    generation: int,
    sequence: int,
    previous: int,
    key: Buffer,
    value: Buffer,
    sector_size: int,
) -> tuple[int, int]:
    """Write a record into `buffer` at `offset`, padding and all; (its length, its crc)."""
    key_length = memoryview(key).nbytes
    value_length = memoryview(value).nbytes
    if kind not in (PUT, DELETE):
        raise LogFormatError(f"record kind {kind}: 1 (put) or 2 (delete)")
    if not 0 < key_length <= MAX_KEY:
        raise LogFormatError(f"a key is 1 to {MAX_KEY} bytes, not {key_length}")
    if kind == DELETE and value_length:
        raise LogFormatError("a delete record carries no value")
    length = record_length(key_length, value_length, sector_size)
    if offset + length > len(buffer):
        raise LogFormatError(f"a {length}-byte record does not fit at {offset} of {len(buffer)}")
    HEADER.pack_into(
        buffer,
        offset,
        MAGIC,
        VERSION,
        kind,
        0,
        generation,
        sequence,
        previous,
        key_length,
        value_length,
        0,
    )
    crc = zlib.crc32(buffer[offset : offset + _CRC_AT])
    start = offset + HEADER_SIZE
    buffer[start : start + key_length] = key
    crc = zlib.crc32(key, crc)
    start += key_length
    buffer[start : start + value_length] = value
    crc = zlib.crc32(value, crc)
    struct.pack_into("<I", buffer, offset + _CRC_AT, crc)
    start += value_length
    buffer[start : offset + length] = bytes(offset + length - start)
    return length, crc


def encode(
    kind: int,
    generation: int,
    sequence: int,
    previous: int,
    key: Buffer,
    value: Buffer = b"",
    sector_size: int = 512,
) -> tuple[bytes, int]:
    """A record as bytes, and its crc (the next record's `previous`)."""
    size = record_length(memoryview(key).nbytes, memoryview(value).nbytes, sector_size)
    buffer = bytearray(size)
    _, crc = encode_into(
        memoryview(buffer), 0, kind, generation, sequence, previous, key, value, sector_size
    )
    return bytes(buffer), crc


class LogRecord:
    """A record read back: `offset` is where it starts in its region, `length` its padded
    size on the device; `value` is empty when the scanner was told not to keep values."""

    __slots__ = ("crc", "key", "kind", "length", "offset", "sequence", "value", "value_length")

    def __init__(
        self,
        kind: int,
        sequence: int,
        key: bytes,
        value: bytes,
        value_length: int,
        offset: int,
        length: int,
        crc: int,
    ) -> None:
        self.kind = kind
        self.sequence = sequence
        self.key = key
        self.value = value
        self.value_length = value_length
        self.offset = offset
        self.length = length
        self.crc = crc

    def __repr__(self) -> str:
        kind = "put" if self.kind == PUT else "delete"
        return (
            f"LogRecord({kind} #{self.sequence} {self.key!r}, {self.value_length} bytes "
            f"at {self.offset})"
        )


def check_record(
    data: memoryview, generation: int, sector_size: int
) -> tuple[int, int, int, int, int]:
    """Verify a whole record read back from the device (by the store's get()): its
    (kind, sequence, key length, value length, crc), or LogFormatError."""
    if len(data) < HEADER_SIZE:
        raise LogFormatError(f"{len(data)} bytes hold no record header")
    magic, version, kind, _, stored_generation, sequence, _, key_length, value_length, crc = (
        HEADER.unpack_from(data)
    )
    if magic != MAGIC or version != VERSION or stored_generation != generation:
        raise LogFormatError("no record of this generation here")
    if record_length(key_length, value_length, sector_size) > len(data):
        raise LogFormatError("the record runs past the bytes read")
    if _crc(data, key_length, value_length) != crc:
        raise LogFormatError("the record's crc does not match its bytes")
    return kind, sequence, key_length, value_length, crc


def _crc(data: memoryview, key_length: int, value_length: int) -> int:
    crc = zlib.crc32(data[:_CRC_AT])
    return zlib.crc32(data[HEADER_SIZE : HEADER_SIZE + key_length + value_length], crc)


# Why a scan stopped.
END = "end"  # no record here: a blank sector, or bytes that are no record at all
TORN = "torn"  # a record whose crc does not match, or that runs past the region
STALE = "stale"  # a record of another generation, or one that does not follow the last
FULL = "full"  # the region is used to its last byte
TRUNCATED = "truncated"  # the bytes given ended inside a record


class LogScanner:
    """Reads a region's records in order from its bytes, fed in chunks of any size, and stops
    for good at the first one that is absent, torn or left over.

        scanner = LogScanner(generation, seed, first_sequence, sector_size, region_size)
        for chunk in <the region's bytes, in order>:
            records += scanner.feed(chunk)
            if scanner.done: break
        scanner.finish()

    Afterwards `position` is where the next record goes, `sequence` its sequence number and
    `previous` its predecessor's crc.
    """

    __slots__ = (
        "_keep_values",
        "_need",
        "_pending",
        "done",
        "generation",
        "position",
        "previous",
        "reason",
        "region_size",
        "sector_size",
        "sequence",
    )

    def __init__(
        self,
        generation: int,
        seed: int,
        first_sequence: int,
        sector_size: int,
        region_size: int,
        keep_values: bool = True,
    ) -> None:
        self.generation = generation
        self.previous = seed
        self.sequence = first_sequence
        self.sector_size = sector_size
        self.region_size = region_size
        self.position = 0
        self.done = region_size <= 0
        self.reason = FULL if self.done else ""
        self._keep_values = keep_values
        self._pending: bytearray | None = None  # a record split between chunks, so far
        self._need = 0  # the bytes it takes to decide on the pending record

    def feed(self, chunk: Buffer) -> list[LogRecord]:
        """The records `chunk` completes (it follows the bytes fed before)."""
        found: list[LogRecord] = []
        view = memoryview(chunk).cast("B")
        while not self.done and view.nbytes:
            held = self._pending
            if held is None:
                used = self._step(view, found)
                view = view[used:]
                if self._pending is not None:  # the rest of the chunk starts a record
                    self._pending += view
                    break
                continue
            take = self._need - len(held)
            held += view[:take]
            view = view[take:]
            if len(held) < self._need:
                break
            self._pending = None
            with memoryview(held) as whole:
                self._step(whole, found)
            if self._pending is not None:  # its header asks for the rest of the record
                self._pending = held
        return found

    def finish(self) -> None:
        """No more bytes: a record still incomplete is torn."""
        if not self.done:
            self._stop(TRUNCATED if self._pending is not None else END)

    def _stop(self, reason: str) -> None:
        self.done = True
        self.reason = reason
        self._pending = None

    def _step(self, view: memoryview, found: list[LogRecord]) -> int:
        """Decide on the record at the start of `view`: the bytes it used (0 if it stopped,
        or needs more, which sets _pending and _need)."""
        available = view.nbytes
        if available < HEADER_SIZE:
            self._want(HEADER_SIZE)
            return 0
        (
            magic,
            version,
            kind,
            flags,
            generation,
            sequence,
            previous,
            key_length,
            value_length,
            crc,
        ) = HEADER.unpack_from(view)
        if magic != MAGIC or version != VERSION:
            self._stop(END)
            return 0
        if generation != self.generation or sequence != self.sequence or previous != self.previous:
            self._stop(STALE)
            return 0
        if (
            kind not in (PUT, DELETE)
            or flags
            or not 0 < key_length <= MAX_KEY
            or (kind == DELETE and value_length)
        ):
            self._stop(TORN)
            return 0
        length = record_length(key_length, value_length, self.sector_size)
        if self.position + length > self.region_size:
            self._stop(TORN)
            return 0
        if available < length:
            self._want(length)
            return 0
        if _crc(view, key_length, value_length) != crc:
            self._stop(TORN)
            return 0
        key_end = HEADER_SIZE + key_length
        value = bytes(view[key_end : key_end + value_length]) if self._keep_values else b""
        found.append(
            LogRecord(
                kind,
                sequence,
                bytes(view[HEADER_SIZE:key_end]),
                value,
                value_length,
                self.position,
                length,
                crc,
            )
        )
        self.position += length
        self.sequence += 1
        self.previous = crc
        if self.position >= self.region_size:
            self._stop(FULL)
        return length

    def _want(self, size: int) -> None:
        self._pending = bytearray()
        self._need = size


class Superblock:
    """Which region is active and how to read it; the valid copy with the highest generation
    is the store's state."""

    __slots__ = (
        "active",
        "data_start",
        "first_sequence",
        "generation",
        "region_size",
        "sector_size",
        "seed",
    )

    def __init__(
        self,
        generation: int,
        active: int,
        sector_size: int,
        data_start: int,
        region_size: int,
        first_sequence: int,
        seed: int,
    ) -> None:
        self.generation = generation
        self.active = active
        self.sector_size = sector_size
        self.data_start = data_start
        self.region_size = region_size
        self.first_sequence = first_sequence
        self.seed = seed

    def region_offset(self, region: int) -> int:
        return self.data_start + region * self.region_size

    def encode(self) -> bytes:
        """The superblock's sector."""
        fields = SUPER.pack(
            SUPER_MAGIC,
            VERSION,
            self.active,
            self.sector_size,
            self.generation,
            self.data_start,
            self.region_size,
            self.first_sequence,
            self.seed,
        )
        sealed = fields + struct.pack("<I", zlib.crc32(fields))
        return sealed + bytes(self.sector_size - len(sealed))

    @classmethod
    def decode(cls, sector: Buffer) -> Superblock | None:
        """The superblock a sector holds; None if it holds none intact."""
        view = memoryview(sector).cast("B")
        if view.nbytes < SUPER_SIZE:
            return None
        (crc,) = struct.unpack_from("<I", view, SUPER.size)
        if zlib.crc32(view[: SUPER.size]) != crc:
            return None
        magic, version, active, sector_size, generation, data_start, region_size, first, seed = (
            SUPER.unpack_from(view)
        )
        if magic != SUPER_MAGIC or version != VERSION or active > 1:
            return None
        return cls(generation, active, sector_size, data_start, region_size, first, seed)

    def __repr__(self) -> str:
        return (
            f"Superblock(generation {self.generation}, region {self.active} of "
            f"{self.region_size} bytes at {self.data_start}, seed {self.seed:#x})"
        )


def is_superblock_sector(sector: Buffer) -> bool:
    """Whether a sector begins as a superblock does (intact or not)."""
    return bytes(memoryview(sector).cast("B")[: len(SUPER_MAGIC)]) == SUPER_MAGIC
