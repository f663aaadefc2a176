"""IPv4 addresses, header parsing and building, fragmenting on output."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.net import ipv4
from unikernel.net.ipv4 import checksum, format_address, parse_address
from unikernel.net.malformed import Malformed

from .wire import ip

unicast = st.binary(min_size=4, max_size=4).filter(lambda a: a[0] < 224)
addresses = st.binary(min_size=4, max_size=4)


def reason(data: bytes) -> str:
    with pytest.raises(Malformed) as caught:
        ipv4.parse(data)
    return caught.value.reason


def reseal(datagram: bytearray, header_len: int = 20) -> bytes:
    """The datagram with its header checksum recomputed."""
    datagram[10:12] = b"\0\0"
    datagram[10:12] = checksum(datagram[:header_len]).to_bytes(2, "big")
    return bytes(datagram)


@given(
    unicast,
    addresses,
    st.integers(0, 255),
    st.binary(max_size=1480),
    st.integers(0, 0xFFFF),
    st.integers(1, 255),
    st.booleans(),
)
def test_build_then_parse_gives_the_same_datagram(
    source: bytes,
    destination: bytes,
    protocol: int,
    payload: bytes,
    ident: int,
    ttl: int,
    dont_fragment: bool,
) -> None:
    data = ipv4.build(
        source, destination, protocol, payload, ident, ttl=ttl, dont_fragment=dont_fragment
    )
    packet = ipv4.parse(data)
    assert (packet.source, packet.destination, packet.protocol) == (source, destination, protocol)
    assert (packet.ident, packet.ttl, packet.dont_fragment) == (ident, ttl, dont_fragment)
    assert packet.payload == payload and not packet.is_fragment
    assert checksum(packet.header) == 0


def test_padding_after_the_datagram_is_cut() -> None:
    data = ipv4.build(ip("10.0.0.1"), ip("10.0.0.2"), ipv4.UDP, b"abc", 1) + bytes(23)
    assert bytes(ipv4.parse(data).payload) == b"abc"


def test_options_are_skipped() -> None:
    header = bytearray(ipv4.build_header(ip("10.0.0.1"), ip("10.0.0.2"), ipv4.UDP, 7, 1))
    header[0] = 0x46  # one word of options
    header[2:4] = (20 + 4 + 3).to_bytes(2, "big")
    data = reseal(header + b"\x01\x01\x01\x00", 24) + b"xyz"
    packet = ipv4.parse(data)
    assert bytes(packet.payload) == b"xyz" and len(packet.header) == 24


def good() -> bytearray:
    return bytearray(ipv4.build(ip("10.0.0.1"), ip("10.0.0.2"), ipv4.UDP, b"payload", 9))


def test_malformed_datagrams_say_why() -> None:
    assert reason(bytes(good()[:19])) == "truncated"
    wrong_version = good()
    wrong_version[0] = 0x65
    assert reason(reseal(wrong_version)) == "version"
    short_header = good()
    short_header[0] = 0x44
    assert reason(reseal(short_header)) == "header-length"
    short_total = good()
    short_total[2:4] = (19).to_bytes(2, "big")
    assert reason(reseal(short_total)) == "total-length"
    long_total = good()
    long_total[2:4] = (100).to_bytes(2, "big")
    assert reason(reseal(long_total)) == "truncated"
    corrupt = good()
    corrupt[8] ^= 1  # the TTL
    assert reason(bytes(corrupt)) == "checksum"
    multicast_source = good()
    multicast_source[12] = 224
    assert reason(reseal(multicast_source)) == "source"


def test_fragment_flags_and_offset_are_read() -> None:
    header = ipv4.build_header(
        ip("10.0.0.1"), ip("10.0.0.2"), ipv4.UDP, 8, 5, more_fragments=True, offset=1480
    )
    packet = ipv4.parse(header + bytes(8))
    assert packet.more_fragments and packet.offset == 1480 and packet.is_fragment


@given(st.binary(max_size=9000), st.integers(68, 1500))
def test_fragments_fit_the_mtu_and_carry_the_whole_payload(payload: bytes, mtu: int) -> None:
    packets = ipv4.fragment(ip("10.0.0.1"), ip("10.0.0.2"), ipv4.UDP, payload, 77, mtu)
    parsed = [ipv4.parse(p) for p in packets]
    assert all(len(p) <= mtu for p in packets)
    assert all(p.offset % 8 == 0 and p.ident == 77 for p in parsed)
    assert [p.more_fragments for p in parsed] == [True] * (len(parsed) - 1) + [False]
    assert b"".join(bytes(p.payload) for p in parsed) == payload
    assert [p.offset for p in parsed] == sorted(p.offset for p in parsed)


def test_a_payload_that_fits_is_one_unfragmented_packet() -> None:
    (packet,) = ipv4.fragment(ip("10.0.0.1"), ip("10.0.0.2"), ipv4.UDP, bytes(1480), 1, 1500)
    assert not ipv4.parse(packet).is_fragment


def test_impossible_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        ipv4.fragment(ip("10.0.0.1"), ip("10.0.0.2"), ipv4.UDP, b"x", 1, 27)
    with pytest.raises(ValueError):
        ipv4.build(ip("10.0.0.1"), ip("10.0.0.2"), ipv4.UDP, bytes(65516), 1)
    with pytest.raises(ValueError):
        ipv4.build_header(ip("10.0.0.1"), ip("10.0.0.2"), ipv4.UDP, 8, 1, offset=12)


@given(st.binary(min_size=4, max_size=4))
def test_address_text_round_trips(address: bytes) -> None:
    assert parse_address(format_address(address)) == address


@pytest.mark.parametrize(
    "text",
    ["", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1.2.3.-4", "1.2.3.4 ", "\u0661.2.3.4"],
)
def test_bad_address_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_netmasks_and_networks() -> None:
    assert ipv4.netmask(24) == ip("255.255.255.0")
    assert ipv4.netmask(0) == ip("0.0.0.0") and ipv4.netmask(32) == ip("255.255.255.255")
    assert ipv4.same_network(ip("10.1.2.3"), ip("10.1.2.200"), 24)
    assert not ipv4.same_network(ip("10.1.2.3"), ip("10.1.3.3"), 24)
    assert ipv4.same_network(ip("10.1.2.3"), ip("192.168.0.1"), 0)
    with pytest.raises(ValueError):
        ipv4.netmask(33)
