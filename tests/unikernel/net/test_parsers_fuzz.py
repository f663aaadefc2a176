"""Arbitrary bytes never make a parser, or the stack, raise anything but the drop outcome."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from unikernel.net import arp, dhcp, ethernet, icmp, ipv4, udp
from unikernel.net.malformed import Malformed
from unikernel.net.stack import Stack

from .wire import ip, mac, make_stack

ME = ip("10.0.0.2")


def parses_or_refuses(parse: Callable[[bytes], object], data: bytes) -> None:
    try:
        parse(data)
    except Malformed as error:
        assert error.reason and isinstance(error.reason, str)


@given(st.binary(max_size=1600))
def test_every_parser_takes_arbitrary_bytes(data: bytes) -> None:
    parses_or_refuses(ethernet.parse, data)
    parses_or_refuses(ipv4.parse, data)
    parses_or_refuses(arp.parse, data)
    parses_or_refuses(icmp.parse, data)
    parses_or_refuses(lambda d: udp.parse(d, ip("10.0.0.1"), ME), data)
    parses_or_refuses(dhcp.parse, data)


@given(st.binary(max_size=400))
def test_dhcp_options_take_arbitrary_bytes(options: bytes) -> None:
    fixed = dhcp.build(dhcp.BOOTREPLY, 1, mac(1), [])[:240]
    parses_or_refuses(dhcp.parse, fixed + options)


def fresh_stack() -> Stack:
    stack = make_stack(2, "10.0.0.2/24")
    stack.take_frames()
    return stack


def survives(stack: Stack, frame: bytes, now: float = 0.0) -> None:
    stack.receive(frame, now)
    stack.tick(now + 100.0)
    stack.take_frames()


@given(st.binary(max_size=1600))
def test_the_stack_takes_arbitrary_frames(frame: bytes) -> None:
    survives(fresh_stack(), frame)


@given(st.binary(max_size=1600))
def test_the_stack_takes_arbitrary_frames_addressed_to_it(body: bytes) -> None:
    stack = fresh_stack()
    for ethertype in (ethernet.IPV4, ethernet.ARP):
        survives(stack, ethernet.build(stack.mac, mac(1), ethertype, body))


@settings(max_examples=300)
@given(
    st.sampled_from([ipv4.ICMP, ipv4.TCP, ipv4.UDP, 99]),
    st.sampled_from([ME, ipv4.BROADCAST, ip("10.0.0.255"), ip("10.0.0.3")]),
    st.integers(0, 0x1FFF),
    st.booleans(),
    st.binary(max_size=1480),
)
def test_the_stack_takes_well_formed_datagrams_with_arbitrary_contents(
    protocol: int, destination: bytes, offset: int, more: bool, payload: bytes
) -> None:
    stack = fresh_stack()
    header = ipv4.build_header(
        ip("10.0.0.1"),
        destination,
        protocol,
        len(payload),
        7,
        more_fragments=more,
        offset=min(offset * 8, 65528),
    )
    survives(stack, ethernet.build(stack.mac, mac(1), ethernet.IPV4, header + payload))


@given(st.binary(max_size=600), st.sampled_from([dhcp.CLIENT_PORT, 5000]))
def test_the_dhcp_client_in_the_stack_takes_arbitrary_replies(message: bytes, port: int) -> None:
    stack = Stack(mac(2))
    stack.start_dhcp(0.0)
    stack.take_frames()
    datagram = udp.build(ip("10.0.0.1"), ipv4.BROADCAST, dhcp.SERVER_PORT, port, message)
    packet = ipv4.build(ip("10.0.0.1"), ipv4.BROADCAST, ipv4.UDP, datagram, 1)
    survives(stack, ethernet.build(ethernet.BROADCAST, mac(1), ethernet.IPV4, packet))


@given(
    st.sampled_from([arp.REQUEST, arp.REPLY, 3]),
    st.binary(min_size=6, max_size=6),
    st.sampled_from([ip("10.0.0.1"), ME, bytes(4)]),
    st.sampled_from([ME, ip("10.0.0.9")]),
)
def test_the_stack_takes_arbitrary_arp(
    operation: int, sender_mac: bytes, sender: bytes, target: bytes
) -> None:
    stack = fresh_stack()
    packet = arp.build(operation, sender_mac, sender, bytes(6), target)
    survives(stack, ethernet.build(ethernet.BROADCAST, mac(1), ethernet.ARP, packet))
