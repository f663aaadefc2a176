"""blkif: blkfront's data path (io/blkif.h) over its shared ring, sans-IO.

The driver owns the grants, the event channel and xenstore; it hands `BlkfrontQueue` the
mapped ring page and data pages, each with the grant reference the back end knows it by
(persistent grants: granted once, reused). An I/O (`BlockIo`) takes whole pages of its own,
so requests in flight never share one, and goes out as one request per 11 pages (44 KiB).
Writes are copied into the pages before their requests are published; reads are copied out
once every request of theirs is answered, then the pages are free again.

Sectors are 512 bytes in every field of the protocol, whatever the disk's sector-size says.
Nothing here checks the disk's size: the driver does (BlockDevice.check).
"""

from __future__ import annotations

import struct

from unikernel.drivers.xen.ring import PAGE_SIZE, FrontRing, RingError, ring_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    Buffer = bytes | bytearray | memoryview
    Writable = bytearray | memoryview
    Page = tuple[memoryview, int]  # a mapped page and its grant reference

# blkif_request (x86-64, packed): op, nr_segments, handle, pad, id, sector_number, then
# BLKIF_MAX_SEGMENTS_PER_REQUEST segments of {gref, first_sect, last_sect, pad}.
REQUEST = struct.Struct("<BBHIQQ")
SEGMENT = struct.Struct("<IBBxx")
RESPONSE = struct.Struct("<QBxh")  # id, op, status; in a slot of SLOT bytes
MAX_SEGMENTS = 11
SLOT = REQUEST.size + MAX_SEGMENTS * SEGMENT.size  # 112
RING_SIZE = ring_size(SLOT)  # 32
SECTOR = 512
SECTORS_PER_PAGE = PAGE_SIZE // SECTOR  # first_sect and last_sect lie in 0..7

OP_READ = 0
OP_WRITE = 1
OP_FLUSH_DISKCACHE = 3
STATUS_OKAY = 0
STATUS_ERROR = -1
STATUS_EOPNOTSUPP = -2


class BlockIo:
    """One read, write or flush: the ring requests that carry it and how they went."""

    __slots__ = ("ids", "length", "offset", "op", "pages", "pending", "status")

    def __init__(self, op: int, offset: int, length: int, pages: list[int]) -> None:
        self.op = op
        self.offset = offset  # bytes
        self.length = length  # bytes
        self.pages = pages  # indices into the queue's data pages, in order; [] once freed
        self.ids: tuple[int, ...] = ()  # the ring requests' ids
        self.pending = 0  # requests not answered yet
        self.status = STATUS_OKAY  # the first failing request's status, if any

    @property
    def done(self) -> bool:
        return self.pending == 0

    def __repr__(self) -> str:
        return (
            f"BlockIo(op={self.op}, offset={self.offset}, length={self.length}, "
            f"ids={self.ids}, pending={self.pending}, status={self.status})"
        )


