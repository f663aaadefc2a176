"""blkfront: a Xen block front end run from userspace, as a BlockDevice (unikernel/block).

`open_blkfront()` connects one vbd as xen-frontends.md §4 says: it finds device/vbd/<vdev>
(the first listed by default), waits for blkback's InitWait, grants one pool (a ring page, an
indirect page per ring slot and 1024 data pages), binds an event channel, publishes ring-ref,
event-channel, protocol=x86_64-abi and feature-persistent=1 with state=3 in one transaction,
waits for blkback's Connected, reads the disk's geometry and feature-max-indirect-segments,
and says state=4. The data path is blkif.BlkfrontQueue; this module does the system calls
around it.

In flight at most: 4 MiB, as Linux's blkfront (32 requests of 32 pages). The pool stays at
the 1056 grants blkback keeps mapped per ring (xen_blkif_max_pgrants) with the indirect
pages, so that no request of ours costs blkback a grant map and unmap. With indirect
segments (Linux's blkback offers 256) a 1 MiB read is one request.

Any number of threads may have I/O in flight. An I/O larger than the queue takes at once is
cut into pieces that go out together. A thread whose I/O cannot get a run of pages or ring
slots waits its turn (first come, first served, so a large I/O is not starved by small ones).
Completions are reaped by one waiting thread at a time for everyone (as rawdisk does); each
of the others sleeps until its own I/O is done or it is handed the reaping, so a reap wakes
only the threads it finished for. The reaper copies each read out as it is answered, freeing
its pages at once (a read waiting for its last piece must not hold its first one's), and each
reap ends with the final check: ask for an event at the next response, barrier (the port's
unmask write), look at the ring again. The wait for an event is bounded by `poll_interval`,
after which the ring is looked at anyway (§5's safety net): a lost edge costs latency, never
a hang.

Sectors are 512 bytes on the wire whatever `sector-size` says; requests must be aligned to
`sector-size` (BlockDevice.check), as blkback refuses misaligned ones.
"""

from __future__ import annotations

import errno

from unikernel.block.interface import BlockDevice, BlockError
from unikernel.core.scheduler import CancelScope, move_on_after, wait_readable
from unikernel.core.sync import Event, Lock
from unikernel.drivers.xen import blkif, frontend, gntalloc
from unikernel.drivers.xen.blkif import BlkfrontQueue, BlockIo
from unikernel.drivers.xen.frontend import (
    CLOSE_TIMEOUT,
    CONNECTED,
    DEFAULT_TIMEOUT,
    INIT_WAIT,
    INITIALISED,
    FrontendError,
    Held,
)
from unikernel.drivers.xen.xenstore import XenstoreClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.drivers.xen.frontend import Channels, LimitCheck, PoolFactory

DATA_PAGES = 1024  # 4 MiB: as much in flight as Linux's blkfront
INDIRECT_PAGES = blkif.RING_SIZE  # one per request in flight
POLL_INTERVAL = 0.05  # seconds between looks at the ring when no event comes
VDISK_CDROM, VDISK_REMOVABLE, VDISK_READONLY = 1, 2, 4  # the `info` key's bits
_STATUS_NAMES = {
    blkif.STATUS_ERROR: "BLKIF_RSP_ERROR",
    blkif.STATUS_EOPNOTSUPP: "BLKIF_RSP_EOPNOTSUPP",
}
_OP_NAMES = {blkif.OP_READ: "read", blkif.OP_WRITE: "write", blkif.OP_FLUSH_DISKCACHE: "flush"}


