"""The TCP wire format: header, options, checksum; the parser never raises."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.tcp_wire import A_IP, B_IP, Wire
from unikernel.net.tcp import ACK, FIN, PSH, SYN, build_segment, checksum, parse_segment
from unikernel.net.tcp.segment import (
    build_ts_segment,
    pseudo_sum,
    residue,
    sack_option,
    seal,
    syn_options,
    timestamp_option,
)


def reference_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    """RFC 1071 the slow way: 16-bit words, end-around carry, complement."""
    data = src + dst + bytes([0, 6]) + struct.pack("!H", len(segment)) + segment
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def with_checksum(src: bytes, dst: bytes, segment: bytes) -> bytes:
    blank = segment[:16] + b"\0\0" + segment[18:]
    return blank[:16] + struct.pack("!H", checksum(src, dst, blank)) + blank[18:]


@given(st.binary(min_size=20, max_size=1600), st.binary(min_size=4, max_size=4))
def test_checksum_matches_rfc_1071_done_the_slow_way(segment: bytes, src: bytes) -> None:
    blank = segment[:16] + b"\0\0" + segment[18:]
    assert checksum(src, B_IP, blank) == reference_checksum(src, B_IP, blank)


@given(st.binary(min_size=20, max_size=1600), st.binary(min_size=4, max_size=4))
def test_seal_writes_the_checksum_that_residue_accepts(segment: bytes, src: bytes) -> None:
    blank = bytearray(segment[:16] + b"\0\0" + segment[18:])  # odd lengths included
    seal(blank, pseudo_sum(src, B_IP))
    assert struct.unpack_from("!H", blank, 16)[0] == reference_checksum(
        src, B_IP, segment[:16] + b"\0\0" + segment[18:]
    )
    assert reference_checksum(src, B_IP, bytes(blank)) == 0
    assert residue(blank, pseudo_sum(B_IP, src)) == 0  # the pseudo-header sum goes both ways
    blank[-1] ^= 1
    assert residue(blank, pseudo_sum(src, B_IP)) != 0


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=1600),
)
def test_a_segment_with_timestamps_alone_is_built_as_build_segment_builds_it(
    port: int, seq: int, flags: int, window: int, tsval: int, tsecr: int, payload: bytes
) -> None:
    # Its checksum summed from the header's fields: the same as summed from its bytes.
    ack = ~seq & 0xFFFFFFFF
    options = timestamp_option(tsval, tsecr)
    want = build_segment(A_IP, B_IP, port, 80, seq, ack, flags, window, options, payload)
    pseudo = pseudo_sum(A_IP, B_IP)
    for data in (payload, bytearray(payload)):  # odd lengths, empty, as the sender passes them
        got = build_ts_segment(port, 80, seq, ack, flags, window, tsval, tsecr, data, pseudo)
        assert got == want


def test_a_built_segment_parses_back_to_its_fields() -> None:
    options = timestamp_option(123456, 654321) + sack_option([(1000, 2000), (3000, 4000)])
    data = build_segment(A_IP, B_IP, 4000, 80, 0xFFFFFFF0, 77, ACK | PSH, 512, options, b"hi!")
    seg = parse_segment(A_IP, B_IP, data)
    assert seg is not None
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (4000, 80, 0xFFFFFFF0, 77)
    assert seg.flags == ACK | PSH and seg.window == 512
    assert bytes(seg.payload) == b"hi!"
    assert seg.has_ts and (seg.tsval, seg.tsecr) == (123456, 654321)
    assert seg.sack == [(1000, 2000), (3000, 4000)]
    assert seg.mss == -1 and seg.wscale == -1 and not seg.sack_ok
    assert reference_checksum(A_IP, B_IP, data) == 0


def test_syn_options_parse_back() -> None:
    for ts in ((5, 0), None):
        for sack_ok in (True, False):
            options = syn_options(1460, 7, sack_ok, ts)
            assert len(options) % 4 == 0
            seg = parse_segment(A_IP, B_IP, build_segment(A_IP, B_IP, 1, 2, 3, 0, SYN, 9, options))
            assert seg is not None
            assert (seg.mss, seg.wscale, seg.sack_ok, seg.has_ts) == (1460, 7, sack_ok, bool(ts))


def test_a_window_scale_above_14_reads_as_14() -> None:
    options = bytes([3, 3, 20, 1])  # RFC 7323 2.3
    seg = parse_segment(A_IP, B_IP, build_segment(A_IP, B_IP, 1, 2, 3, 0, SYN, 9, options))
    assert seg is not None and seg.wscale == 14


def test_a_corrupted_segment_is_dropped() -> None:
    data = bytearray(build_segment(A_IP, B_IP, 4000, 80, 1, 2, ACK, 100, b"", b"payload"))
    assert parse_segment(A_IP, B_IP, bytes(data)) is not None
    assert parse_segment(A_IP, bytes([10, 0, 0, 3]), bytes(data)) is None  # pseudo-header
    data[-1] ^= 0x40
    assert parse_segment(A_IP, B_IP, bytes(data)) is None


def test_a_corrupted_segment_for_a_connection_is_dropped_before_it_counts() -> None:
    # The layer checks the checksum once it has found the connection (with its pseudo-header
    # sum): the segment must change nothing.
    wire = Wire(seed=1)
    client, server = wire.connect()
    data = bytearray(
        build_segment(
            A_IP,
            B_IP,
            client.local_port,
            80,
            (server.irs + server.rcv_nxt) & 0xFFFFFFFF,
            (server.iss + server.snd_nxt) & 0xFFFFFFFF,
            ACK | PSH,
            65535,
            b"",
            b"payload",
        )
    )
    data[-1] ^= 0x40
    dropped = wire.b.stats["dropped_malformed"]
    wire.b.input(A_IP, B_IP, bytes(data), wire.now)
    assert wire.b.stats["dropped_malformed"] == dropped + 1
    assert server.readable == 0 and wire.b.take_output() == []
    data[-1] ^= 0x40
    wire.b.input(A_IP, B_IP, bytes(data), wire.now)
    assert server.readable == len(b"payload")


def test_short_segments_and_bad_offsets_are_dropped() -> None:
    good = build_segment(A_IP, B_IP, 4000, 80, 1, 2, ACK, 100)
    assert parse_segment(A_IP, B_IP, good[:19]) is None
    for offset in (0, 4, 6, 15):  # below 5 words, or past the end of the segment
        data = good[:12] + bytes([offset << 4]) + good[13:]
        assert parse_segment(A_IP, B_IP, with_checksum(A_IP, B_IP, data)) is None


def test_malformed_options_stop_option_parsing_not_the_segment() -> None:
    for options in (
        bytes([2, 0, 0, 0]),  # length 0 would loop forever
        bytes([8, 40, 0, 0]),  # past the header's end
        bytes([1, 1, 1, 2]),  # kind without a length byte
        bytes([5, 6, 0, 0, 0, 0, 0, 0]),  # SACK that is not a multiple of 8
    ):
        data = build_segment(A_IP, B_IP, 4000, 80, 1, 2, ACK, 100, options, b"x")
        seg = parse_segment(A_IP, B_IP, data)
        assert seg is not None and bytes(seg.payload) == b"x"
        assert seg.mss == -1 and not seg.has_ts and seg.sack is None


def test_a_memoryview_parses_like_bytes() -> None:
    data = build_segment(A_IP, B_IP, 4000, 80, 1, 2, ACK | FIN, 100, b"", b"abc")
    seg = parse_segment(memoryview(A_IP), memoryview(B_IP), memoryview(b"pad" + data)[3:])
    assert seg is not None and bytes(seg.payload) == b"abc" and seg.seg_len == 4


@given(st.binary(max_size=200))
def test_the_parser_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    seg = parse_segment(A_IP, B_IP, data)
    assert seg is None or len(data) >= 20


@given(st.binary(min_size=20, max_size=120))
def test_the_parser_never_raises_on_checksummed_garbage(data: bytes) -> None:
    # With a valid checksum the parser goes on to the offset and the options.
    seg = parse_segment(A_IP, B_IP, with_checksum(A_IP, B_IP, data))
    offset = (data[12] >> 4) * 4
    assert (seg is not None) == (20 <= offset <= len(data))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 0xFF),
            st.integers(0, 0xFFFF),
            st.binary(max_size=40).map(lambda b: b + bytes(-len(b) % 4)),
            st.binary(max_size=64),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_the_layer_survives_arbitrary_valid_segments(
    segments: list[tuple[int, int, int, int, bytes, bytes, bool]],
) -> None:
    wire = Wire(seed=1)
    client, server = wire.connect()
    for seq, ack, flags, window, options, payload, near in segments:
        if near:  # close to the real numbers, where the state machine does the most
            seq = (server.irs + server.rcv_nxt + seq % 64) & 0xFFFFFFFF
            ack = (server.iss + server.snd_una + ack % 64) & 0xFFFFFFFF
        data = build_segment(
            A_IP, B_IP, client.local_port, 80, seq, ack, flags, window, options, payload
        )
        wire.b.input(A_IP, B_IP, data, wire.now)
        wire.b.tick(wire.now + 1)
    assert wire.b.memory_used >= 0
    wire.run(for_time=1000)
    assert wire.b.memory_used == sum(conn.memory for conn in wire.b.connections)
