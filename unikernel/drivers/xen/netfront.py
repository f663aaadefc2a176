"""netfront: a Xen network front end run from userspace, as a Netif (unikernel/drivers).

`open_netfront()` connects one vif as xen-frontends.md §3 says: it finds device/vif/N in
xenstore, waits for netback's InitWait, checks feature-rx-copy, grants one pool (the two ring
pages, 256 receive buffers, 128 transmit pages cut in 256 half-page blocks), binds an event
channel, posts every receive buffer, publishes the ring refs, the port and our features with
state=4 in one transaction, waits for netback's Connected and kicks it once. The data path
is netif.NetfrontQueues; this module does the system calls around it.

Readiness, against the Netif contract:

- fileno() is the event channel device, readable when the back end has signalled us. The
  kernel masks the port when it queues the event, so read_batch() drains the rings, then
  (unless it returns a full batch) asks for an event at the next response on both rings,
  unmasks the port (a write: the full barrier §5 asks for between that store and the next
  load) and looks at the rings once more. Responses the back end pushed before our request
  for an event came with no event and none will come: read_batch() takes them there and
  then, and loops, so it never returns fewer than `limit` frames with a frame left behind.
  The port is unmasked once a call: the looks after the first only need a barrier
  (ring.full_barrier), as an event the back end sends meanwhile is queued for the next call.
  A full batch means more may wait: call again without waiting (Interface does); the port
  stays masked meanwhile, sparing a system call per batch.
- The device is always writable, so "wait for writable" cannot mean "the tx ring has room".
  write_batch() therefore takes frames beyond the ring's room into a queue of its own (up to
  `tx_queue` frames), which read_batch() and write_batch() push as completions free blocks;
  whenever frames wait there, a completion is asked to raise an event (tx rsp_event, a
  barrier, a final look), so the reader wakes to push them. Only when that queue is full too
  does write_batch() take fewer, and the Interface's writer then spins: each round wakes at
  once (writable), reclaims and offers again, yielding to every other thread in between.
- read_batch() and write_batch() never block, and read_batch() returns [] when nothing waits.

There is no periodic re-check (§5's safety net): the Interface's reader waits on fileno()
without a timeout. A lost edge would stall receive until the next event of either ring.
"""

from __future__ import annotations

from collections import deque

from unikernel.drivers import Netif
from unikernel.drivers.xen import frontend, gntalloc
from unikernel.drivers.xen.frontend import (
    CLOSE_TIMEOUT,
    CONNECTED,
    DEFAULT_TIMEOUT,
    INIT_WAIT,
    FrontendError,
    Held,
)
from unikernel.drivers.xen.netif import MAX_FRAME, MIN_FRAME, NetfrontQueues
from unikernel.drivers.xen.ring import full_barrier
from unikernel.drivers.xen.xenstore import XenstoreClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from unikernel.drivers.xen.frontend import Channels, LimitCheck, PoolFactory

    Buffer = bytes | bytearray | memoryview

RX_BUFFERS = 256  # one per rx slot
TX_PAGES = 128  # two blocks each: one per tx slot
POOL_PAGES = 2 + RX_BUFFERS + TX_PAGES  # tx ring, rx ring, rx buffers, tx pages
DEFAULT_TX_QUEUE = 256  # frames write_batch() takes beyond the ring's room
MTU = MAX_FRAME - 14  # no feature-sg: a frame fits one slot

# What we publish, besides the ring refs and the port (§3 step 6).
FEATURES = {
    "request-rx-copy": "1",  # netback refuses to connect without it
    "feature-rx-notify": "1",  # or netback polls every 30 ms, without stall detection
    "feature-no-csum-offload": "1",  # dom0 hands over complete checksums
}


