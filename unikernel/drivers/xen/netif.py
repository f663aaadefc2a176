"""netif: netfront's data path (io/netif.h) over its two shared rings, sans-IO.

The driver owns the grants, the event channel and xenstore; it hands `NetfrontQueues` the
mapped pages, each with the grant reference the back end knows it by: the tx and rx ring
pages, the receive buffers and the transmit pages. The queues write requests and read
responses; the driver makes every system call, notifying the back end when a method says so.

Buffers are granted once and reused (persistent grants, as Mirage's netfront does): each
receive buffer goes back on the ring, with the same id and gref, as soon as its frame is
copied out. Transmit pages are cut in half-page blocks, one per tx id, so that a frame never
crosses a page: netback disables the vif for a request with offset + size > 4096.

We negotiate neither scatter-gather nor GSO nor checksum offload, so every frame comes in one
slot, fully checksummed. Chains (more_data, extra_info) and partial checksums (csum_blank)
should then never come; they are skipped or counted rather than trusted.
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

# Slots, as io/netif.h lays them out (x86: little-endian, packed).
TX_REQUEST = struct.Struct("<IHHHH")  # gref, offset, flags, id, size
TX_RESPONSE = struct.Struct("<Hh")  # id, status; in a slot of TX_SLOT bytes
RX_REQUEST = struct.Struct("<HHI")  # id, pad, gref
RX_RESPONSE = struct.Struct("<HHHh")  # id, offset, flags, status (> 0: the frame's length)
TX_SLOT = TX_REQUEST.size  # 12
RX_SLOT = RX_REQUEST.size  # 8
TX_RING_SIZE = ring_size(TX_SLOT)  # 256
RX_RING_SIZE = ring_size(RX_SLOT)  # 256

# netif_tx_request.flags
NETTXF_CSUM_BLANK = 1
NETTXF_DATA_VALIDATED = 2
NETTXF_MORE_DATA = 4
NETTXF_EXTRA_INFO = 8
# netif_rx_response.flags
NETRXF_DATA_VALIDATED = 1
NETRXF_CSUM_BLANK = 2
NETRXF_MORE_DATA = 4
NETRXF_EXTRA_INFO = 8
# An extra_info slot: u8 type, u8 flags; this flag says another extra_info follows.
EXTRA_FLAG_MORE = 1
# Response status
NETIF_RSP_DROPPED = -2
NETIF_RSP_ERROR = -1
NETIF_RSP_OKAY = 0
NETIF_RSP_NULL = 1  # the answer to an extra_info slot

TX_BLOCK = PAGE_SIZE // 2  # one frame's transmit buffer
MIN_FRAME = 14  # an Ethernet header: netback answers shorter frames with an error
MAX_FRAME = 1514  # an Ethernet header and a 1500-byte MTU: without feature-sg the vif's limit


class NetfrontQueues:
    """One netfront queue pair: the tx ring with its blocks, the rx ring with its buffers.

    In the driver's loop, on each wakeup: `reclaim_tx()`, `receive()`, then before sleeping
    `arm_response_events()`, a barrier (the event channel's unmask write) and
    `responses_pending()`. Each method that publishes requests says whether to notify.
    """

    __slots__ = (
        "_notify_always",
        "_rx_buffers",
        "_rx_extras",
        "_rx_more",
        "_rx_posted",
        "_rx_started",
        "_tx_blocks",
        "_tx_busy",
        "_tx_free",
        "rx",
        "rx_chains_dropped",
        "rx_csum_blank",
        "rx_errors",
        "tx",
        "tx_dropped",
        "tx_errors",
    )

    def __init__(
        self,
        tx_ring: Writable,
        rx_ring: Writable,
        rx_buffers: Sequence[Page],
        tx_pages: Sequence[Page],
        *,
        start: int = 0,
        notify_always: bool = False,
    ) -> None:
        """`rx_buffers`: 1 to 256 pages, posted with ids 0, 1, ...; `tx_pages`: pages cut in
        two blocks each, one tx id a block (at most 256 ids). `start`: the rings' first index
        (tests start near 2**32). `notify_always`: say "notify" whenever requests were
        published, rather than by ring.h's rule (ring.FrontRing.push_requests): for a back
        end that does not keep req_event."""
        if not 1 <= len(rx_buffers) <= RX_RING_SIZE:
            raise ValueError(f"netfront takes 1 to {RX_RING_SIZE} receive buffers")
        if not tx_pages:
            raise ValueError("netfront needs at least one transmit page")
        for page, _ in (*rx_buffers, *tx_pages):
            if page.nbytes != PAGE_SIZE or page.readonly:
                raise ValueError(f"buffers are writable pages of {PAGE_SIZE} bytes")
        self.tx = FrontRing(tx_ring, TX_SLOT, start=start)
        self.rx = FrontRing(rx_ring, RX_SLOT, start=start)
        self._notify_always = notify_always
        self._tx_blocks = [
            (page[offset : offset + TX_BLOCK], gref, offset)
            for page, gref in tx_pages
            for offset in (0, TX_BLOCK)
        ][:TX_RING_SIZE]
        # Popped from the end: the lowest ids go first.
        self._tx_free = list(reversed(range(len(self._tx_blocks))))
        self._tx_busy = bytearray(len(self._tx_blocks))  # 1 while the back end holds the id
        self._rx_buffers = list(rx_buffers)
        self._rx_posted = [-1] * RX_RING_SIZE  # slot -> the buffer id posted there
        self._rx_started = False
        # Where a skipped chain stands: extra_info slots to come, continuation slots to come.
        self._rx_extras = False
        self._rx_more = False
        self.tx_errors = 0  # frames the back end refused (NETIF_RSP_ERROR)
        self.tx_dropped = 0  # frames it dropped (NETIF_RSP_DROPPED)
        self.rx_errors = 0  # rx responses with a non-positive status or an impossible extent
        self.rx_chains_dropped = 0  # multi-slot frames (more_data, extra_info) skipped
        self.rx_csum_blank = 0  # frames delivered with a partial checksum

    def _push(self, ring: FrontRing) -> bool:
        if not ring.unpublished():
            return False
        rule = ring.push_requests()
        return self._notify_always or rule

    def post_all_rx(self) -> bool:
        """Post every receive buffer, once, before connecting; whether to notify."""
        if self._rx_started:
            raise RuntimeError("the receive buffers are posted already")
        self._rx_started = True
        for buffer_id in range(len(self._rx_buffers)):
            self._post_rx(buffer_id)
        return self._push(self.rx)

    def _post_rx(self, buffer_id: int) -> None:
        ring = self.rx
        self._rx_posted[ring.req_prod_pvt & ring.mask] = buffer_id
        RX_REQUEST.pack_into(ring.next_request(), 0, buffer_id, 0, self._rx_buffers[buffer_id][1])

    def tx_room(self) -> int:
        """How many frames `transmit()` would take now (before reclaiming)."""
        return min(len(self._tx_free), self.tx.free_requests())

    def tx_in_flight(self) -> int:
        """Frames handed to the back end and not yet answered."""
        return len(self._tx_blocks) - len(self._tx_free)

    def transmit(self, frames: Sequence[Buffer]) -> tuple[int, bool]:
        """Copy frames, in order, into free blocks and publish them: (how many were taken,
        whether to notify). Fewer than all when blocks or slots run out: reclaim (it does so
        itself when short) and offer the rest again. Raises ValueError, taking nothing, for a
        frame shorter than 14 or longer than 1514 bytes."""
        for frame in frames:
            if not MIN_FRAME <= len(frame) <= MAX_FRAME:
                raise ValueError(
                    f"a frame of {len(frame)} bytes: netfront sends {MIN_FRAME} to "
                    f"{MAX_FRAME} bytes"
                )
        if self.tx_room() < len(frames):
            self.reclaim_tx()
        taken = min(self.tx_room(), len(frames))
        ring = self.tx
        free = self._tx_free
        for i in range(taken):
            frame = frames[i]
            size = len(frame)
            tx_id = free.pop()
            block, gref, offset = self._tx_blocks[tx_id]
            block[:size] = frame
            self._tx_busy[tx_id] = 1
            # flags 0: the frame's checksums are complete
            TX_REQUEST.pack_into(ring.next_request(), 0, gref, offset, 0, tx_id, size)
        return taken, self._push(ring)

    def reclaim_tx(self) -> int:
        """Take the back end's tx responses, freeing their blocks; how many. Raises RingError
        for a response to an id not in flight (Linux's netfront then disables the device)."""
        ring = self.tx
        busy = self._tx_busy
        reclaimed = 0
        while (slot := ring.take_response()) is not None:
            tx_id, status = TX_RESPONSE.unpack_from(slot)
            if status == NETIF_RSP_NULL:
                continue  # an extra_info slot's answer; we send none, but it carries no id
            if tx_id >= len(busy) or not busy[tx_id]:
                raise RingError(f"a tx response for id {tx_id}, which is not in flight")
            busy[tx_id] = 0
            self._tx_free.append(tx_id)
            reclaimed += 1
            if status == NETIF_RSP_DROPPED:
                self.tx_dropped += 1
            elif status != NETIF_RSP_OKAY:
                self.tx_errors += 1
        return reclaimed

    def receive(self, limit: int) -> tuple[list[bytes], int, bool]:
        """Up to `limit` received frames, each copied out of its buffer, which goes straight
        back on the ring: (frames, vouched, whether to notify). Bit i of `vouched` is set when
        the back end validated frame i's checksum (data_validated, as Netif.vouched() says).
        Raises RingError when a response's id is not the buffer posted in its slot."""
        ring = self.rx
        posted = self._rx_posted
        frames: list[bytes] = []
        vouched = 0
        while len(frames) < limit:
            index = ring.rsp_cons
            slot = ring.take_response()
            if slot is None:
                break
            buffer_id = posted[index & ring.mask]
            if self._rx_extras:
                # An extra_info slot overlays the response (no id): its buffer is the slot's.
                self._rx_extras = bool(slot[1] & EXTRA_FLAG_MORE)
            else:
                rx_id, offset, flags, status = RX_RESPONSE.unpack_from(slot)
                if rx_id != buffer_id:
                    raise RingError(f"an rx response for id {rx_id} in the slot of {buffer_id}")
                if self._rx_more:
                    self._rx_more = bool(flags & NETRXF_MORE_DATA)
                elif flags & (NETRXF_MORE_DATA | NETRXF_EXTRA_INFO):
                    self.rx_chains_dropped += 1
                    self._rx_extras = bool(flags & NETRXF_EXTRA_INFO)
                    self._rx_more = bool(flags & NETRXF_MORE_DATA)
                elif status <= 0 or offset + status > PAGE_SIZE:
                    self.rx_errors += 1
                else:
                    if flags & NETRXF_DATA_VALIDATED:
                        vouched |= 1 << len(frames)
                    if flags & NETRXF_CSUM_BLANK:
                        self.rx_csum_blank += 1
                    # A copy: the buffer is posted again below and the back end refills it.
                    frames.append(bytes(self._rx_buffers[buffer_id][0][offset : offset + status]))
            self._post_rx(buffer_id)
        return frames, vouched, self._push(ring)

    def arm_response_events(self) -> None:
        """Ask for an event at the next tx or rx response; then a barrier, then
        `responses_pending()`."""
        self.tx.arm_response_event()
        self.rx.arm_response_event()

    def close(self) -> None:
        """Release every view this object made into the caller's pages (the rings, the tx
        blocks), so that their mapping can be closed once the caller drops its own."""
        self.tx.close()
        self.rx.close()
        for block, _, _ in self._tx_blocks:
            block.release()

    def responses_pending(self) -> bool:
        """Whether tx or rx responses wait (fresh loads of both rsp_prod)."""
        return self.tx.has_responses() or self.rx.has_responses()
