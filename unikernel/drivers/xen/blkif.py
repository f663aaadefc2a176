"""blkif: blkfront's data path (io/blkif.h) over its shared ring, sans-IO.

The driver owns the grants, the event channel and xenstore; it hands `BlkfrontQueue` the
mapped ring page and its data pages as one contiguous view, with the grant reference the back
end knows each page by (persistent grants: granted once, reused). An I/O (`BlockIo`) takes a
run of consecutive pages of its own (first fit), so requests in flight never share one. It
goes out as one request per 11 pages (44 KiB) in the ring slot itself, or, when the back end
offers indirect segments (feature-max-indirect-segments) and the driver hands over indirect
pages, as one indirect request per `max_segments` pages: the slot then names a granted page
that holds the segment array (blkif.h's BLKIF_OP_INDIRECT), so a 1 MiB read is one request,
not 24. Writes are copied into their run, in one slice, before their requests are published;
reads are copied out of it, in one slice, once every request of theirs is answered, then the
pages are free again.

Python's work per I/O is per request, never per page: each page's full-page segment (gref,
sectors 0..7) is packed once, up front, a request's segment array is one slice of those
(copied into the slot, or into an indirect page), and only an I/O's last page, if partial,
is patched. Runs can fragment, so an I/O may have to wait
although enough pages are free, but only for I/Os in flight (or reads not read out yet): with
none, every page is free and any I/O the queue takes (at most `max_io`) fits.

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
# A whole request slot in one call: the header, then the segment array as bytes (a short one
# is padded with zeros, past nr_segments, which the back end ignores).
_FILLED = struct.Struct(f"<BBHIQQ{MAX_SEGMENTS * SEGMENT.size}s")
_SEGMENTS_AT = REQUEST.size  # where a slot's segment array starts
# blkif_request_indirect (x86-64, packed): op (6), the real op, nr_segments (u16), pad, id,
# sector_number, handle, pad, then up to 8 indirect pages' grefs; we use one page, whose
# 512 segments are more than any back end takes (Linux's blkback: 256).
INDIRECT = struct.Struct("<BBHIQQHHI")
SEGMENTS_PER_INDIRECT_PAGE = PAGE_SIZE // SEGMENT.size  # 512

OP_READ = 0
OP_WRITE = 1
OP_FLUSH_DISKCACHE = 3
OP_INDIRECT = 6
STATUS_OKAY = 0
STATUS_ERROR = -1
STATUS_EOPNOTSUPP = -2


class BlockIo:
    """One read, write or flush: the run of pages it holds, the ring requests that carry it
    and how they went."""

    __slots__ = ("count", "first", "ids", "length", "offset", "op", "pending", "status")

    def __init__(self, op: int, offset: int, length: int, first: int, count: int) -> None:
        self.op = op
        self.offset = offset  # bytes
        self.length = length  # bytes
        self.first = first  # the queue's data page where its run starts
        self.count = count  # pages in the run; 0 once freed (and for a flush)
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

    __slots__ = (
        "_data",
        "_grefs",
        "_handle",
        "_in_flight",
        "_indirect",
        "_indirect_free",
        "_indirect_grefs",
        "_indirect_of",
        "_next_id",
        "_notify_always",
        "_per_request",
        "_segments",
        "_used",
        "ring",
    )

    def __init__(
        self,
        ring_page: Writable,
        data: Writable,
        grefs: Sequence[int],
        *,
        handle: int = 0,
        start: int = 0,
        notify_always: bool = False,
        indirect: Writable | None = None,
        indirect_grefs: Sequence[int] = (),
        max_segments: int = MAX_SEGMENTS,
    ) -> None:
        """`data`: the data pages, one writable, contiguous view of whole 4 KiB pages: page i
        is data[i * 4096 : (i + 1) * 4096]; `grefs[i]`: page i's grant reference; `handle`:
        the vbd's handle from xenstore; `start`: the ring's first index (tests start near
        2**32); `notify_always`: as in netif.NetfrontQueues. `indirect`: pages for indirect
        requests' segment arrays (contiguous, whole pages, `indirect_grefs[i]` page i's gref;
        one per ring slot is enough for a full ring), used from `use_indirect(max_segments)`
        on (here or later)."""
        if not grefs:
            raise ValueError("blkfront needs at least one data page")
        pages = () if indirect is None else _pages(indirect, len(indirect_grefs))
        view = memoryview(data).cast("B")
        if view.readonly or view.nbytes != len(grefs) * PAGE_SIZE:
            size = view.nbytes
            view.release()
            raise ValueError(
                f"{size} bytes for {len(grefs)} grant references: the data pages are "
                f"one writable view of {PAGE_SIZE} bytes per reference"
            )
        self.ring = FrontRing(ring_page, SLOT, start=start)
        self._data = view
        self._grefs = tuple(grefs)
        # Every page's segment for the whole page, in page order: a request's segment array
        # is one slice of this.
        self._segments = b"".join(SEGMENT.pack(g, 0, SECTORS_PER_PAGE - 1) for g in grefs)
        self._used = bytearray(len(grefs))  # per page: 0 free, 1 held by an I/O
        self._handle = handle
        self._notify_always = notify_always
        self._in_flight: dict[int, BlockIo] = {}  # request id -> its I/O
        self._next_id = 1
        self._per_request = MAX_SEGMENTS  # pages per request of an I/O of more than 11
        self._indirect = pages  # each a view of one indirect page
        self._indirect_grefs = tuple(indirect_grefs)
        self._indirect_free = list(range(len(pages)))
        self._indirect_of: dict[int, int] = {}  # request id -> the indirect page it holds
        self.use_indirect(max_segments)

    def use_indirect(self, max_segments: int) -> None:
        """Send I/Os of more than 11 pages as indirect requests of up to `max_segments` pages
        (what the back end's feature-max-indirect-segments allows, at most 512), or, with 11,
        not at all. Blkback says it as it connects, after the ring is set up; before any I/O."""
        if self._in_flight:
            raise RuntimeError("requests are in flight: say it before any I/O")
        if not MAX_SEGMENTS <= max_segments <= SEGMENTS_PER_INDIRECT_PAGE:
            raise ValueError(
                f"max_segments={max_segments}: {MAX_SEGMENTS} (no indirect requests) to "
                f"{SEGMENTS_PER_INDIRECT_PAGE} (one indirect page's worth)"
            )
        if max_segments > MAX_SEGMENTS and not self._indirect:
            raise ValueError("indirect requests need at least one indirect page")
        self._per_request = max_segments

    @property
    def max_io(self) -> int:
        """The largest read or write one submit() takes, in bytes."""
        per = self._per_request
        requests = RING_SIZE if per == MAX_SEGMENTS else min(RING_SIZE, len(self._indirect))
        return min(len(self._used), requests * per) * PAGE_SIZE

    @property
    def max_segments(self) -> int:
        """Pages per request: 11, or more with indirect requests."""
        return self._per_request

    def free_pages(self) -> int:
        return self._used.count(0)

    def largest_free_run(self) -> int:
        """The most pages one I/O could take now: the longest run of free pages."""
        return max(map(len, self._used.split(b"\x01")))

    def submit(
        self, op: int, offset: int = 0, length: int = 0, data: Buffer | None = None
    ) -> tuple[BlockIo, bool] | None:
        """Start a read or write of `length` bytes at byte `offset` (`data` holds what to
        write), or a flush (no offset, length or data): (the I/O, whether to notify). None
        when no run of free pages is long enough now, or the ring slots it needs are taken:
        wait for completions and try again (with nothing in flight, it goes). Raises
        ValueError for misaligned or oversized requests."""
        source = None
        if op == OP_FLUSH_DISKCACHE:
            if offset or length or data is not None:
                raise ValueError("a flush takes no offset, length or data")
            pages, requests, per = 0, 1, MAX_SEGMENTS
        elif op in (OP_READ, OP_WRITE):
            if offset < 0 or offset % SECTOR or length <= 0 or length % SECTOR:
                raise ValueError(
                    f"{length} bytes at {offset}: offsets and lengths are whole, positive "
                    f"numbers of {SECTOR}-byte sectors"
                )
            if length > self.max_io:
                raise ValueError(f"{length} bytes: one I/O moves at most {self.max_io}")
            if op == OP_WRITE:
                if data is not None:
                    source = memoryview(data).cast("B")
                if source is None or source.nbytes != length:
                    raise ValueError(f"a write of {length} bytes needs {length} bytes of data")
            elif data is not None:
                raise ValueError("a read takes no data: read_out() copies it")
            pages = -(-length // PAGE_SIZE)
            per = self._per_request if pages > MAX_SEGMENTS else MAX_SEGMENTS
            requests = -(-pages // per)
        else:
            raise ValueError(f"unsupported blkif operation {op}")
        ring = self.ring
        if requests > ring.free_requests():
            return None
        indirect = per > MAX_SEGMENTS  # more than 11 pages, and the back end takes them
        if indirect and requests > len(self._indirect_free):
            return None  # only with fewer indirect pages than ring slots
        first = 0
        if pages:
            used = self._used
            first = used.find(bytes(pages))  # first fit, searched in C
            if first < 0:
                return None
            used[first : first + pages] = b"\x01" * pages
        io = BlockIo(op, offset, length, first, pages)
        if source is not None:
            base = first * PAGE_SIZE
            self._data[base : base + length] = source  # one copy, however many pages
        next_id = self._next_id
        self._next_id = next_id + requests
        io.ids = ids = tuple(range(next_id, next_id + requests))
        io.pending = requests
        in_flight, segments, handle = self._in_flight, self._segments, self._handle
        next_request, step = ring.next_request, SEGMENT.size
        sector = offset // SECTOR
        sectors = per * SECTORS_PER_PAGE
        at, end = first * step, (first + pages) * step  # this run's segments, in bytes
        slot = array = None  # the last request's slot, and its indirect page if it has one
        for request_id in ids:
            stop = at + per * step
            if stop > end:  # the last request (an `if`: cheaper than min() per request)
                stop = end
            slot = next_request()
            count = (stop - at) // step
            if indirect:
                page = self._indirect_free.pop()
                array = self._indirect[page]
                array[: stop - at] = segments[at:stop]
                self._indirect_of[request_id] = page
                INDIRECT.pack_into(
                    slot, 0, OP_INDIRECT, op, count, 0, request_id, sector, handle, 0,
                    self._indirect_grefs[page],
                )  # fmt: skip
            else:
                _FILLED.pack_into(
                    slot, 0, op, count, handle, 0, request_id, sector, segments[at:stop]
                )
            in_flight[request_id] = io
            at = stop
            sector += sectors
        tail = length % PAGE_SIZE
        if tail and slot is not None:
            # The last page is partial: its segment ends at the I/O's last sector.
            at = ((pages - 1) % per) * SEGMENT.size
            if array is None:
                array, at = slot, at + _SEGMENTS_AT
            SEGMENT.pack_into(array, at, self._grefs[first + pages - 1], 0, tail // SECTOR - 1)
        rule = ring.push_requests()
        return io, self._notify_always or rule

    def complete(self) -> list[BlockIo]:
        """Take the responses, in whatever order they come; the I/Os now done, each with its
        status. A write's pages are free again; a read's wait for read_out() or release().
        Raises RingError for a response to no request in flight or of another operation."""
        finished = []
        take, unpack, pop = self.ring.take_response, RESPONSE.unpack_from, self._in_flight.pop
        indirect_of = self._indirect_of
        while (slot := take()) is not None:
            request_id, op, status = unpack(slot)
            io = pop(request_id, None)
            if indirect_of:
                page = indirect_of.pop(request_id, None)
                if page is not None:
                    self._indirect_free.append(page)
            if io is None:
                raise RingError(f"a response to request {request_id}, which is not in flight")
            if op != io.op:
                raise RingError(f"request {request_id} was operation {io.op}, answered as {op}")
            if status != STATUS_OKAY and io.status == STATUS_OKAY:
                io.status = status
            io.pending -= 1
            if not io.pending:  # io.done, without a call per response
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
            if not io.count:
                raise ValueError(f"{io!r} was read out or released already")
            at = io.first * PAGE_SIZE
            target[:] = self._data[at : at + io.length]
        self.release(io)
        return io.status

    def release(self, io: BlockIo) -> None:
        """Free a finished I/O's pages without reading them (a read nobody waits for); done
        twice, nothing."""
        if not io.done:
            raise ValueError(f"{io!r} is in flight: the back end may still use its pages")
        if io.count:
            self._used[io.first : io.first + io.count] = bytes(io.count)
            io.count = 0

    def close(self) -> None:
        """Release the queue's views into the ring page and the data pages, so that their
        mapping can be closed once the caller drops its own views. The queue is unusable
        after."""
        self.ring.close()
        self._data.release()
        for page in self._indirect:
            page.release()


def _pages(view: Writable, count: int) -> tuple[memoryview, ...]:
    """`view`, `count` whole pages side by side, as one view per page."""
    pages = memoryview(view).cast("B")
    if pages.readonly or pages.nbytes != count * PAGE_SIZE:
        size = pages.nbytes
        pages.release()
        raise ValueError(
            f"{size} bytes for {count} indirect grant references: the indirect pages are "
            f"one writable view of {PAGE_SIZE} bytes per reference"
        )
    return tuple(pages[i * PAGE_SIZE : (i + 1) * PAGE_SIZE] for i in range(count))