async def open_netfront(
    index: int = 0,
    *,
    xenstore: XenstoreClient | None = None,
    evtchn: Channels | None = None,
    grants: PoolFactory | None = None,
    ensure_limit: LimitCheck | None = gntalloc.ensure_limit,
    timeout: float = DEFAULT_TIMEOUT,
    tx_queue: int = DEFAULT_TX_QUEUE,
) -> Netfront:
    """Connect vif `index` and return it as a Netif; FrontendError if it cannot be.

    `xenstore`: a client to share (else one on /dev/xen/xenbus, which the Netfront owns);
    `evtchn`: the event channel device, which the Netfront owns from now on, even when this
    fails (else /dev/xen/evtchn); `grants`: makes the grant pool from (domid, pages) (else
    gntalloc.GrantPool); `ensure_limit`: raises gntalloc's limit (None: leave it). `timeout`
    bounds each wait for the back end's state. When bring-up fails, all it took is given back
    before the error is raised.
    """
    held = frontend.hold(xenstore, evtchn)
    xs, channels = held.xs, held.evtchn
    try:
        name, backend, backend_id = await frontend.find_device(xs, "vif", str(index))
        device = held.frontend = f"device/vif/{name}"
        mac = parse_mac(await frontend.read_key(xs, f"{device}/mac", "the toolstack writes it"))
        handle = await frontend.read_optional(xs, f"{device}/handle")
        await frontend.wait_backend_state(
            xs,
            backend,
            INIT_WAIT,
            timeout,
            "is xen-netback loaded in the back end's domain, and did the toolstack finish"
            " creating the vif there?",
        )
        rx_copy = await frontend.read_optional(xs, f"{backend}/feature-rx-copy")
        if rx_copy != "1":
            raise FrontendError(
                f"{backend}/feature-rx-copy is {rx_copy!r}: this front end needs a netback"
                " that copies received frames into our buffers"
            )
        pool = held.pool = frontend.allocate_pool(
            grants or gntalloc.GrantPool, ensure_limit, backend_id, POOL_PAGES
        )
        held.pool_pages = POOL_PAGES
        port = held.port = channels.bind_unbound(backend_id)
        grefs = pool.grefs
        rx_first, tx_first = 2, 2 + RX_BUFFERS
        queues = NetfrontQueues(
            held.page(0),
            held.page(1),
            [(held.page(i), grefs[i]) for i in range(rx_first, tx_first)],
            [(held.page(i), grefs[i]) for i in range(tx_first, POOL_PAGES)],
        )
        held.release_first.append(queues.close)
        queues.post_all_rx()  # rx req_prod = 256 before netback first looks
        keys = {
            "tx-ring-ref": str(grefs[0]),
            "rx-ring-ref": str(grefs[1]),
            "event-channel": str(port),
            **FEATURES,
            # Netback connects only on Connected; it ignores Initialised.
            "state": str(CONNECTED),
        }
        await held.publish(keys)
        await frontend.wait_backend_state(
            xs,
            backend,
            CONNECTED,
            timeout,
            f"the hotplug script did not write hotplug-status=connected? (see"
            f" {backend}/hotplug-status, and xen-hotplug.log in the back end's domain)",
        )
        channels.notify(port)  # netback may have looked at the rings before we were ready
    except BaseException as error:
        held.give_back(error)
        raise
    return Netfront(
        held,
        queues,
        port,
        mac,
        name=name,
        backend=backend,
        backend_id=backend_id,
        handle=int(handle) if handle and handle.isdigit() else int(name),
        tx_queue=tx_queue,
    )


