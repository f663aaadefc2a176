"""netif: netfront's data path (io/netif.h) over its two shared rings, sans-IO.

The driver owns the grants, the event channel and xenstore; it hands `NetfrontQueues` the
mapped pages, each with the grant reference the back end knows it by: the tx and rx ring
pages, the receive buffers and the transmit pages. The queues write requests and read
responses; the driver makes every system call, notifying the back end when a method says so.

Buffers are granted once and reused (persistent grants, as Mirage's netfront does): each
receive buffer goes back on the ring, with the same id and gref, as soon as its frame is
copied out. Transmit pages are cut in half-page blocks, one per tx id, so that a frame never
crosses a page: netback disables the vif for a request with offset + size > 4096.

Python's cost is per bytecode, and in the guest (Xen under emulation) a bytecode costs some
hundred times what it does natively, so the data path works on runs of slots: one load of
rsp_prod, then the responses of a run read as strided views (ids, statuses, ...) turned into
lists and checked as a whole in C, and the run's requests written as one slice. With all 256
buffers posted, each goes back into the slot it came from, so reposting a run copies a slice
of an image of every slot's request. Only the copy of each frame in or out is Python work per
frame. Short runs (fewer than 8 rx slots, 4 tx frames) go one slot at a time, which costs
less there, and so does a run with anything unusual in it (an error, a chain, an id out of
place, a nonzero rx offset), through the checks of one slot at a time.

We negotiate neither scatter-gather nor GSO nor checksum offload, so every frame comes in one
slot, fully checksummed. Chains (more_data, extra_info) and partial checksums (csum_blank)
should then never come; they are skipped or counted rather than trusted.
"""

from __future__ import annotations

import struct
from array import array

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

_MASK = 0xFFFFFFFF  # ring indices are u32
# A run of rx flags, each below 4, as bytes -> one digit a frame, for int(digits, 2).
_VOUCHED = bytes(0x31 if b & NETRXF_DATA_VALIDATED else 0x30 for b in range(256))
_CSUM_BLANK = bytes(0x31 if b & NETRXF_CSUM_BLANK else 0x30 for b in range(256))
# Shorter runs are cheaper one slot at a time (instructions counted under valgrind).
_SHORT_RX = 8
_SHORT_TX = 4
_MAX_TAIL = PAGE_SIZE << 16 | 0xFFFF  # an rx response's flags | status << 16, status <= 4096


