"""netfront's data path against a fake netback: slot layouts, frames in and out exactly once and
in order, ids and blocks never reused while in flight, full rings, skipped chains, lost events
and indices that wrap at 2**32."""

from __future__ import annotations

import mmap
import random
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from unikernel.drivers.xen import netif
from unikernel.drivers.xen.netif import NetfrontQueues
from unikernel.drivers.xen.ring import RingError

from .fake_backend import FakeNetback, Grants, RxItem

U32 = 2**32


def make(
    rx: int = 256,
    tx_pages: int = 128,
    *,
    start: int = 0,
    notify_always: bool = True,
    rx_offset: int = 0,
    post: bool = True,
) -> tuple[NetfrontQueues, FakeNetback, Grants]:
    grants = Grants()
    tx_ring, _ = grants.page()
    rx_ring, _ = grants.page()
    queues = NetfrontQueues(
        tx_ring,
        rx_ring,
        grants.pages_(rx),
        grants.pages_(tx_pages),
        start=start,
        notify_always=notify_always,
    )
    back = FakeNetback(tx_ring, rx_ring, grants, rx_offset=rx_offset)
    if post:
        queues.post_all_rx()
    return queues, back, grants


def frames(count: int, size: int = 60, tag: int = 0) -> list[bytes]:
    return [struct.pack("<II", tag, i) + bytes([i % 251]) * (size - 8) for i in range(count)]


def test_slot_layouts_and_ring_sizes_match_netif_h() -> None:
    assert (netif.TX_REQUEST.size, netif.TX_RESPONSE.size) == (12, 4)
    assert (netif.RX_REQUEST.size, netif.RX_RESPONSE.size) == (8, 8)
    assert (netif.TX_RING_SIZE, netif.RX_RING_SIZE) == (256, 256)
    assert netif.RX_RESPONSE.unpack(bytes.fromhex("0300 1000 0100 feff")) == (3, 16, 1, -2)


def test_post_all_rx_writes_every_buffer_then_publishes_256() -> None:
    grants = Grants()
    tx_ring, _ = grants.page()
    rx_ring, _ = grants.page()
    rx_buffers = grants.pages_(256)
    queues = NetfrontQueues(tx_ring, rx_ring, rx_buffers, grants.pages_(1))
    assert queues.post_all_rx() is True
    for i in (0, 1, 255):
        assert netif.RX_REQUEST.unpack_from(rx_ring, 64 + 8 * i) == (i, 0, rx_buffers[i][1])
    assert struct.unpack_from("<I", rx_ring, 0)[0] == 256
    with pytest.raises(RuntimeError, match="already"):
        queues.post_all_rx()


def test_transmitted_frames_reach_the_back_end_in_half_page_blocks() -> None:
    queues, back, _ = make(tx_pages=2)
    sent = [*frames(3), b"\x01" * netif.MAX_FRAME]
    taken, notify = queues.transmit(sent)
    assert (taken, notify) == (4, True)
    requests = [netif.TX_REQUEST.unpack_from(back.tx.slot(i)) for i in range(4)]
    assert [offset for _, offset, _, _, _ in requests] == [0, 2048, 0, 2048]
    assert all(offset + size <= 4096 for _, offset, _, _, size in requests)
    assert [size for *_, size in requests] == [60, 60, 60, 1514]
    assert len({(gref, offset) for gref, offset, *_ in requests}) == 4
    assert back.take_tx() == 4
    assert back.sent == sent


def test_frames_too_short_or_too_long_are_refused_and_nothing_is_sent() -> None:
    queues, back, _ = make()
    for bad in (b"\x00" * 13, b"\x00" * (netif.MAX_FRAME + 1)):
        with pytest.raises(ValueError, match="14 to 1514"):
            queues.transmit([*frames(2), bad])
    assert back.take_tx() == 0
    assert queues.tx_in_flight() == 0


