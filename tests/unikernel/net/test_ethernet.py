"""Ethernet II frames and MAC addresses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.net import ethernet
from unikernel.net.malformed import Malformed

macs = st.binary(min_size=6, max_size=6)


@given(macs, macs, st.integers(0, 0xFFFF), st.binary(max_size=1500))
def test_build_then_parse_gives_the_same_frame(
    destination: bytes, source: bytes, ethertype: int, payload: bytes
) -> None:
    frame = ethernet.parse(ethernet.build(destination, source, ethertype, payload))
    assert (frame.destination, frame.source, frame.ethertype) == (destination, source, ethertype)
    assert frame.payload == payload


def test_the_payload_is_a_view_into_the_frame_not_a_copy() -> None:
    data = bytearray(ethernet.build(ethernet.BROADCAST, bytes(6), ethernet.ARP, b"abcd"))
    frame = ethernet.parse(data)
    data[-1] = ord("z")
    assert bytes(frame.payload) == b"abcz"


@pytest.mark.parametrize("length", [0, 1, 13])
def test_frames_shorter_than_a_header_are_malformed(length: int) -> None:
    with pytest.raises(Malformed) as caught:
        ethernet.parse(bytes(length))
    assert caught.value.reason == "truncated"


def test_a_bare_header_has_an_empty_payload() -> None:
    assert len(ethernet.parse(bytes(14)).payload) == 0


def test_mac_text_round_trips() -> None:
    mac = ethernet.parse_mac("02:0a:ff:00:10:9C")
    assert mac == bytes.fromhex("020aff00109c")
    assert ethernet.format_mac(mac) == "02:0a:ff:00:10:9c"
    assert ethernet.parse_mac("02-0a-ff-00-10-9c") == mac


@pytest.mark.parametrize(
    "text",
    [
        "",
        "02:00:00:00:00",
        "02:00:00:00:00:00:00",
        "0g:00:00:00:00:00",
        "2:00:00:00:00:000",
        " 2:00:00:00:00:00",
    ],
)
def test_bad_mac_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        ethernet.parse_mac(text)


@given(st.binary(min_size=6, max_size=6))
def test_local_macs_are_locally_administered_unicast(seed: bytes) -> None:
    mac = ethernet.local_mac(seed)
    assert len(mac) == 6 and mac[0] & 0b11 == 0b10 and mac[1:] == seed[1:]
    assert not ethernet.is_group(mac)


def test_group_addresses() -> None:
    assert ethernet.is_group(ethernet.BROADCAST)
    assert ethernet.is_group(bytes.fromhex("01005e000001"))  # IPv4 multicast
    assert not ethernet.is_group(bytes.fromhex("020000000001"))
