"""TCP segmentation offload: a large segment sent whole for the link to cut, or cut here."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from unikernel.drivers.offloads import (
    GSO_TCPV4,
    NEEDS_CSUM,
    NO_OFFLOAD,
    VNET_HDR,
    complete_checksum,
    header_for,
)
from unikernel.net import ethernet, ipv4
from unikernel.net.segmentation import HEADROOM, LargeSegment, SuperFrame, partial_checksum
from unikernel.net.stack import Stack
from unikernel.net.tcp.segment import (
    ACK,
    FIN,
    PSH,
    build_header,
    build_large_segment,
    build_segment,
    parse_segment,
    timestamp_option,
)

from .wire import ip, mac, make_stack, pump

Send = Callable[[bytes, bytes, float], bool]

A, B = ip("10.0.0.1"), ip("10.0.0.2")
OPTIONS = timestamp_option(1000, 2000)


def large(payload: bytes, size: int, flags: int = ACK | PSH, seq: int = 0xFFFFF000) -> LargeSegment:
    return build_large_segment(A, B, 4000, 80, seq, 77, flags, 512, OPTIONS, payload, size)


@given(
    length=st.integers(min_value=1, max_value=20_000),
    size=st.integers(min_value=500, max_value=1448),
    fin=st.booleans(),
)
def test_cut_here_the_segments_are_the_ones_tcp_would_have_built(
    length: int, size: int, fin: bool
) -> None:
    payload = os.urandom(length)
    flags = ACK | PSH | (FIN if fin else 0)
    segment = large(payload, size, flags)
    pieces = segment.segments(A, B)
    expected = []
    for start in range(0, length, size):
        last = start + size >= length
        expected.append(
            build_segment(
                A,
                B,
                4000,
                80,
                (0xFFFFF000 + start) & 0xFFFFFFFF,  # wraps past 2**32 on the way
                77,
                flags if last else ACK,
                512,
                OPTIONS,
                payload[start : start + size],
            )
        )
    assert pieces == expected
    assert all(parse_segment(A, B, piece) is not None for piece in pieces)


def test_its_partial_checksum_finished_by_the_link_is_the_whole_segments() -> None:
    payload = os.urandom(30_000)
    segment = bytearray(large(payload, 1448).segment)
    assert parse_segment(A, B, segment) is None  # only the pseudo-header is summed
    view = memoryview(segment)
    assert complete_checksum(view, 0, 16)
    whole = parse_segment(A, B, segment)
    assert whole is not None and bytes(whole.payload) == payload


def tcp_between(a: Stack, b: Stack) -> tuple[Send, list[bytes]]:
    """a's TCP send function, and the segments b's TCP hears."""
    heard: list[bytes] = []
    b.register_protocol(ipv4.TCP, lambda s, d, seg, now, vouched: heard.append(bytes(seg)))
    return a.register_protocol(ipv4.TCP, lambda s, d, seg, now, vouched: None), heard


def resolved_pair(segmentation: bool) -> tuple[Stack, Stack]:
    a, b = make_stack(1, "10.0.0.1/24"), make_stack(2, "10.0.0.2/24")
    a.segmentation = segmentation
    assert a.ping(B, 1, 1, b"arp first", 0.0)
    pump([a, b], 0.0)
    return a, b


def test_a_link_that_segments_gets_one_super_frame_with_how_to_cut_it() -> None:
    a, b = resolved_pair(segmentation=True)
    send, heard = tcp_between(a, b)
    payload = os.urandom(40_000)
    assert send(B, large(payload, 1448), 1.0)
    (frame,) = a.take_frames()
    assert type(frame) is SuperFrame and frame.segment_size == 1448
    assert frame.transport_start == ethernet.HEADER_LEN + ipv4.HEADER_LEN
    assert frame.headers_len == frame.transport_start + 20 + len(OPTIONS)
    packet = ipv4.parse(ethernet.parse(frame).payload)
    assert packet.dont_fragment and not packet.is_fragment
    assert VNET_HDR.unpack(header_for(frame)) == (
        NEEDS_CSUM,
        GSO_TCPV4,
        frame.headers_len,
        1448,
        frame.transport_start,
        16,
    )
    # A link delivering it whole (as GRO would) finishes the checksum: the peer takes it.
    finished = bytearray(frame)
    assert complete_checksum(memoryview(finished), frame.transport_start, 16)
    b.receive(finished, 1.0)
    (segment,) = heard
    parsed = parse_segment(A, B, segment)
    assert parsed is not None and bytes(parsed.payload) == payload


@given(length=st.integers(min_value=1449, max_value=65_000), fin=st.booleans())
def test_a_super_frame_has_the_bytes_its_parts_joined_would_have(length: int, fin: bool) -> None:
    """Built in place, from TCP's headroom, it is the frame the stack used to join together
    from a link header, an IPv4 header and the segment (header, then data)."""
    a, b = resolved_pair(segmentation=True)
    send, _ = tcp_between(a, b)
    payload = os.urandom(length)
    flags = ACK | PSH | (FIN if fin else 0)
    assert send(B, large(payload, 1448, flags), 1.0)
    (frame,) = a.take_frames()
    header = build_header(4000, 80, 0xFFFFF000, 77, flags, 512, OPTIONS)
    tcp_length = len(header) + length
    struct.pack_into("!H", header, 16, partial_checksum(A, B, tcp_length))
    ident = struct.unpack_from("!H", frame, ethernet.HEADER_LEN + 4)[0]
    joined = b"".join(
        (
            ethernet.header(mac(2), mac(1), ethernet.IPV4),
            ipv4.build_header(A, B, ipv4.TCP, tcp_length, ident, dont_fragment=True),
            header,
            payload,
        )
    )
    assert bytes(frame) == joined
    assert (frame.headers_len, frame.transport_start) == (len(joined) - length, HEADROOM)


def test_a_large_segment_to_ourselves_is_cut_here() -> None:
    a = make_stack(1, "10.0.0.1/24")
    a.segmentation = True
    heard: list[bytes] = []
    send = a.register_protocol(ipv4.TCP, lambda s, d, seg, now, vouched: heard.append(bytes(seg)))
    payload = os.urandom(5000)
    assert send(A, large(payload, 1448), 1.0)
    parsed = [parse_segment(A, A, segment) for segment in heard]
    assert len(parsed) == 4 and all(p is not None for p in parsed)
    assert b"".join(bytes(p.payload) for p in parsed if p is not None) == payload


def test_a_link_that_does_not_segment_gets_the_segments_cut_here() -> None:
    a, b = resolved_pair(segmentation=False)
    send, heard = tcp_between(a, b)
    payload = os.urandom(10_000)
    assert send(B, large(payload, 1448), 1.0)
    frames = a.take_frames()
    assert len(frames) == 7 and all(header_for(f) == NO_OFFLOAD for f in frames)
    assert all(len(f) <= ethernet.HEADER_LEN + a.mtu for f in frames)
    for frame in frames:
        b.receive(frame, 1.0)
    parsed = [parse_segment(A, B, segment) for segment in heard]
    assert b"".join(bytes(p.payload) for p in parsed if p is not None) == payload
    assert b.drop_counts() == {}


def test_while_arp_resolves_the_segments_wait_cut() -> None:
    a, b = make_stack(1, "10.0.0.1/24"), make_stack(2, "10.0.0.2/24")
    a.segmentation = True
    send, heard = tcp_between(a, b)
    payload = os.urandom(5000)
    assert send(B, large(payload, 1448), 1.0)
    pump([a, b], 1.0)
    parsed = [parse_segment(A, B, segment) for segment in heard]
    assert len(parsed) == 4 and all(p is not None for p in parsed)
    assert b"".join(bytes(p.payload) for p in parsed if p is not None) == payload
