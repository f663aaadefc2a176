"""Fragment reassembly: order, overlaps, conflicts, limits and the timeout."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.net import ipv4
from unikernel.net.ipv4 import Packet
from unikernel.net.malformed import Malformed
from unikernel.net.reassembly import DATAGRAM_OVERHEAD, Reassembler

from .wire import ip

SOURCE, DESTINATION = ip("10.0.0.1"), ip("10.0.0.2")


def fragments(payload: bytes, mtu: int = 100, ident: int = 1) -> list[Packet]:
    packets = ipv4.fragment(SOURCE, DESTINATION, ipv4.UDP, payload, ident, mtu)
    return [ipv4.parse(p) for p in packets]


def piece(offset: int, data: bytes, more: bool, ident: int = 1, ttl: int = 64) -> Packet:
    header = ipv4.build_header(
        SOURCE, DESTINATION, ipv4.UDP, len(data), ident, ttl=ttl, more_fragments=more, offset=offset
    )
    return ipv4.parse(header + data)


def test_in_order_fragments_give_the_datagram_at_the_last() -> None:
    reassembler = Reassembler()
    payload = bytes(range(256)) * 2
    parts = fragments(payload)
    assert len(parts) == 7
    for part in parts[:-1]:
        assert reassembler.add(part, 0.0) is None
    whole = reassembler.add(parts[-1], 0.0)
    assert whole is not None and bytes(whole.payload) == payload
    assert (whole.source, whole.destination, whole.protocol) == (SOURCE, DESTINATION, ipv4.UDP)
    assert not whole.is_fragment
    assert len(reassembler) == 0 and reassembler.held_bytes == 0


@given(st.binary(min_size=49, max_size=3000), st.randoms(use_true_random=False), st.integers(0, 5))
def test_any_order_with_duplicates_gives_the_datagram(
    payload: bytes, random: Random, duplicates: int
) -> None:
    reassembler = Reassembler()
    parts = fragments(payload, mtu=68)  # at least two
    parts += [random.choice(parts) for _ in range(duplicates)]
    random.shuffle(parts)
    offsets_seen: set[int] = set()
    for part in parts:
        offsets_seen.add(part.offset)
        whole = reassembler.add(part, 0.0)
        if whole is not None:
            assert bytes(whole.payload) == payload
            break
    assert whole is not None and len(offsets_seen) == len(fragments(payload, mtu=68))
    # Duplicates arriving later start over, and time out unless they make a whole again.
    reassembler.expire(1000.0)
    assert len(reassembler) == 0 and reassembler.held_bytes == 0


def test_overlapping_fragments_keep_the_bytes_that_came_first() -> None:
    reassembler = Reassembler()
    assert reassembler.add(piece(8, b"B" * 16, more=False), 0.0) is None
    whole = reassembler.add(piece(0, b"A" * 16, more=True), 0.0)
    assert whole is not None and bytes(whole.payload) == b"A" * 8 + b"B" * 16


def test_a_fragment_inside_what_is_there_changes_nothing() -> None:
    reassembler = Reassembler()
    assert reassembler.add(piece(0, b"A" * 32, more=True), 0.0) is None
    assert reassembler.add(piece(8, b"X" * 8, more=True), 0.0) is None
    whole = reassembler.add(piece(32, b"end", more=False), 0.0)
    assert whole is not None and bytes(whole.payload) == b"A" * 32 + b"end"


def test_the_header_comes_from_the_first_fragment_even_when_its_buffer_is_reused() -> None:
    reassembler = Reassembler()
    buffer = bytearray(
        ipv4.build_header(SOURCE, DESTINATION, ipv4.UDP, 8, 3, ttl=9, more_fragments=True)
        + b"first..."
    )
    assert reassembler.add(ipv4.parse(buffer), 0.0) is None
    buffer[:] = bytes(len(buffer))  # the driver reads the next frame into the same buffer
    whole = reassembler.add(piece(8, b"second", more=False, ident=3, ttl=200), 0.0)
    assert whole is not None and bytes(whole.payload) == b"first...second"
    assert whole.ttl == 9 and whole.ident == 3 and ipv4.checksum(whole.header) == 0


@pytest.mark.parametrize(
    "second",
    [
        piece(16, b"x" * 8, more=False),  # another end
        piece(16, b"x" * 16, more=True),  # data past the end
    ],
)
def test_contradictions_drop_the_datagram(second: Packet) -> None:
    reassembler = Reassembler()
    assert reassembler.add(piece(8, b"b" * 12, more=False), 0.0) is None  # ends at 20
    assert reassembler.add(second, 0.0) is None
    assert reassembler.dropped == {"fragment-conflict": 1}
    assert len(reassembler) == 0 and reassembler.held_bytes == 0


def test_a_last_fragment_before_data_already_received_is_a_contradiction() -> None:
    reassembler = Reassembler()
    assert reassembler.add(piece(16, b"x" * 8, more=True), 0.0) is None
    assert reassembler.add(piece(0, b"y" * 8, more=False), 0.0) is None
    assert reassembler.dropped == {"fragment-conflict": 1}


def test_fragments_no_datagram_could_hold_are_malformed() -> None:
    reassembler = Reassembler()
    with pytest.raises(Malformed) as caught:
        reassembler.add(piece(65528, b"x" * 8, more=False), 0.0)
    assert caught.value.reason == "fragment-overflow"
    for bad in (piece(0, b"x" * 7, more=True), piece(8, b"", more=True)):
        with pytest.raises(Malformed) as caught:
            reassembler.add(bad, 0.0)
        assert caught.value.reason == "fragment-length"
    assert len(reassembler) == 0


def test_a_new_datagram_evicts_the_oldest_when_the_pending_ones_are_at_the_bound() -> None:
    reassembler = Reassembler(max_datagrams=2)
    assert reassembler.add(piece(0, b"a" * 8, more=True, ident=1), 0.0) is None
    assert reassembler.add(piece(0, b"b" * 8, more=True, ident=2), 1.0) is None
    assert reassembler.add(piece(0, b"c" * 8, more=True, ident=3), 2.0) is None
    assert reassembler.dropped == {"reassembly-evicted": 1} and len(reassembler) == 2
    assert reassembler.next_deadline() == 31.0  # datagram 1's went with it
    for ident, data in ((2, b"b"), (3, b"c")):  # the new one was taken, the younger one kept
        whole = reassembler.add(piece(8, b"!", more=False, ident=ident), 3.0)
        assert whole is not None and bytes(whole.payload) == data * 8 + b"!"
    # The rest of datagram 1 starts over, and cannot complete without its start.
    assert reassembler.add(piece(8, b"!", more=False, ident=1), 3.0) is None
    assert len(reassembler) == 1 and reassembler.dropped == {"reassembly-evicted": 1}


def test_memory_is_charged_by_the_bytes_held_not_by_the_highest_offset() -> None:
    reassembler = Reassembler()  # 1 MiB, 64 datagrams
    # Tiny fragments near 64 KiB: charged 8 bytes each, so all 64 fit.
    for ident in range(64):
        assert reassembler.add(piece(65496, b"x" * 8, more=True, ident=ident), 0.0) is None
    assert reassembler.held_bytes == 64 * (DATAGRAM_OVERHEAD + 8) and not reassembler.dropped
    assert len(reassembler) == 64


def test_overlapping_bytes_are_charged_once() -> None:
    reassembler = Reassembler()
    assert reassembler.add(piece(0, b"a" * 800, more=True), 0.0) is None
    assert reassembler.add(piece(400, b"b" * 800, more=True), 0.0) is None  # 400 new
    assert reassembler.add(piece(0, b"c" * 1200, more=True), 0.0) is None  # a duplicate
    assert reassembler.held_bytes == DATAGRAM_OVERHEAD + 1200
    whole = reassembler.add(piece(1200, b"end", more=False), 0.0)
    assert whole is not None and bytes(whole.payload) == b"a" * 800 + b"b" * 400 + b"end"
    assert reassembler.held_bytes == 0


def test_bytes_held_are_bounded_by_evicting_the_oldest_datagrams() -> None:
    budget = 2 * (DATAGRAM_OVERHEAD + 2000)
    reassembler = Reassembler(max_bytes=budget)
    assert reassembler.add(piece(0, b"a" * 2000, more=True, ident=1), 0.0) is None
    assert reassembler.add(piece(0, b"b" * 2000, more=True, ident=2), 0.0) is None
    assert reassembler.held_bytes == budget and not reassembler.dropped
    assert reassembler.add(piece(0, b"c" * 8, more=True, ident=3), 0.0) is None
    assert reassembler.dropped == {"reassembly-memory": 1} and len(reassembler) == 2
    assert reassembler.held_bytes == 2 * DATAGRAM_OVERHEAD + 2008 <= budget
    # A datagram growing past the budget pushes the others out, never itself...
    assert reassembler.add(piece(8, b"c" * 3000, more=True, ident=3), 0.0) is None
    assert reassembler.dropped == {"reassembly-memory": 2} and len(reassembler) == 1
    # ...unless it cannot fit even alone.
    assert reassembler.add(piece(3008, b"c" * 2104, more=True, ident=3), 0.0) is None
    assert reassembler.dropped == {"reassembly-memory": 3} and len(reassembler) == 0
    assert reassembler.held_bytes == 0


def test_a_datagram_completes_amid_a_flood_of_fragment_trains_that_never_do() -> None:
    reassembler = Reassembler()
    payload = bytes(range(256)) * 12  # 3072 bytes: three fragments at an MTU of 1500
    real = fragments(payload, mtu=1500, ident=9999)
    assert len(real) == 3
    flood = 0
    whole = None
    for part in real:
        # Its fragments come with fewer new datagrams between its first and last than
        # max_datagrams: it is never the oldest when one is evicted.
        for _ in range(30):
            flood += 1
            head = piece(0, b"f" * 1480, more=True, ident=flood)  # a train that never ends
            assert reassembler.add(head, 0.0) is None
            assert reassembler.held_bytes <= reassembler.max_bytes
        whole = reassembler.add(part, 0.0)
    assert whole is not None and bytes(whole.payload) == payload
    assert reassembler.dropped.get("reassembly-evicted", 0) > 0
    assert len(reassembler) <= reassembler.max_datagrams


def test_fragments_per_datagram_are_bounded() -> None:
    reassembler = Reassembler(max_fragments=3)
    for _ in range(3):
        assert reassembler.add(piece(0, b"a" * 8, more=True), 0.0) is None
    assert reassembler.add(piece(8, b"end", more=False), 0.0) is None
    assert reassembler.dropped == {"too-many-fragments": 1} and len(reassembler) == 0


def test_incomplete_datagrams_time_out() -> None:
    reassembler = Reassembler(timeout=30.0)
    assert reassembler.next_deadline() is None
    reassembler.add(piece(0, b"a" * 8, more=True, ident=1), 10.0)
    reassembler.add(piece(0, b"b" * 8, more=True, ident=2), 20.0)
    assert reassembler.next_deadline() == 40.0
    assert reassembler.expire(39.9) == 0
    assert reassembler.expire(40.0) == 1 and reassembler.next_deadline() == 50.0
    # The rest of datagram 1 now starts a new one, which cannot complete without its start.
    assert reassembler.add(piece(8, b"end", more=False, ident=1), 41.0) is None
    assert reassembler.expire(100.0) == 2
    assert reassembler.dropped == {"reassembly-timeout": 3} and reassembler.held_bytes == 0