async def open_blkfront(
    vdev: str | None = None,
    *,
    xenstore: XenstoreClient | None = None,
    evtchn: Channels | None = None,
    grants: PoolFactory | None = None,
    ensure_limit: LimitCheck | None = gntalloc.ensure_limit,
    timeout: float = DEFAULT_TIMEOUT,
    data_pages: int = DATA_PAGES,
    poll_interval: float = POLL_INTERVAL,
) -> Blkfront:
    """Connect vbd `vdev` ("51712" is xvda; None: the first listed) and return it as a
    BlockDevice; FrontendError if it cannot be. The device arguments are as open_netfront()'s;
    `data_pages` sizes the pool (fewer caps the I/O in flight)."""
    if not 1 <= data_pages <= DATA_PAGES:
        raise ValueError(f"data_pages={data_pages}: between 1 and {DATA_PAGES}")
    held = frontend.hold(xenstore, evtchn)
    xs, channels = held.xs, held.evtchn
    try:
        name, backend, backend_id = await frontend.find_device(xs, "vbd", vdev)
        device = held.frontend = f"device/vbd/{name}"
        await frontend.wait_backend_state(
            xs,
            backend,
            INIT_WAIT,
            timeout,
            "is xen-blkback loaded in the back end's domain (or, for a qdisk, is its QEMU"
            " running)?",
        )
        # One ring page whatever max-ring-page-order offers: a page holds 32 requests, and
        # with indirect ones those carry more than the pool.
        data_at = 1 + INDIRECT_PAGES
        count = data_at + data_pages
        pool = held.pool = frontend.allocate_pool(
            grants or gntalloc.GrantPool, ensure_limit, backend_id, count
        )
        held.pool_pages = count
        port = held.port = channels.bind_unbound(backend_id)
        grefs = pool.grefs
        # The data pages as one view (one mmap, side by side): a whole I/O is one copy.
        queue = BlkfrontQueue(
            held.page(0),
            held.pages(data_at, data_pages),
            grefs[data_at:count],
            handle=int(name) if name.isdigit() else 0,
            indirect=held.pages(1, INDIRECT_PAGES),
            indirect_grefs=grefs[1:data_at],
        )
        held.release_first.append(queue.close)
        keys = {
            "ring-ref": str(grefs[0]),
            "event-channel": str(port),
            "protocol": "x86_64-abi",
            "feature-persistent": "1",  # our grants are fixed anyway
            # Blkback connects on Initialised or Connected; Linux says Initialised first.
            "state": str(INITIALISED),
        }
        await held.publish(keys)
        await frontend.wait_backend_state(
            xs,
            backend,
            CONNECTED,
            timeout,
            f"the block hotplug script did not set the disk up? (see"
            f" {backend}/physical-device and {backend}/hotplug-status, and xen-hotplug.log"
            f" in the back end's domain)",
        )
        sectors = await frontend.read_key(xs, f"{backend}/sectors", "blkback writes it")
        sector_size = await frontend.read_optional(xs, f"{backend}/sector-size")
        info = await frontend.read_optional(xs, f"{backend}/info")
        mode = await frontend.read_optional(xs, f"{backend}/mode")
        flush = await frontend.read_optional(xs, f"{backend}/feature-flush-cache")
        # Blkback writes it as it connects, so it is read now (as Linux's blkfront does).
        indirect = await frontend.read_optional(xs, f"{backend}/feature-max-indirect-segments")
        for key, value in (
            ("sectors", sectors),
            ("sector-size", sector_size),
            ("info", info),
            ("feature-max-indirect-segments", indirect),
        ):
            if value is not None and not value.isdigit():
                raise FrontendError(f"{backend}/{key} is {value!r}, not a number")
        offered = min(int(indirect or 0), blkif.SEGMENTS_PER_INDIRECT_PAGE)
        queue.use_indirect(max(offered, blkif.MAX_SEGMENTS))
        await xs.write(f"{device}/state", str(CONNECTED))
    except BaseException as error:
        held.give_back(error)
        raise
    return Blkfront(
        held,
        queue,
        port,
        name=name,
        backend=backend,
        backend_id=backend_id,
        sectors=int(sectors),
        sector_size=int(sector_size or blkif.SECTOR),
        info=int(info or 0),
        mode=mode or "w",
        flush=flush == "1",
        poll_interval=poll_interval,
    )