class NetfrontQueues:
    """One netfront queue pair: the tx ring with its blocks, the rx ring with its buffers.

    In the driver's loop, on each wakeup: `reclaim_tx()`, `receive()`, then before sleeping
    `arm_response_events()`, a barrier (the event channel's unmask write) and
    `responses_pending()`. Each method that publishes requests says whether to notify.
    """

    __slots__ = (
        "_notify_always",
        "_rx_extras",
        "_rx_halves",
        "_rx_image",
        "_rx_more",
        "_rx_posted",
        "_rx_requests",
        "_rx_started",
        "_rx_views",
        "_rx_words",
        "_tx_blocks",
        "_tx_busy",
        "_tx_free",
        "_tx_requests",
        "_tx_sizes",
        "_tx_views",
        "_tx_words",
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
        self._tx_views = [block for block, _, _ in self._tx_blocks]
        # Each id's request with size 0 (flags 0: the frame's checksums are complete).
        self._tx_requests = [
            TX_REQUEST.pack(gref, offset, 0, tx_id, 0)
            for tx_id, (_, gref, offset) in enumerate(self._tx_blocks)
        ]
        # Popped from the end: the lowest ids go first.
        self._tx_free = list(reversed(range(len(self._tx_blocks))))
        self._tx_busy: set[int] = set()  # the ids the back end holds
        # Views of the slots, native-endian (x86's little-endian, as the slots' layout). The tx
        # slots as u32s, three a slot: a response's first is id | status << 16.
        self._tx_words = self.tx.region.cast("I")
        # ... and as u16s, six a slot: a request's sixth is its size.
        self._tx_sizes = self.tx.region.cast("H")
        self._rx_views = [page for page, _ in rx_buffers]
        self._rx_requests = [
            RX_REQUEST.pack(buffer_id, 0, gref) for buffer_id, (_, gref) in enumerate(rx_buffers)
        ]
        self._rx_posted = [-1] * RX_RING_SIZE  # slot -> the buffer id posted there
        self._rx_image: bytes | None = None  # every slot's request, once all are posted
        # The rx slots as u32s, two a slot (a response's id | offset << 16, flags | status <<
        # 16), and as u16s, four a slot (id, offset, flags, status).
        self._rx_words = self.rx.region.cast("I")
        self._rx_halves = self.rx.region.cast("H")
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
        if not self._notify_always:
            return ring.push_requests()
        if not ring.unpublished():
            return False
        ring.push_requests()
        return True

    def post_all_rx(self) -> bool:
        """Post every receive buffer, once, before connecting; whether to notify."""
        if self._rx_started:
            raise RuntimeError("the receive buffers are posted already")
        self._rx_started = True
        for buffer_id in range(len(self._rx_requests)):
            self._post_rx(buffer_id)
        if len(self._rx_requests) == RX_RING_SIZE:
            # Every slot holds a buffer, and req_prod_pvt stays 256 ahead of rsp_cons: each
            # buffer goes back into the slot it came from, so these bytes repost any run.
            self._rx_image = self.rx.region.tobytes()
        return self._push(self.rx)

    def _post_rx(self, buffer_id: int) -> None:
        ring = self.rx
        self._rx_posted[ring.req_prod_pvt & ring.mask] = buffer_id
        ring.next_request()[:] = self._rx_requests[buffer_id]

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
        sizes = list(map(len, frames))
        count = len(sizes)
        if count and (min(sizes) < MIN_FRAME or max(sizes) > MAX_FRAME):
            size = next(n for n in sizes if not MIN_FRAME <= n <= MAX_FRAME)
            raise ValueError(
                f"a frame of {size} bytes: netfront sends {MIN_FRAME} to {MAX_FRAME} bytes"
            )
        ring = self.tx
        free = self._tx_free
        taken = count
        if count > len(free) or count > ring.free_requests():
            self.reclaim_tx()
            taken = min(len(free), ring.free_requests(), count)
        if taken >= _SHORT_TX:
            ids = free[: -taken - 1 : -1]  # popped from the end: the lowest ids first
            del free[-taken:]
            self._tx_busy.update(ids)
            self._transmit_run(ids, frames, sizes if taken == count else sizes[:taken])
        elif taken:
            self._transmit_each(frames, sizes, taken)
        return taken, self._push(ring)

    def _transmit_each(self, frames: Sequence[Buffer], sizes: list[int], taken: int) -> None:
        """Copy the first `taken` of `frames` into free blocks and write their requests, one
        by one."""
        ring = self.tx
        region = ring.region
        index = ring.req_prod_pvt
        blocks = self._tx_blocks
        free = self._tx_free
        busy = self._tx_busy
        for i in range(taken):
            tx_id = free.pop()  # from the end: the lowest ids first
            busy.add(tx_id)
            block, gref, offset = blocks[tx_id]
            size = sizes[i]
            block[:size] = frames[i]
            # flags 0: the frame's checksums are complete
            TX_REQUEST.pack_into(
                region, (index & ring.mask) * TX_SLOT, gref, offset, 0, tx_id, size
            )
            index += 1
        ring.req_prod_pvt = index & _MASK

    def _transmit_run(self, ids: list[int], frames: Sequence[Buffer], sizes: list[int]) -> None:
        """Copy `frames` into the blocks of `ids` and write their requests as one run: the
        ids' requests (made once) side by side, then the sizes over them; two pieces at the
        wrap."""
        views = self._tx_views
        # frames may be more than ids; strict= would double zip's cost
        for tx_id, frame in zip(ids, frames):  # noqa: B905
            views[tx_id][: len(frame)] = frame
        ring = self.tx
        region = ring.region
        requests = b"".join(map(self._tx_requests.__getitem__, ids))
        lengths = array("H", sizes)
        taken = len(ids)
        first = ring.req_prod_pvt & ring.mask
        end = first + taken
        if end <= ring.size:
            region[first * TX_SLOT : end * TX_SLOT] = requests
            self._tx_sizes[first * 6 + 5 : end * 6 : 6] = lengths
        else:
            head = ring.size - first
            region[first * TX_SLOT :] = requests[: head * TX_SLOT]
            region[: (taken - head) * TX_SLOT] = requests[head * TX_SLOT :]
            self._tx_sizes[first * 6 + 5 :: 6] = lengths[:head]
            self._tx_sizes[5 : (taken - head) * 6 : 6] = lengths[head:]
        ring.req_prod_pvt = (ring.req_prod_pvt + taken) & _MASK

    def reclaim_tx(self) -> int:
        """Take the back end's tx responses (one load of rsp_prod), freeing their blocks; how
        many. Raises RingError for a response to an id not in flight (Linux's netfront then
        disables the device)."""
        ring = self.tx
        waiting = ring.unconsumed_responses()
        reclaimed = 0
        while waiting:
            first = ring.rsp_cons & ring.mask
            count = ring.size - first  # (if-expressions: cheaper than min())
            count = waiting if waiting < count else count
            waiting -= count
            words = self._tx_words[first * 3 : (first + count) * 3 : 3].tolist()
            ring.rsp_cons = (ring.rsp_cons + count) & _MASK
            if count >= _SHORT_TX:
                ids = set(words)
                # Each for its own id in flight, and all OKAY: a status would put a word
                # above every id.
                if len(ids) == count and ids <= self._tx_busy:
                    self._tx_busy -= ids
                    self._tx_free += words
                    reclaimed += count
                    continue
            reclaimed += self._reclaim_each(words)
        return reclaimed

    def _reclaim_each(self, words: list[int]) -> int:
        """reclaim_tx()'s run of responses, one by one (their first words: id | status << 16)."""
        busy = self._tx_busy
        reclaimed = 0
        for word in words:
            tx_id, status = word & 0xFFFF, ((word >> 16) ^ 0x8000) - 0x8000
            if status == NETIF_RSP_NULL:
                continue  # an extra_info slot's answer; we send none, but it carries no id
            if tx_id not in busy:
                raise RingError(f"a tx response for id {tx_id}, which is not in flight")
            busy.discard(tx_id)
            self._tx_free.append(tx_id)
            reclaimed += 1
            if status == NETIF_RSP_DROPPED:
                self.tx_dropped += 1
            elif status != NETIF_RSP_OKAY:
                self.tx_errors += 1
        return reclaimed

    def receive(self, limit: int) -> tuple[list[bytes], int, bool]:
        """Up to `limit` received frames, of the responses there when it looks (one load of
        rsp_prod), each copied out of its buffer, which goes straight back on the ring:
        (frames, vouched, whether to notify). Bit i of `vouched` is set when the back end
        validated frame i's checksum (data_validated, as Netif.vouched() says). Raises
        RingError when a response's id is not the buffer posted in its slot."""
        ring = self.rx
        frames: list[bytes] = []
        vouched = 0
        waiting = ring.unconsumed_responses() if limit > 0 else 0
        while waiting and len(frames) < limit:
            # A run of slots that wraps neither where it is read nor where it is reposted.
            first = ring.rsp_cons & ring.mask
            to = ring.req_prod_pvt & ring.mask
            count = limit - len(frames)  # (if-expressions: cheaper than min() and max())
            count = waiting if waiting < count else count
            room = ring.size - (first if first > to else to)
            count = room if room < count else count
            end = first + count
            waiting -= count
            ring.rsp_cons = (ring.rsp_cons + count) & _MASK
            posted = self._rx_posted[first:end]
            bits = self._receive_run(first, end, posted, frames) if count >= _SHORT_RX else None
            if bits is None:
                bits = self._receive_each(first, posted, frames)
            vouched |= bits
            image = self._rx_image
            if image is not None:  # to == first: each buffer goes back into its own slot
                ring.region[first * RX_SLOT : end * RX_SLOT] = image[
                    first * RX_SLOT : end * RX_SLOT
                ]
            else:
                requests = b"".join(map(self._rx_requests.__getitem__, posted))
                ring.region[to * RX_SLOT : (to + count) * RX_SLOT] = requests
                self._rx_posted[to : to + count] = posted
            ring.req_prod_pvt = (ring.req_prod_pvt + count) & _MASK
        return frames, vouched, self._push(ring)

    def _receive_run(
        self, first: int, end: int, posted: list[int], frames: list[bytes]
    ) -> int | None:
        """Take the frames of slots `first` to `end`, checking the run as a whole, in C: the
        vouched bits, shifted to the frames' places, or None when anything in the run is
        unusual (then nothing is taken: go slot by slot)."""
        if self._rx_extras or self._rx_more:
            return None
        words = self._rx_words
        heads = words[first * 2 : end * 2 : 2].tolist()  # id | offset << 16
        tails = words[first * 2 + 1 : end * 2 : 2].tolist()  # flags | status << 16
        flags = self._rx_halves[first * 4 + 2 : end * 4 : 4]
        top = max(flags)
        if not (
            heads == posted  # each the buffer posted in its slot, at offset 0 (netback's)
            and min(tails) > 0xFFFF  # status > 0 (a negative one is above 0x7FFF)
            and max(tails) <= _MAX_TAIL  # status <= 4096
            and top < NETRXF_MORE_DATA  # data_validated and csum_blank at most
        ):
            return None
        vouched = 0
        if top:
            marks = flags.tobytes()[::2]  # each one's low byte; the high ones are 0
            vouched = int(marks.translate(_VOUCHED)[::-1], 2) << len(frames)
            self.rx_csum_blank += marks.translate(_CSUM_BLANK).count(b"1")
        views = self._rx_views
        # Copies: the buffers are posted again and the back end refills them. (heads and
        # tails are as long; strict= would double zip's cost.)
        frames += [views[i][: t >> 16].tobytes() for i, t in zip(heads, tails)]  # noqa: B905
        return vouched

    def _receive_each(self, first: int, posted: list[int], frames: list[bytes]) -> int:
        """Take the frames of the run of slots from `first` (with buffers `posted`) one by one
        (a short run, or one with anything unusual in it: a chain, an error, an id out of
        place, an offset): the vouched bits, shifted to the frames' places."""
        region = self.rx.region
        unpack = RX_RESPONSE.unpack_from
        at = first * RX_SLOT
        vouched = 0
        for buffer_id in posted:
            rx_id, offset, flags, status = unpack(region, at)
            at += RX_SLOT
            if self._rx_extras:
                # An extra_info slot overlays the response (u8 type, u8 flags: the id's high
                # byte) and has no id: its buffer is the slot's.
                self._rx_extras = bool(rx_id >> 8 & EXTRA_FLAG_MORE)
                continue
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
                frames.append(self._rx_views[buffer_id][offset : offset + status].tobytes())
        return vouched

    def arm_response_events(self) -> None:
        """Ask for an event at the next tx or rx response; then a barrier, then
        `responses_pending()`."""
        self.tx.arm_response_event()
        self.rx.arm_response_event()

    def close(self) -> None:
        """Release every view this object made into the caller's pages (the rings, the tx
        blocks), so that their mapping can be closed once the caller drops its own."""
        for view in (self._tx_words, self._tx_sizes, self._rx_words, self._rx_halves):
            view.release()
        self.tx.close()
        self.rx.close()
        for block in self._tx_views:
            block.release()

    def responses_pending(self) -> bool:
        """Whether tx or rx responses wait (fresh loads of both rsp_prod)."""
        return self.tx.has_responses() or self.rx.has_responses()