def test_a_full_transmit_side_takes_fewer_and_more_after_completions() -> None:
    queues, back, _ = make(tx_pages=2)  # 4 blocks
    batch = frames(10)
    assert queues.transmit(batch) == (4, True)
    assert queues.transmit(batch[4:]) == (0, False)
    back.take_tx()
    back.answer_tx(count=2, rng=random.Random(1))
    taken, _ = queues.transmit(batch[4:])  # reclaims by itself when short
    assert taken == 2
    back.take_tx()
    assert back.sent == batch[:6]


def test_the_ring_bounds_transmission_when_ids_do_not() -> None:
    queues, back, _ = make(tx_pages=200)  # 400 blocks, but 256 ids and slots
    taken, _ = queues.transmit(frames(300))
    assert taken == 256
    back.take_tx()
    back.answer_tx()
    assert queues.transmit(frames(300, tag=1))[0] == 256


def test_reclaim_counts_errors_and_drops_and_frees_the_ids() -> None:
    queues, back, _ = make(tx_pages=2)
    queues.transmit(frames(4))
    back.take_tx()
    back.answer_tx(count=1, status=netif.NETIF_RSP_ERROR)
    back.answer_tx(count=2, status=netif.NETIF_RSP_DROPPED)
    assert queues.reclaim_tx() == 3
    assert (queues.tx_errors, queues.tx_dropped, queues.tx_in_flight()) == (1, 2, 1)


def test_a_tx_response_for_an_id_not_in_flight_breaks_the_ring() -> None:
    queues, back, _ = make(tx_pages=2)
    queues.transmit(frames(2))
    back.take_tx()
    back.unanswered[0] = (3, 0, 0, 0)  # id 3 was never sent
    back.answer_tx(count=1)
    with pytest.raises(RingError, match="id 3"):
        queues.reclaim_tx()


def test_a_second_response_for_a_completed_id_breaks_the_ring() -> None:
    queues, back, _ = make(tx_pages=2)
    queues.transmit(frames(2))
    back.take_tx()
    back.answer_tx()
    assert queues.reclaim_tx() == 2
    queues.transmit(frames(1, tag=1))
    back.take_tx()
    tx_id, status, gref, offset = back.unanswered[0]
    stale = ({0, 1} - {tx_id}).pop()  # answered already, free now
    back.unanswered[0] = (stale, status, gref, offset)
    back.answer_tx()
    with pytest.raises(RingError, match=f"id {stale}"):
        queues.reclaim_tx()


def test_received_frames_are_copied_and_their_buffers_posted_again() -> None:
    queues, back, grants = make(rx_offset=16)
    posted = [netif.RX_REQUEST.unpack_from(back.rx.slot(i)) for i in range(3)]
    wanted = frames(3, size=200)
    back.queue_frames(wanted[:1], flags=netif.NETRXF_DATA_VALIDATED)
    back.queue_frames(wanted[1:2])
    back.queue_frames(wanted[2:], flags=netif.NETRXF_DATA_VALIDATED | netif.NETRXF_CSUM_BLANK)
    assert back.deliver_rx() == 3
    got, vouched, notify = queues.receive(64)
    assert got == wanted
    assert vouched == 0b101
    assert queues.rx_csum_blank == 1
    assert notify is True
    assert back.posted_rx() == 256  # 253 left plus the 3 posted again
    for i in range(3):  # the same {id, gref}, in the slot each came from
        assert netif.RX_REQUEST.unpack_from(back.rx.slot(256 + i)) == posted[i]
    grants.pages[posted[0][2]][16:216] = b"\xee" * 200  # the back end refills the buffer
    assert got[0] == wanted[0], "a received frame must not alias its buffer"


def test_receive_returns_at_most_limit_and_the_rest_later() -> None:
    queues, back, _ = make()
    back.queue_frames(frames(10))
    back.deliver_rx()
    first, _, _ = queues.receive(4)
    rest, _, _ = queues.receive(100)
    assert (len(first), first + rest) == (4, frames(10))


