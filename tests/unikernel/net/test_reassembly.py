"""Fragment reassembly: order, overlaps, conflicts, limits and the timeout."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.net import ipv4
from unikernel.net.ipv4 import Packet
from unikernel.net.malformed import Malformed
from unikernel.net.reassembly import Reassembler

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


def test_concurrent_datagrams_are_bounded_and_the_pending_ones_still_complete() -> None:
    reassembler = Reassembler(max_datagrams=2)
    assert reassembler.add(piece(0, b"a" * 8, more=True, ident=1), 0.0) is None
    assert reassembler.add(piece(0, b"b" * 8, more=True, ident=2), 0.0) is None
    assert reassembler.add(piece(0, b"c" * 8, more=True, ident=3), 0.0) is None
    assert reassembler.dropped == {"reassembly-full": 1} and len(reassembler) == 2
    whole = reassembler.add(piece(8, b"!", more=False, ident=2), 0.0)
    assert whole is not None and bytes(whole.payload) == b"b" * 8 + b"!"


def test_bytes_held_are_bounded() -> None:
    reassembler = Reassembler(max_bytes=4000)
    assert reassembler.add(piece(0, b"a" * 2000, more=True, ident=1), 0.0) is None
    assert reassembler.held_bytes == 2000
    assert reassembler.add(piece(2000, b"b" * 2008, more=True, ident=2), 0.0) is None
    assert reassembler.dropped == {"reassembly-memory": 1}
    assert reassembler.held_bytes == 2000 and len(reassembler) == 1


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