class Blkfront(BlockDevice):
    """A connected vbd (made by open_blkfront()); see the module's docstring."""

    def __init__(
        self,
        held: Held,
        queue: BlkfrontQueue,
        port: int,
        *,
        name: str,
        backend: str,
        backend_id: int,
        sectors: int,
        sector_size: int = blkif.SECTOR,
        info: int = 0,
        mode: str = "w",
        flush: bool = True,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.name = name  # <vdev> of device/vbd/<vdev>
        self.backend = backend
        self.backend_id = backend_id
        self.capacity = sectors * blkif.SECTOR  # `sectors` counts 512 bytes, always
        self.sector_size = sector_size
        self.info = info
        self.mode = mode
        self.read_only = bool(info & VDISK_READONLY) or not mode.startswith("w")
        self.flush_supported = flush  # without it blkback writes through: nothing to flush
        self.poll_interval = poll_interval
        self._held = held
        self._evtchn = held.evtchn
        self._port = port
        self._queue = queue
        self._turn = Lock()  # taken by whoever waits for pages or slots: first come, first served
        self._watching = False  # whether a thread waits on the event channel for everyone
        self._watch_scope: CancelScope | None = None
        # Threads asleep until their I/O is done or they are handed the reaping, by I/O.
        self._waiters: dict[BlockIo, Event] = {}
        self._room = Event()  # set, and replaced, by each reap that finished an I/O
        # Where each read in flight goes: copied there (its pages freed) as soon as it is
        # answered, by whoever reaps; None once its requester has left.
        self._targets: dict[BlockIo, memoryview | None] = {}
        # For the bench.
        self.requests = 0  # I/Os submitted (a split one counts its pieces)
        self.wakeups = 0  # reaps that found an event
        self.notifies = 0
        self.rescues = 0  # responses found by the safety net or the final check, no event

    def __repr__(self) -> str:
        return f"<Blkfront vbd {self.name} ({self.backend}), {self.capacity} bytes>"

    @property
    def max_io(self) -> int:
        """The most bytes one request to the queue moves; larger I/Os are cut."""
        return self._queue.max_io

    def counts(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "wakeups": self.wakeups,
            "notifies": self.notifies,
            "rescues": self.rescues,
            "free_pages": self._queue.free_pages(),
            "in_flight": self._queue.ring.in_flight(),
        }

    async def read(self, offset: int, buffer: memoryview) -> None:
        self.check(offset, buffer, writing=False)
        await self._io(blkif.OP_READ, offset, buffer.cast("B"))

    async def write(self, offset: int, buffer: memoryview) -> None:
        if self.read_only:
            raise BlockError(
                errno.EROFS,
                f"vbd {self.name}: write at {offset} refused: the disk is read-only"
                f" (mode={self.mode!r}, info={self.info})",
            )
        self.check(offset, buffer, writing=True)
        await self._io(blkif.OP_WRITE, offset, buffer.cast("B"))

    async def flush(self) -> None:
        self._check_open()
        if self.read_only or not self.flush_supported:
            return
        io = await self._submit(blkif.OP_FLUSH_DISKCACHE, 0, 0, None, None)
        await self._until_done([io])
        if io.status == blkif.STATUS_EOPNOTSUPP:
            # What Linux's blkfront does: no flushes from now on, as for a disk that never
            # offered them (blkback then writes through).
            self.flush_supported = False
        elif io.status != blkif.STATUS_OKAY:
            raise BlockError(errno.EIO, self._failure(io))

    def expect_random_reads(self) -> None:
        """Nothing to drop: blkfront caches nothing."""

    def close(self) -> None:
        """Tell the back end we are closing (without waiting), end the grants. Requests in
        flight fail with BlockError."""
        if self._held.released:
            return
        if self._watch_scope is not None:
            self._watch_scope.cancel()  # while the device is open: its watcher stops at once
        waiters, self._waiters = self._waiters, {}
        self._targets.clear()
        self._held.release()
        for event in waiters.values():
            event.set()
        self._wake_room()

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """close(), after Linux's unplug handshake with the back end."""
        held = self._held
        try:
            if held.published and not held.released:
                await frontend.disconnect(held.xs, held.frontend, self.backend, timeout)
                held.published = False
        finally:
            self.close()

    async def _io(self, op: int, offset: int, view: memoryview) -> None:
        """Read into or write from `view` at byte `offset`, cut into pieces the queue takes."""
        size = view.nbytes
        step = self._queue.max_io
        pieces: list[BlockIo] = []
        try:
            for start in range(0, size, step):
                length = min(step, size - start)
                piece = view[start : start + length]
                if op == blkif.OP_WRITE:
                    io = await self._submit(op, offset + start, length, piece, None)
                else:
                    io = await self._submit(op, offset + start, length, None, piece)
                pieces.append(io)
            await self._until_done(pieces)
        except BaseException:
            for io in pieces:
                if io in self._targets:
                    self._targets[io] = None  # the back end still writes its pages
            raise
        for io in pieces:
            if io.status != blkif.STATUS_OKAY:
                raise BlockError(errno.EIO, self._failure(io))

    async def _submit(
        self,
        op: int,
        offset: int,
        length: int,
        data: memoryview | None,
        target: memoryview | None,
    ) -> BlockIo:
        """Put an I/O on the ring, waiting for pages and slots first if need be; a read's
        data goes to `target`."""
        queue = self._queue
        async with self._turn:
            while True:
                self._check_open()
                submitted = queue.submit(op, offset, length, data)
                if submitted is not None:
                    break
                if self._watching:
                    await self._room.wait()
                else:
                    await self._watch(None)
        io, notify = submitted
        if target is not None:
            self._targets[io] = target
        self.requests += 1
        if notify:
            self._evtchn.notify(self._port)  # a hypercall: also the barrier after req_prod
            self.notifies += 1
        return io

    async def _until_done(self, ios: list[BlockIo]) -> None:
        for io in ios:
            while not io.done:
                self._check_open(io)
                if self._watching:
                    await self._sleep_until_done(io)
                else:
                    await self._watch(io)

    async def _sleep_until_done(self, io: BlockIo) -> None:
        """Sleep until the reaper has finished `io`, or has left and handed the reaping over."""
        event = self._waiters[io] = Event()
        try:
            await event.wait()
        except BaseException:
            if self._waiters.get(io) is event:
                del self._waiters[io]
            else:
                self._hand_over()  # we may have been handed the reaping: pass it on
            raise

    async def _watch(self, io: BlockIo | None) -> None:
        """Wait on the event channel and reap for everyone until `io` is done (None: once);
        then hand the reaping to a thread still waiting, if any."""
        self._watching = True
        try:
            with CancelScope() as scope:
                self._watch_scope = scope
                while True:
                    with move_on_after(self.poll_interval):
                        await wait_readable(self._evtchn.fileno())
                    self._reap()
                    if io is None or io.done or self._held.released:
                        break
        finally:
            self._watching = False
            self._watch_scope = None
            self._hand_over()

    def _hand_over(self) -> None:
        """With nobody reaping, wake one thread that waits, to reap."""
        if self._watching:
            return
        waiters = self._waiters
        for io in waiters:
            if not io.done:
                waiters.pop(io).set()
                return
        self._wake_room()  # none: the thread waiting for room, if one does

    def _wake_room(self) -> None:
        room, self._room = self._room, Event()
        room.set()

    def _reap(self) -> None:
        """Take every response, then the final check; completions freed or handed over, and
        their threads woken."""
        if self._held.released:
            return
        evtchn, ring, queue = self._evtchn, self._queue.ring, self._queue
        waiters, targets = self._waiters, self._targets
        event = bool(evtchn.pending())
        self.wakeups += event
        if not event and ring.has_responses():
            self.rescues += 1  # the safety net found what no event announced
        finished = False
        while True:
            for io in queue.complete():
                finished = True
                if io.op == blkif.OP_READ:
                    target = targets.pop(io, None)
                    if target is None:
                        queue.release(io)
                    else:
                        queue.read_out(io, target)  # copies only if it succeeded; frees
                waiter = waiters.pop(io, None)
                if waiter is not None:
                    waiter.set()
            ring.arm_response_event()
            evtchn.unmask(self._port)  # the barrier between that store and the next load
            if not ring.has_responses():
                break
            self.rescues += 1  # came before we asked for an event: none will come
        if finished:
            self._wake_room()

    def _check_open(self, io: BlockIo | None = None) -> None:
        if self._held.released:
            what = "" if io is None else f" ({self._describe(io)} was in flight)"
            raise BlockError(errno.ECANCELED, f"vbd {self.name} is closed{what}")

    def _describe(self, io: BlockIo) -> str:
        op = _OP_NAMES.get(io.op, f"operation {io.op}")
        if io.op == blkif.OP_FLUSH_DISKCACHE:
            return op
        first = io.offset // blkif.SECTOR
        last = first + io.length // blkif.SECTOR - 1
        return f"{op} of sectors {first}..{last} ({io.length} bytes at {io.offset})"

    def _failure(self, io: BlockIo) -> str:
        status = _STATUS_NAMES.get(io.status, "unknown status")
        return f"vbd {self.name}: {self._describe(io)} failed: status {io.status} ({status})"