def test_chains_and_failed_slots_are_skipped_and_their_buffers_kept() -> None:
    queues, back, _ = make(rx=8)
    more, extra = netif.NETRXF_MORE_DATA, netif.NETRXF_EXTRA_INFO
    back.queue_rx(
        RxItem(b"head" * 10, flags=more | extra),
        RxItem(extra=True, extra_more=True),
        RxItem(extra=True),
        RxItem(b"middle", flags=more),
        RxItem(b"tail"),
        RxItem(b"x" * 20, status=netif.NETIF_RSP_ERROR),
        RxItem(b"y" * 20, status=0),
    )
    back.queue_frames(frames(2))
    back.deliver_rx(limit=2)  # the chain arrives in two parts
    assert queues.receive(8)[0] == []
    assert back.deliver_rx() == 7
    got, _, _ = queues.receive(8)
    assert got == frames(2)
    assert (queues.rx_chains_dropped, queues.rx_errors) == (1, 2)
    assert back.posted_rx() == 8, "every buffer, chains' included, is posted again"


def test_an_rx_response_with_another_buffers_id_breaks_the_ring() -> None:
    queues, back, _ = make(rx=4)
    back.queue_frames(frames(1))
    back.deliver_rx()
    struct.pack_into("<H", back.rx.slot(0), 0, 3)  # the slot holds buffer 0
    with pytest.raises(RingError, match="id 3"):
        queues.receive(4)


def test_without_events_the_final_check_still_finds_responses() -> None:
    queues, back, _ = make(start=U32 - 3)
    back.drop = True
    queues.transmit(frames(2))
    back.take_tx()
    back.queue_frames(frames(3, tag=7))
    back.deliver_rx()
    queues.arm_response_events()
    back.answer_tx()
    assert back.events == 0
    assert queues.responses_pending()
    assert queues.reclaim_tx() == 2
    assert queues.receive(10)[0] == frames(3, tag=7)
    queues.arm_response_events()
    assert not queues.responses_pending()


def test_with_the_ring_rule_reposting_notifies_only_a_stalled_back_end() -> None:
    queues, back, _ = make(rx=4, notify_always=False)
    back.queue_frames(frames(2))
    back.deliver_rx()
    assert queues.receive(10)[2] is False  # netback is not waiting for buffers
    back.queue_frames(frames(6, tag=1))
    assert back.deliver_rx() == 4  # out of buffers: it asks for an event
    assert queues.receive(1)[2] is True
    queues.transmit(frames(1))
    assert queues.transmit(frames(1))[1] is False  # netback has not re-armed tx


def test_closing_releases_every_view_into_one_granted_mapping() -> None:
    # As the driver maps them: one gntalloc mmap, 2 rings + 4 rx + 2 tx pages.
    mapping = mmap.mmap(-1, 8 * 4096)
    whole = memoryview(mapping)
    pages = [whole[i * 4096 : (i + 1) * 4096] for i in range(8)]
    queues = NetfrontQueues(
        pages[0], pages[1], [(p, 0) for p in pages[2:6]], [(p, 0) for p in pages[6:]]
    )
    queues.post_all_rx()
    queues.transmit(frames(3))
    for view in (*pages, whole):
        view.release()
    with pytest.raises(BufferError):
        mapping.close()
    queues.close()
    mapping.close()
    assert mapping.closed


FRAME_SIZES = st.one_of(st.integers(14, 80), st.integers(1400, 1514))


@contextmanager
def one_by_one() -> Iterator[None]:
    """Make every run of slots short: receive() and reclaim_tx() read responses one by one,
    transmit() writes requests one by one (the paths the runs must agree with)."""
    saved = netif._SHORT_RX, netif._SHORT_TX
    netif._SHORT_RX = netif._SHORT_TX = 1 << 30
    try:
        yield
    finally:
        netif._SHORT_RX, netif._SHORT_TX = saved


def test_a_run_of_frames_is_taken_at_once_with_each_ones_flags() -> None:
    validated, blank = netif.NETRXF_DATA_VALIDATED, netif.NETRXF_CSUM_BLANK
    for rx, start in ((256, 0), (256, U32 - 10), (40, U32 - 10)):
        queues, back, _ = make(rx, start=start)
        sent = frames(32, size=1514, tag=rx)
        for i, frame in enumerate(sent):
            back.queue_frames([frame], flags=[0, validated, blank | validated][i % 3])
        back.deliver_rx()
        got, vouched, notify = queues.receive(64)
        assert got == sent and notify is True
        assert vouched == sum(1 << i for i in range(32) if i % 3)
        assert queues.rx_csum_blank == len(range(2, 32, 3))
        assert back.posted_rx() == rx, "every buffer posted again"


