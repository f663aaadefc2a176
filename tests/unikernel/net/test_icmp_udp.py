"""ICMP messages, UDP datagrams and the UDP port demultiplexer."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.net import icmp, udp
from unikernel.net.ipv4 import UDP, checksum, pseudo_header_sum
from unikernel.net.malformed import Malformed

from .wire import ip

A, B = ip("10.0.0.1"), ip("10.0.0.2")


def reason_of(parse: Callable[[], object]) -> str:
    with pytest.raises(Malformed) as caught:
        parse()
    return caught.value.reason


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=1400))
def test_echo_requests_round_trip_and_replies_mirror_them(
    ident: int, sequence: int, data: bytes
) -> None:
    request = icmp.parse(icmp.echo_request(ident, sequence, data))
    assert (request.type, request.code) == (icmp.ECHO_REQUEST, 0)
    assert (request.ident, request.sequence, bytes(request.body)) == (ident, sequence, data)
    reply = icmp.parse(icmp.echo_reply(request))
    assert reply.type == icmp.ECHO_REPLY and reply.rest == request.rest and reply.body == data


def test_icmp_that_does_not_sum_up_or_is_short_is_malformed() -> None:
    message = bytearray(icmp.echo_request(1, 2, b"data"))
    message[-1] ^= 0xFF
    assert reason_of(lambda: icmp.parse(message)) == "checksum"
    assert reason_of(lambda: icmp.parse(b"\x08\x00\xf7\xff\x00\x00\x00")) == "truncated"


def test_unreachable_quotes_the_offending_datagram() -> None:
    message = icmp.parse(icmp.unreachable(icmp.PORT_UNREACHABLE, b"header and 8 bytes"))
    assert (message.type, message.code, message.rest) == (icmp.DESTINATION_UNREACHABLE, 3, 0)
    assert bytes(message.body) == b"header and 8 bytes"


ports = st.integers(0, 0xFFFF)


@given(ports, ports, st.binary(max_size=2000))
def test_udp_build_then_parse_gives_the_same_datagram(
    source_port: int, destination_port: int, payload: bytes
) -> None:
    datagram = udp.parse(udp.build(A, B, source_port, destination_port, payload), A, B)
    assert (datagram.source_port, datagram.destination_port) == (source_port, destination_port)
    assert datagram.payload == payload


def test_the_udp_checksum_covers_the_addresses() -> None:
    data = udp.build(A, B, 1000, 2000, b"hello")
    assert reason_of(lambda: udp.parse(data, A, ip("10.0.0.3"))) == "checksum"


def test_a_zero_udp_checksum_means_none() -> None:
    data = bytearray(udp.build(A, B, 1000, 2000, b"hello"))
    data[6:8] = b"\0\0"
    data[-1] ^= 0xFF  # nobody can tell
    assert bytes(udp.parse(data, A, B).payload) == b"hell" + bytes((ord("o") ^ 0xFF,))


def test_a_computed_zero_checksum_is_sent_as_all_ones() -> None:
    # With these two payload bytes the sum comes to negative zero: the checksum computes as 0.
    fill = udp.build(A, B, 1000, 2000, b"\0\0")[6:8]
    data = udp.build(A, B, 1000, 2000, fill)
    assert data[6:8] == b"\xff\xff"
    assert checksum(data, pseudo_header_sum(A, B, UDP, len(data))) == 0
    assert udp.parse(data, A, B).payload == fill


def test_udp_lengths_are_checked_and_padding_cut() -> None:
    data = udp.build(A, B, 1000, 2000, b"hello")
    assert reason_of(lambda: udp.parse(data[:7], A, B)) == "truncated"
    assert reason_of(lambda: udp.parse(data[:-1], A, B)) == "length"
    too_short = bytearray(data)
    too_short[4:6] = (7).to_bytes(2, "big")
    assert reason_of(lambda: udp.parse(too_short, A, B)) == "length"
    assert bytes(udp.parse(data + b"pad", A, B).payload) == b"hello"


def test_udp_datagrams_have_a_size_limit() -> None:
    with pytest.raises(ValueError):
        udp.build(A, B, 1, 2, bytes(0xFFFF - 7))


def handler(source: bytes, port: int, destination: bytes, payload: memoryview, at: float) -> None:
    pass


def test_the_demux_binds_ports_once() -> None:
    demux = udp.Demux()
    assert demux.bind(53, handler) == 53 and demux.handler(53) is handler
    with pytest.raises(OSError) as caught:
        demux.bind(53, handler)
    assert caught.value.errno == errno.EADDRINUSE
    demux.unbind(53)
    assert demux.handler(53) is None
    for port in (-1, 0x10000):
        with pytest.raises(ValueError):
            demux.bind(port, handler)


def test_ephemeral_ports_start_at_random_and_skip_taken_ones() -> None:
    demux = udp.Demux(random_below=lambda n: n - 1)
    assert demux.bind(0, handler) == 65535
    assert demux.bind(0, handler) == udp.EPHEMERAL_FIRST  # wrapped round
    assert udp.Demux().bind(0, handler) >= udp.EPHEMERAL_FIRST


def test_running_out_of_ephemeral_ports_is_an_error() -> None:
    demux = udp.Demux()
    for port in range(udp.EPHEMERAL_FIRST, 0x10000):
        demux.bind(port, handler)
    with pytest.raises(OSError):
        demux.bind(0, handler)