def parse_mac(text: str) -> bytes:
    """The vif's MAC as xenstore writes it ("00:16:3e:01:02:03"), as 6 bytes."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise FrontendError(f"the vif's mac is {text!r}, not six hex bytes")
    try:
        return bytes.fromhex("".join(parts))
    except ValueError:
        raise FrontendError(f"the vif's mac is {text!r}, not six hex bytes") from None


class Netfront(Netif):
    """A connected vif (made by open_netfront()); see the module's docstring."""

    mtu = MTU
    segmentation = False

    def __init__(
        self,
        held: Held,
        queues: NetfrontQueues,
        port: int,
        mac: bytes,
        *,
        name: str,
        backend: str,
        backend_id: int,
        handle: int,
        tx_queue: int = DEFAULT_TX_QUEUE,
    ) -> None:
        self.mac = mac
        self.name = name  # N of device/vif/N
        self.backend = backend
        self.backend_id = backend_id
        self.handle = handle
        self.tx_queue_limit = tx_queue
        self._held = held
        self._evtchn = held.evtchn
        self._port = port
        self._queues = queues
        self._tx_queue: deque[Buffer] = deque()  # frames taken, waiting for ring room
        self._vouched = 0
        # For the bench.
        self.rx_frames = 0  # frames returned by read_batch()
        self.tx_frames = 0  # frames put on the tx ring
        self.tx_oversize = 0  # frames outside 14..1514 bytes, dropped
        self.tx_refused = 0  # frames write_batch() did not take (ring and queue full)
        self.wakeups = 0  # read_batch() calls that found an event
        self.notifies = 0  # events sent to the back end
        self.rescues = 0  # final checks that found responses that came without an event

    def __repr__(self) -> str:
        return f"<Netfront vif {self.name} ({self.backend}), port {self._port}>"

    def fileno(self) -> int:
        return self._evtchn.fileno()

    def counts(self) -> dict[str, int]:
        """Every counter, the data path's included."""
        queues = self._queues
        return {
            "rx_frames": self.rx_frames,
            "tx_frames": self.tx_frames,
            "rx_errors": queues.rx_errors,
            "rx_chains_dropped": queues.rx_chains_dropped,
            "rx_csum_blank": queues.rx_csum_blank,
            "tx_errors": queues.tx_errors,
            "tx_dropped": queues.tx_dropped,
            "tx_oversize": self.tx_oversize,
            "tx_refused": self.tx_refused,
            "tx_queued": len(self._tx_queue),
            "wakeups": self.wakeups,
            "notifies": self.notifies,
            "rescues": self.rescues,
            "evtchn_overflows": getattr(self._evtchn, "overflows", 0),
        }

    def read_batch(self, limit: int) -> list[Buffer]:
        if self._held.released or limit <= 0:
            return []
        queues = self._queues
        if self._evtchn.pending():  # one read; drains the device's queue of events
            self.wakeups += 1
        frames: list[Buffer] = []
        vouched = 0
        unmasked = False
        while True:
            queues.reclaim_tx()
            notify = self._push_tx_queue() if self._tx_queue else False
            got, bits, reposted = queues.receive(limit - len(frames))
            if got:
                vouched |= bits << len(frames)
                frames += got
            if notify or reposted:
                self._notify()
            if len(frames) >= limit:
                break  # more may wait: the caller comes straight back
            # Ask for an event at the next response, barrier (the unmask write, which also
            # lets the port fire again), look again: what came before the ask brings no event.
            queues.arm_response_events()
            if unmasked:
                full_barrier()  # the port is live since the last look: spare a system call
            else:
                self._evtchn.unmask(self._port)
                unmasked = True
            if not queues.responses_pending():
                break
            self.rescues += 1
        self._vouched = vouched
        self.rx_frames += len(frames)
        return frames

    def vouched(self) -> int:
        return self._vouched

    def write_batch(self, frames: Sequence[Buffer]) -> int:
        if self._held.released:
            raise OSError(f"{self!r} is closed")
        queue = self._tx_queue
        taken = 0
        if not queue:
            taken = self._transmit(frames)
        room = self.tx_queue_limit - len(queue)
        rest = len(frames) - taken
        accepted = min(rest, room)
        for i in range(taken, taken + accepted):
            frame = frames[i]
            # A copy unless immutable: the caller may reuse its buffer once this returns.
            queue.append(frame if isinstance(frame, bytes) else bytes(frame))
        self.tx_refused += rest - accepted
        if queue:
            self._queue_waits()
        return taken + accepted

    def close(self) -> None:
        """Tell the back end we are closing (without waiting: see aclose()), unbind the port,
        end the grants. Stop the Interface's threads first (Interface.aclose())."""
        self._tx_queue.clear()
        self._held.release()

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """close(), after Linux's unplug handshake with the back end (Closing, then Closed,
        each acknowledged or `timeout` seconds later)."""
        held = self._held
        try:
            if held.published and not held.released:
                await frontend.disconnect(held.xs, held.frontend, self.backend, timeout)
                held.published = False
        finally:
            self.close()

    def _notify(self) -> None:
        self._evtchn.notify(self._port)  # a hypercall: also the barrier after req_prod
        self.notifies += 1

    def _to_ring(self, frames: Sequence[Buffer]) -> tuple[int, bool]:
        """Put what fits of `frames` on the tx ring: (how many are dealt with, whether to
        notify). Frames of impossible sizes are dropped and count as dealt with, as a NIC
        drops what it cannot send."""
        queues = self._queues
        try:
            sent, notify = queues.transmit(frames)
            taken = sent
        except ValueError:  # rare: some frame is too short or too long; nothing was taken
            good = [f for f in frames if MIN_FRAME <= len(f) <= MAX_FRAME]
            sent, notify = queues.transmit(good)
            taken = _position_after(frames, good, sent)
            self.tx_oversize += taken - sent
        self.tx_frames += sent
        return taken, notify

    def _transmit(self, frames: Sequence[Buffer]) -> int:
        taken, notify = self._to_ring(frames)
        if notify:
            self._notify()
        return taken

    def _push_tx_queue(self) -> bool:
        """Move queued frames onto the ring as room allows; whether to notify."""
        queue = self._tx_queue
        notify = False
        while queue:
            room = self._queues.tx_room()  # the caller has reclaimed
            if not room:
                break
            batch = [queue[i] for i in range(min(len(queue), room))]
            taken, published = self._to_ring(batch)
            notify = notify or published
            for _ in range(taken):
                queue.popleft()
            if taken < len(batch):
                break
        return notify

    def _queue_waits(self) -> None:
        """Frames wait for ring room: make sure a tx completion will wake the reader (which
        pushes them), and push what room has come meanwhile."""
        queues = self._queues
        tx = queues.tx
        while self._tx_queue:
            if self._push_tx_queue():
                self._notify()
                continue
            tx.arm_response_event()
            self._evtchn.unmask(self._port)  # the barrier between that store and this load
            if not tx.has_responses():
                return
            queues.reclaim_tx()


def _position_after(frames: Sequence[Buffer], good: list[Buffer], taken: int) -> int:
    """How many of `frames` are dealt with once the first `taken` of `good` (the well-sized
    ones, in order) went out: those, and the ill-sized ones before the next good one."""
    if taken == len(good):
        return len(frames)
    seen = 0
    for i, frame in enumerate(frames):
        if MIN_FRAME <= len(frame) <= MAX_FRAME:
            if seen == taken:
                return i
            seen += 1
    return len(frames)