@pytest.mark.parametrize("slot", [0, 20, 31])
def test_an_rx_id_out_of_place_in_a_long_run_breaks_the_ring(slot: int) -> None:
    queues, back, _ = make()
    back.queue_frames(frames(32))
    back.deliver_rx()
    struct.pack_into("<H", back.rx.slot(slot), 0, 77)  # the slot holds buffer `slot`
    with pytest.raises(RingError, match=f"id 77 in the slot of {slot}"):
        queues.receive(64)


@pytest.mark.parametrize("status", [0, -1, 4097])
def test_an_error_in_a_long_run_is_counted_and_its_buffer_kept(status: int) -> None:
    queues, back, _ = make()
    sent = frames(20)
    back.queue_frames(sent[:10])
    back.queue_rx(RxItem(b"x" * 20, status=status))
    back.queue_frames(sent[10:])
    back.deliver_rx()
    got, vouched, _ = queues.receive(64)
    assert (got, vouched, queues.rx_errors, back.posted_rx()) == (sent, 0, 1, 256)


def test_a_chain_across_two_calls_is_skipped_whole() -> None:
    queues, back, _ = make()
    more = netif.NETRXF_MORE_DATA
    sent = frames(12)
    back.queue_frames(sent[:2])
    back.queue_rx(RxItem(b"head", flags=more), *(RxItem(b"c" * 60, flags=more) for _ in range(9)))
    back.queue_rx(RxItem(b"tail"))
    back.queue_frames(sent[2:])
    back.deliver_rx(limit=12)  # up to the tail
    assert queues.receive(64)[0] == sent[:2]
    back.deliver_rx()  # a run that starts with the chain's tail, which looks like a frame
    assert queues.receive(64)[0] == sent[2:]
    assert (queues.rx_chains_dropped, queues.rx_errors) == (1, 0)


def test_a_long_run_of_tx_responses_frees_each_id_once() -> None:
    queues, back, _ = make(tx_pages=8)
    queues.transmit(frames(10))
    back.take_tx()
    back.answer_tx(count=4, status=netif.NETIF_RSP_DROPPED)
    back.answer_tx(count=1, status=netif.NETIF_RSP_ERROR)
    back.answer_tx(rng=random.Random(3))
    assert queues.reclaim_tx() == 10
    assert (queues.tx_dropped, queues.tx_errors, queues.tx_in_flight()) == (4, 1, 0)
    queues.transmit(frames(8, tag=1))
    back.take_tx()
    tx_id = back.unanswered[0][0]
    back.unanswered[5] = (tx_id, *back.unanswered[5][1:])  # two responses for one id
    back.answer_tx()
    with pytest.raises(RingError, match=f"id {tx_id}, which is not in flight"):
        queues.reclaim_tx()