class BlkfrontQueue:
    """One blkfront ring and its data pages.

    `submit()` an I/O, notify if it says so; on each wakeup `complete()`; for a finished read
    `read_out()` the data. Before sleeping: `ring.arm_response_event()`, a barrier (the event
    channel's unmask write), `ring.has_responses()`.
    """

    __slots__ = ("_free", "_handle", "_in_flight", "_next_id", "_notify_always", "_pages", "ring")

    def __init__(
        self,
        ring_page: Writable,
        data_pages: Sequence[Page],
        *,
        handle: int = 0,
        start: int = 0,
        notify_always: bool = False,
    ) -> None:
        """`data_pages`: writable 4 KiB pages (more than 32 * 11 are never all in use);
        `handle`: the vbd's handle from xenstore; `start`: the ring's first index (tests
        start near 2**32); `notify_always`: as in netif.NetfrontQueues."""
        if not data_pages:
            raise ValueError("blkfront needs at least one data page")
        for page, _ in data_pages:
            if page.nbytes != PAGE_SIZE or page.readonly:
                raise ValueError(f"data pages are writable pages of {PAGE_SIZE} bytes")
        self.ring = FrontRing(ring_page, SLOT, start=start)
        self._pages = list(data_pages)
        self._free = list(reversed(range(len(self._pages))))
        self._handle = handle
        self._notify_always = notify_always
        self._in_flight: dict[int, BlockIo] = {}  # request id -> its I/O
        self._next_id = 1

    @property
    def max_io(self) -> int:
        """The largest read or write one submit() takes, in bytes."""
        return min(len(self._pages), RING_SIZE * MAX_SEGMENTS) * PAGE_SIZE

    def free_pages(self) -> int:
        return len(self._free)

    def submit(
        self, op: int, offset: int = 0, length: int = 0, data: Buffer | None = None
    ) -> tuple[BlockIo, bool] | None:
        """Start a read or write of `length` bytes at byte `offset` (`data` holds what to
        write), or a flush (no offset, length or data): (the I/O, whether to notify). None
        when the pages or ring slots it needs are taken now: wait for completions and try
        again. Raises ValueError for misaligned or oversized requests."""
        if op == OP_FLUSH_DISKCACHE:
            if offset or length or data is not None:
                raise ValueError("a flush takes no offset, length or data")
            pages_needed, requests = 0, 1
        elif op in (OP_READ, OP_WRITE):
            if offset < 0 or offset % SECTOR or length <= 0 or length % SECTOR:
                raise ValueError(
                    f"{length} bytes at {offset}: offsets and lengths are whole, positive "
                    f"numbers of {SECTOR}-byte sectors"
                )
            if length > self.max_io:
                raise ValueError(f"{length} bytes: one I/O moves at most {self.max_io}")
            if op == OP_WRITE and (data is None or len(data) != length):
                raise ValueError(f"a write of {length} bytes needs {length} bytes of data")
            if op == OP_READ and data is not None:
                raise ValueError("a read takes no data: read_out() copies it")
            pages_needed = -(-length // PAGE_SIZE)
            requests = -(-pages_needed // MAX_SEGMENTS)
        else:
            raise ValueError(f"unsupported blkif operation {op}")
        if pages_needed > len(self._free) or requests > self.ring.free_requests():
            return None
        io = BlockIo(op, offset, length, [self._free.pop() for _ in range(pages_needed)])
        if data is not None:
            source = memoryview(data).cast("B")
            for k, page_index in enumerate(io.pages):
                chunk = source[k * PAGE_SIZE : (k + 1) * PAGE_SIZE]
                self._pages[page_index][0][: len(chunk)] = chunk
        ids = []
        sector = offset // SECTOR
        ring = self.ring
        for r in range(requests):
            request_id = self._next_id
            self._next_id += 1
            segments = io.pages[r * MAX_SEGMENTS : (r + 1) * MAX_SEGMENTS]
            slot = ring.next_request()
            REQUEST.pack_into(slot, 0, op, len(segments), self._handle, 0, request_id, sector)
            for j, page_index in enumerate(segments):
                done = (r * MAX_SEGMENTS + j) * PAGE_SIZE
                sectors = min(SECTORS_PER_PAGE, (length - done) // SECTOR)
                gref = self._pages[page_index][1]
                SEGMENT.pack_into(slot, REQUEST.size + j * SEGMENT.size, gref, 0, sectors - 1)
                sector += sectors
            self._in_flight[request_id] = io
            ids.append(request_id)
        io.ids = tuple(ids)
        io.pending = requests
        rule = ring.push_requests()
        return io, self._notify_always or rule

    def complete(self) -> list[BlockIo]:
        """Take the responses, in whatever order they come; the I/Os now done, each with its
        status. A write's pages are free again; a read's wait for read_out() or release().
        Raises RingError for a response to no request in flight or of another operation."""
        finished = []
        while (slot := self.ring.take_response()) is not None:
            request_id, op, status = RESPONSE.unpack_from(slot)
            io = self._in_flight.pop(request_id, None)
            if io is None:
                raise RingError(f"a response to request {request_id}, which is not in flight")
            if op != io.op:
                raise RingError(f"request {request_id} was operation {io.op}, answered as {op}")
            if status != STATUS_OKAY and io.status == STATUS_OKAY:
                io.status = status
            io.pending -= 1
            if io.done:
                if io.op != OP_READ:
                    self.release(io)
                finished.append(io)
        return finished

    def read_out(self, io: BlockIo, into: Writable) -> int:
        """Copy a finished read's data into `into` (if it succeeded) and free its pages; its
        status."""
        if io.op != OP_READ or not io.done:
            raise ValueError(f"{io!r} is not a finished read")
        if io.status == STATUS_OKAY:
            target = memoryview(into).cast("B")
            if target.nbytes != io.length or target.readonly:
                raise ValueError(f"a read of {io.length} bytes needs as many writable bytes")
            if not io.pages and io.length:
                raise ValueError(f"{io!r} was read out or released already")
            for k, page_index in enumerate(io.pages):
                start = k * PAGE_SIZE
                size = min(PAGE_SIZE, io.length - start)
                target[start : start + size] = self._pages[page_index][0][:size]
        self.release(io)
        return io.status

    def release(self, io: BlockIo) -> None:
        """Free a finished I/O's pages without reading them (a read nobody waits for); done
        twice, nothing."""
        if not io.done:
            raise ValueError(f"{io!r} is in flight: the back end may still use its pages")
        self._free.extend(io.pages)
        io.pages = []

    def close(self) -> None:
        """Release the ring's views into its page, so that its mapping can be closed once the
        caller drops its own views (the data pages are the caller's)."""
        self.ring.close()
