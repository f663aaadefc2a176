"""Fake Xen back ends for the front ends' tests: a netback and a blkback over plain bytearrays.

`Grants` stands for the grant table: fake grefs naming 4 KiB bytearray pages that both ends
see. The fakes check what the real back ends would punish (a tx request across a page, an id
reused while in flight, two requests in flight on one page) with AssertionError, and answer as
the tests tell them: later, in any order, with errors, without notifying.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from unikernel.drivers.xen import blkif, netif
from unikernel.drivers.xen.ring import PAGE_SIZE, BackRing


class Grants:
    """Pages by grant reference, as the back end would map them."""

    def __init__(self, first: int = 8) -> None:
        self.pages: dict[int, memoryview] = {}
        self._next = first

    def page(self) -> tuple[memoryview, int]:
        view = memoryview(bytearray(PAGE_SIZE))
        gref = self._next
        self._next += 7  # not contiguous, so that no code may assume it
        self.pages[gref] = view
        return view, gref

    def add(self, view: memoryview) -> int:
        """Grant a page someone else allocated (a fake grant pool's): its gref."""
        gref = self._next
        self._next += 7
        self.pages[gref] = view
        return gref

    def pages_(self, count: int) -> list[tuple[memoryview, int]]:
        return [self.page() for _ in range(count)]

    def run(self, count: int) -> tuple[memoryview, list[int]]:
        """`count` pages side by side in one buffer, as a grant pool maps them, each granted
        on its own (grefs not contiguous either): (the buffer, each page's gref)."""
        buffer = memoryview(bytearray(count * PAGE_SIZE))
        grefs = [self.add(buffer[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]) for i in range(count)]
        return buffer, grefs


class Notifier:
    """Counts the events a back end sends the front end, unless told to lose them."""

    def __init__(self) -> None:
        self.events = 0
        self.drop = False

    def push(self, ring: BackRing) -> bool:
        notify = ring.push_responses()
        if notify and not self.drop:
            self.events += 1
        return notify


@dataclass
class RxItem:
    """What the fake netback puts in one rx slot: a frame (status None: its length), an
    error status, or an extra_info slot."""

    data: bytes = b""
    flags: int = 0
    status: int | None = None
    extra: bool = False
    extra_more: bool = False


@dataclass
class FakeNetback(Notifier):
    tx_page: memoryview
    rx_page: memoryview
    grants: Grants
    rx_offset: int = 0  # where in a buffer frames go (netback's rx-copy uses 0)
    sent: list[bytes] = field(default_factory=list)  # frames the front transmitted, in order
    # (id, status, gref, offset) of the requests taken and not answered yet
    unanswered: list[tuple[int, int, int, int]] = field(default_factory=list)
    rx_waiting: deque[RxItem] = field(default_factory=deque)
    delivered: list[bytes] = field(default_factory=list)  # frames put in rx slots, in order

    def __post_init__(self) -> None:
        Notifier.__init__(self)
        self.tx = BackRing(self.tx_page, netif.TX_SLOT)
        self.rx = BackRing(self.rx_page, netif.RX_SLOT)
        self._tx_blocks: set[tuple[int, int]] = set()  # (gref, offset) in flight

    def take_tx(self) -> int:
        """Consume every tx request, as netback's tx action: how many."""
        taken = 0
        while (slot := self.tx.take_request()) is not None:
            gref, offset, flags, tx_id, size = netif.TX_REQUEST.unpack_from(slot)
            assert offset + size <= PAGE_SIZE, "netback: a request crosses a page (fatal)"
            assert flags == 0, f"flags {flags}: the front end asked for no offload"
            assert all(i != tx_id for i, *_ in self.unanswered), f"tx id {tx_id} reused"
            assert (gref, offset) not in self._tx_blocks, "a tx block reused while in flight"
            self._tx_blocks.add((gref, offset))
            status = netif.NETIF_RSP_OKAY
            if size < netif.MIN_FRAME:
                status = netif.NETIF_RSP_ERROR
            else:
                self.sent.append(bytes(self.grants.pages[gref][offset : offset + size]))
            self.unanswered.append((tx_id, status, gref, offset))
            taken += 1
        self.tx.arm_request_event()
        return taken

    def answer_tx(
        self, count: int | None = None, rng: random.Random | None = None, status: int = 0
    ) -> int:
        """Answer `count` (all by default) of the requests taken, shuffled by `rng` (netback
        answers when dom0 frees each packet, in any order); `status` overrides OKAY."""
        if rng is not None:
            rng.shuffle(self.unanswered)
        count = len(self.unanswered) if count is None else min(count, len(self.unanswered))
        for _ in range(count):
            tx_id, own_status, gref, offset = self.unanswered.pop(0)
            self._tx_blocks.discard((gref, offset))
            slot = self.tx.next_response()
            netif.TX_RESPONSE.pack_into(slot, 0, tx_id, status or own_status)
        self.push(self.tx)
        return count

    def queue_rx(self, *items: RxItem) -> None:
        self.rx_waiting.extend(items)

    def queue_frames(self, frames: list[bytes], flags: int = 0) -> None:
        self.rx_waiting.extend(RxItem(frame, flags) for frame in frames)

    def deliver_rx(self, limit: int | None = None) -> int:
        """Fill posted rx buffers with waiting items, in order, each response in its request's
        slot: how many. When buffers run out, ask for an event (netback's rx stall wait)."""
        delivered = 0
        while self.rx_waiting and (limit is None or delivered < limit):
            index = self.rx.req_cons
            slot = self.rx.take_request()
            if slot is None:
                self.rx.arm_request_event()
                break
            rx_id, _, gref = netif.RX_REQUEST.unpack_from(slot)
            assert self.rx.rsp_prod_pvt == index, "netback answers rx slots in order"
            response = self.rx.next_response()
            item = self.rx_waiting.popleft()
            if item.extra:
                response[0] = 1  # XEN_NETIF_EXTRA_TYPE_GSO
                response[1] = netif.EXTRA_FLAG_MORE if item.extra_more else 0
            else:
                page = self.grants.pages[gref]
                at = self.rx_offset
                page[at : at + len(item.data)] = item.data
                status = len(item.data) if item.status is None else item.status
                netif.RX_RESPONSE.pack_into(response, 0, rx_id, at, item.flags, status)
                if item.status is None and not item.flags & (
                    netif.NETRXF_MORE_DATA | netif.NETRXF_EXTRA_INFO
                ):
                    self.delivered.append(item.data)
            delivered += 1
        self.push(self.rx)
        return delivered

    def posted_rx(self) -> int:
        return self.rx.unconsumed_requests()


@dataclass
class BlkRequest:
    id: int
    op: int
    sector: int
    segments: list[tuple[int, int, int]]  # (gref, first_sect, last_sect)
    indirect: int | None = None  # the gref of the page its segments came on, if indirect


@dataclass
class FakeBlkback(Notifier):
    ring_page: memoryview
    grants: Grants
    disk: bytearray
    flush_supported: bool = True
    max_indirect_segments: int = 256  # what it offers, as Linux's blkback does
    unanswered: list[BlkRequest] = field(default_factory=list)
    segments_seen: list[int] = field(default_factory=list)  # nr_segments of every request
    indirect_seen: int = 0  # indirect requests taken

    def __post_init__(self) -> None:
        Notifier.__init__(self)
        self.ring = BackRing(self.ring_page, blkif.SLOT)

    def take(self) -> int:
        """Consume every request (checking what blkback would refuse): how many."""
        taken = 0
        busy = {gref for request in self.unanswered for gref, _, _ in request.segments}
        ids = {request.id for request in self.unanswered}
        indirect_busy = {r.indirect for r in self.unanswered if r.indirect is not None}
        while (slot := self.ring.take_request()) is not None:
            indirect = None
            if slot[0] == blkif.OP_INDIRECT:
                # As blkback does at once: map the indirect page, copy its segments out.
                fields = blkif.INDIRECT.unpack_from(slot)
                _, op, count, _, request_id, sector, _, _, indirect = fields
                assert op in (blkif.OP_READ, blkif.OP_WRITE), f"indirect operation {op}"
                assert 1 <= count <= self.max_indirect_segments, f"{count} indirect segments"
                assert indirect in self.grants.pages, f"unknown indirect gref {indirect}"
                assert indirect not in indirect_busy, f"indirect page {indirect} reused"
                indirect_busy.add(indirect)
                page = self.grants.pages[indirect]
                segments = [
                    blkif.SEGMENT.unpack_from(page, j * blkif.SEGMENT.size) for j in range(count)
                ]
                self.indirect_seen += 1
            else:
                op, count, _, _, request_id, sector = blkif.REQUEST.unpack_from(slot)
                segments = [
                    blkif.SEGMENT.unpack_from(slot, blkif.REQUEST.size + j * blkif.SEGMENT.size)
                    for j in range(count)
                ]
                if op in (blkif.OP_READ, blkif.OP_WRITE):
                    assert 1 <= count <= blkif.MAX_SEGMENTS, f"{count} segments"
                else:
                    assert count == 0, f"operation {op} with {count} segments"
            assert request_id not in ids, f"request id {request_id} reused while in flight"
            for gref, first, last in segments:
                assert gref in self.grants.pages, f"unknown gref {gref}"
                assert first <= last < blkif.SECTORS_PER_PAGE, f"sectors {first}..{last}"
                assert gref not in busy, f"page {gref} in two requests in flight"
                busy.add(gref)
            ids.add(request_id)
            self.segments_seen.append(count)
            self.unanswered.append(BlkRequest(request_id, op, sector, segments, indirect))
            taken += 1
        self.ring.arm_request_event()
        return taken

    def answer(
        self, count: int | None = None, rng: random.Random | None = None, status: int | None = None
    ) -> int:
        """Do and answer `count` (all by default) of the requests taken, shuffled by `rng`;
        `status` forces a status (the I/O is then not done)."""
        if rng is not None:
            rng.shuffle(self.unanswered)
        count = len(self.unanswered) if count is None else min(count, len(self.unanswered))
        for _ in range(count):
            request = self.unanswered.pop(0)
            result = self._do(request) if status is None else status
            blkif.RESPONSE.pack_into(self.ring.next_response(), 0, request.id, request.op, result)
        self.push(self.ring)
        return count

    def _do(self, request: BlkRequest) -> int:
        if request.op == blkif.OP_FLUSH_DISKCACHE:
            return blkif.STATUS_OKAY if self.flush_supported else blkif.STATUS_EOPNOTSUPP
        if request.op not in (blkif.OP_READ, blkif.OP_WRITE):
            return blkif.STATUS_EOPNOTSUPP
        sectors = sum(last - first + 1 for _, first, last in request.segments)
        if (request.sector + sectors) * blkif.SECTOR > len(self.disk):
            return blkif.STATUS_ERROR
        at = request.sector * blkif.SECTOR
        for gref, first, last in request.segments:
            page = self.grants.pages[gref]
            start, size = first * blkif.SECTOR, (last - first + 1) * blkif.SECTOR
            if request.op == blkif.OP_READ:
                page[start : start + size] = self.disk[at : at + size]
            else:
                self.disk[at : at + size] = page[start : start + size]
            at += size
        return blkif.STATUS_OKAY