@st.composite
def rx_items(draw: Callable[..., object]) -> list[RxItem]:
    """What netback puts in some slots: a burst of frames, an error, or a chain."""
    kind = draw(st.sampled_from(["frames"] * 4 + ["error", "chain"]))
    if kind == "frames":
        length = draw(st.sampled_from([1, 3, 9, 20, 40]))
        sizes = draw(st.lists(st.sampled_from([14, 60, 1514]), min_size=length, max_size=length))
        tag = draw(st.integers(0, 255))
        flags = draw(st.sampled_from([0, 1, 3, None]))  # None: each its own
        return [
            RxItem(
                bytes([(tag + i) % 256]) * size,
                flags=draw(st.integers(0, 3)) if flags is None else flags,
            )
            for i, size in enumerate(sizes)
        ]
    if kind == "error":
        return [RxItem(b"e" * 20, status=draw(st.sampled_from([0, -1, -2, 4097, -32768])))]
    more, extra = netif.NETRXF_MORE_DATA, netif.NETRXF_EXTRA_INFO
    flags = draw(st.sampled_from([more, extra, more | extra]))
    chain = [RxItem(b"h" * 30, flags=flags)]
    if flags & extra:
        extras = draw(st.integers(1, 2))
        chain += [RxItem(extra=True, extra_more=i < extras - 1) for i in range(extras)]
    if flags & more:
        rest = draw(st.integers(1, 3))
        chain += [RxItem(b"c" * 20, flags=more if i < rest - 1 else 0) for i in range(rest)]
    return chain


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from([0, U32 - 3, U32 - 200]),
    rx=st.sampled_from([1, 40, 255, 256]),
    offset=st.sampled_from([0, 0, 16]),  # netback's is 0; else every run goes slot by slot
    items=st.lists(rx_items(), max_size=12),
    steps=st.lists(st.tuples(st.integers(0, 48), st.integers(0, 48)), min_size=1, max_size=12),
)
def test_receiving_in_runs_agrees_with_reading_slot_by_slot(
    start: int, rx: int, offset: int, items: list[list[RxItem]], steps: list[tuple[int, int]]
) -> None:
    """Two front ends, fed alike: one reads runs at once where it can, the other slot by
    slot; what they return, count and post again must be the same, across the wrap of the
    slots and of 2**32, with fewer buffers than slots, chains and errors mixed in."""
    pairs = [make(rx, 1, start=start, rx_offset=offset) for _ in range(2)]
    for _, back, _ in pairs:
        back.queue_rx(*(item for chain in items for item in chain))
    received: list[bytes] = []
    slots = sum(map(len, items))
    drain = [(1000, 1000)] * (slots // rx + 2)  # enough rounds to take every item
    for deliver, limit in [*steps, *drain]:
        results = []
        for i, (queues, back, _) in enumerate(pairs):
            back.deliver_rx(deliver)
            with one_by_one() if i else nullcontext():
                results.append(queues.receive(limit))
        assert results[0] == results[1]
        received += results[0][0]
    (runs, back, _), (each, other, _) = pairs
    assert bytes(back.rx_page) == bytes(other.rx_page)  # the same requests, in the same slots
    counts = [(q.rx_errors, q.rx_chains_dropped, q.rx_csum_blank) for q in (runs, each)]
    assert counts[0] == counts[1]
    assert not back.rx_waiting and not other.rx_waiting
    # Every frame once, in order; none of a chain, nor of an error.
    assert received == [
        item.data
        for burst in items
        if not burst[0].flags & (netif.NETRXF_MORE_DATA | netif.NETRXF_EXTRA_INFO)
        for item in burst
        if item.status is None
    ]


@settings(max_examples=100, deadline=None)
@given(
    start=st.sampled_from([0, U32 - 3, U32 - 200]),
    tx_pages=st.sampled_from([1, 3, 128]),
    steps=st.lists(
        st.tuples(
            st.lists(FRAME_SIZES, max_size=40),
            st.integers(0, 40),
            st.sampled_from([0, netif.NETIF_RSP_ERROR, netif.NETIF_RSP_DROPPED]),
            st.integers(0, 2**16),
        ),
        min_size=1,
        max_size=10,
    ),
)
def test_transmitting_in_runs_agrees_with_one_frame_at_a_time(
    start: int, tx_pages: int, steps: list[tuple[list[int], int, int, int]]
) -> None:
    """Two front ends, sent alike: one writes requests and reads responses in runs, the
    other one by one; the fake checks every request, and both must agree on all of it."""
    pairs = [make(1, tx_pages, start=start) for _ in range(2)]
    for serial, (sizes, answers, status, seed) in enumerate(steps):
        batch = [struct.pack("<HH", serial, n).ljust(n, b"\xab") for n in sizes]
        results = []
        for i, (queues, back, _) in enumerate(pairs):
            with one_by_one() if i else nullcontext():
                taken = queues.transmit(batch)
                back.take_tx()
                back.answer_tx(answers, random.Random(seed), status)
                results.append((taken, queues.reclaim_tx(), queues.tx_room()))
        assert results[0] == results[1]
    (runs, back, _), (each, other, _) = pairs
    assert back.sent == other.sent and bytes(back.tx_page) == bytes(other.tx_page)
    assert (runs.tx_errors, runs.tx_dropped) == (each.tx_errors, each.tx_dropped)


@settings(max_examples=60, stateful_step_count=40, deadline=None)
class NetfrontMachine(RuleBasedStateMachine):
    """Arbitrary interleavings of the front's and the back end's work: every frame either way
    arrives exactly once and in order, and the fake checks that no tx id or block is reused
    while in flight."""

    @initialize(
        start=st.sampled_from([0, U32 - 5, U32 - 300]),
        rx=st.sampled_from([1, 5, 256]),
        tx_pages=st.sampled_from([1, 3, 128]),
    )
    def setup(self, start: int, rx: int, tx_pages: int) -> None:
        self.queues, self.back, _ = make(rx, tx_pages, start=start)
        self.sent: list[bytes] = []  # frames transmit() took, in order
        self.queued: list[bytes] = []  # good frames given to the back end to deliver
        self.received: list[bytes] = []
        self.serial = 0

    def _frames(self, sizes: list[int]) -> list[bytes]:
        made = []
        for size in sizes:
            self.serial += 1
            made.append(struct.pack("<I", self.serial).ljust(size, bytes([self.serial % 256])))
        return made

    @rule(sizes=st.lists(FRAME_SIZES, max_size=20))
    def transmit(self, sizes: list[int]) -> None:
        batch = self._frames(sizes)
        taken, notify = self.queues.transmit(batch)
        assert notify == (taken > 0)
        assert taken == len(batch) or self.queues.tx_room() == 0
        self.sent += batch[:taken]

    @rule()
    def back_takes_tx(self) -> None:
        self.back.take_tx()

    @rule(count=st.integers(0, 30), seed=st.integers(0, 2**16))
    def back_answers_tx(self, count: int, seed: int) -> None:
        self.back.answer_tx(count, random.Random(seed))

    @rule()
    def reclaim(self) -> None:
        self.queues.reclaim_tx()

    @rule(sizes=st.lists(FRAME_SIZES, max_size=20), junk=st.booleans())
    def frames_arrive(self, sizes: list[int], junk: bool) -> None:
        batch = self._frames(sizes)
        self.back.queue_frames(batch)
        self.queued += batch
        if junk:
            self.back.queue_rx(RxItem(b"z" * 30, status=netif.NETIF_RSP_DROPPED))

    @rule(limit=st.integers(0, 30))
    def back_delivers(self, limit: int) -> None:
        self.back.deliver_rx(limit)

    @rule(limit=st.integers(0, 30))
    def receive(self, limit: int) -> None:
        got, _, _ = self.queues.receive(limit)
        assert len(got) <= limit
        self.received += got

    @rule()
    def lose_events(self) -> None:
        self.back.drop = not self.back.drop

    @precondition(lambda self: hasattr(self, "queues"))
    @rule()
    def sleep_check(self) -> None:
        self.queues.arm_response_events()
        waiting = (
            self.back.tx.rsp_prod_pvt != self.queues.tx.rsp_cons
            or self.back.rx.rsp_prod_pvt != self.queues.rx.rsp_cons
        )
        assert self.queues.responses_pending() == waiting

    @invariant()
    def in_order_so_far(self) -> None:
        if hasattr(self, "queues"):
            assert self.back.sent == self.sent[: len(self.back.sent)]
            assert self.received == self.queued[: len(self.received)]
            assert self.queues.tx_in_flight() >= len(self.back.unanswered)

    def teardown(self) -> None:
        if not hasattr(self, "queues"):
            return
        while (
            self.back.rx_waiting
            or self.queues.tx_in_flight()
            or self.back.delivered[len(self.received) :]
        ):
            self.back.take_tx()
            self.back.answer_tx()
            consumed = self.queues.rx.rsp_cons
            moved = self.queues.reclaim_tx() + self.back.deliver_rx()
            self.received += self.queues.receive(1000)[0]
            moved += self.queues.rx.rsp_cons != consumed
            assert moved, "work is left, but neither end can make progress"
        assert self.back.sent == self.sent
        assert self.received == self.queued
        assert self.queues.tx_in_flight() == 0


TestNetfrontMachine = NetfrontMachine.TestCase
