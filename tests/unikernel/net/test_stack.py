"""The stack joining the engines, sans-IO: stacks wired together by a test hub."""

from __future__ import annotations

import pytest

from unikernel.net import arp, dhcp, ethernet, icmp, ipv4, udp
from unikernel.net.config import static
from unikernel.net.stack import Stack

from .dhcp_server import ScriptedServer
from .wire import ip, mac, make_stack, pump

Echoes = list[tuple[bytes, int, bytes]]


def echo_log(stack: Stack, ident: int) -> Echoes:
    replies: Echoes = []
    stack.bind_echo(ident, lambda source, seq, data, at: replies.append((source, seq, bytes(data))))
    return replies


def udp_log(stack: Stack, port: int) -> list[tuple[bytes, int, bytes]]:
    received: list[tuple[bytes, int, bytes]] = []

    def handler(
        source: bytes, source_port: int, destination: bytes, payload: memoryview, at: float
    ) -> None:
        received.append((source, source_port, bytes(payload)))

    stack.udp_bind(port, handler)
    return received


def test_a_configured_stack_announces_its_address() -> None:
    a = make_stack(1, "10.0.0.1/24")
    (frame,) = a.take_frames()
    eth = ethernet.parse(frame)
    assert eth.destination == ethernet.BROADCAST and eth.ethertype == ethernet.ARP
    assert a.frames_sent == 1


def test_ping_both_ways_resolving_with_arp_first() -> None:
    a, b = make_stack(1, "10.0.0.1/24"), make_stack(2, "10.0.0.2/24")
    pump([a, b], 0.0)
    at_a, at_b = echo_log(a, 7), echo_log(b, 8)
    assert a.ping(ip("10.0.0.2"), 7, 1, b"from a", 1.0)
    seen: list[bytes] = []
    pump([a, b], 1.0, seen=seen)
    kinds = [ethernet.parse(f).ethertype for f in seen]
    assert kinds == [ethernet.ARP, ethernet.ARP, ethernet.IPV4, ethernet.IPV4]
    assert at_a == [(ip("10.0.0.2"), 1, b"from a")]
    assert b.ping(ip("10.0.0.1"), 8, 2, b"from b", 2.0)
    seen.clear()
    pump([a, b], 2.0, seen=seen)
    assert len(seen) == 2  # b learnt a's MAC from a's request: no ARP this time
    assert at_b == [(ip("10.0.0.1"), 2, b"from b")]
    assert a.drop_counts() == {} and b.drop_counts() == {}


def test_udp_datagrams_larger_than_the_mtu_are_fragmented_and_reassembled() -> None:
    a, b = make_stack(1, "10.0.0.1/24"), make_stack(2, "10.0.0.2/24")
    received = udp_log(b, 5000)
    payload = bytes(range(256)) * 40
    assert a.udp_send(1234, ip("10.0.0.2"), 5000, payload, 0.0)
    seen: list[bytes] = []
    pump([a, b], 0.0, seen=seen)
    assert received == [(ip("10.0.0.1"), 1234, payload)]
    ip_frames = [f for f in seen if ethernet.parse(f).ethertype == ethernet.IPV4]
    assert len(ip_frames) == 7 and all(len(f) <= 14 + 1500 for f in ip_frames)
    assert len(b.reassembler) == 0


def test_off_link_traffic_goes_to_the_gateway_or_nowhere() -> None:
    lonely = make_stack(1, "10.0.0.1/24")
    lonely.take_frames()
    assert not lonely.udp_send(1, ip("192.0.2.1"), 2, b"x", 0.0)
    assert lonely.drop_counts() == {"ipv4.no-route": 1} and lonely.take_frames() == []
    routed = make_stack(2, "10.0.0.2/24", gateway="10.0.0.254")
    routed.take_frames()
    assert routed.udp_send(1, ip("192.0.2.1"), 2, b"x", 0.0)
    (frame,) = routed.take_frames()
    assert arp.parse(ethernet.parse(frame).payload).target_ip == ip("10.0.0.254")


def test_without_an_address_only_broadcasts_go_out() -> None:
    a = Stack(mac(1))
    assert not a.udp_send(68, ip("10.0.0.2"), 67, b"x", 0.0)
    assert a.udp_send(68, ipv4.BROADCAST, 67, b"x", 0.0)
    (frame,) = a.take_frames()
    packet = ipv4.parse(ethernet.parse(frame).payload)
    assert ethernet.parse(frame).destination == ethernet.BROADCAST
    assert packet.source == ipv4.ANY and packet.destination == ipv4.BROADCAST


def test_a_closed_port_answers_port_unreachable() -> None:
    a, b = make_stack(1, "10.0.0.1/24"), make_stack(2, "10.0.0.2/24")
    a.udp_send(1234, ip("10.0.0.2"), 9, b"anyone?", 0.0)
    seen: list[bytes] = []
    pump([a, b], 0.0, seen=seen)
    assert b.drop_counts() == {"udp.no-port": 1}
    errors = []
    for frame in seen:
        eth = ethernet.parse(frame)
        if eth.ethertype == ethernet.IPV4 and ipv4.parse(eth.payload).protocol == ipv4.ICMP:
            errors.append(icmp.parse(ipv4.parse(eth.payload).payload))
    (error,) = errors
    assert (error.type, error.code) == (icmp.DESTINATION_UNREACHABLE, icmp.PORT_UNREACHABLE)
    quoted = ipv4.parse(bytes(error.body[:20]) + bytes(8 + 7))  # the header quoted whole
    assert quoted.source == ip("10.0.0.1") and quoted.protocol == ipv4.UDP
    assert a.drop_counts() == {"icmp.type": 1}


def test_broadcast_pings_are_ignored() -> None:
    a, b = make_stack(1, "10.0.0.1/24"), make_stack(2, "10.0.0.2/24")
    pump([a, b], 0.0)
    assert a.ping(ip("10.0.0.255"), 1, 1, b"", 0.0)
    assert pump([a, b], 0.0) == 1
    assert b.drop_counts() == {"icmp.broadcast-echo": 1}


def test_our_own_address_loops_back() -> None:
    a = make_stack(1, "10.0.0.1/24")
    a.take_frames()
    replies = echo_log(a, 3)
    received = udp_log(a, 7)
    assert a.ping(ip("10.0.0.1"), 3, 9, b"me", 0.0)
    assert a.udp_send(8, ip("10.0.0.1"), 7, b"to me", 0.0)
    assert replies == [(ip("10.0.0.1"), 9, b"me")] and received == [(ip("10.0.0.1"), 8, b"to me")]
    assert a.take_frames() == []


def frame_to(stack: Stack, payload: bytes, ethertype: int = ethernet.IPV4) -> bytes:
    return ethernet.build(stack.mac, mac(9), ethertype, payload)


def test_malformed_and_stray_frames_are_dropped_and_counted() -> None:
    b = make_stack(2, "10.0.0.2/24")
    good = udp.build(ip("10.0.0.9"), ip("10.0.0.2"), 1, 2, b"x")
    bad_sum = bytearray(good)
    bad_sum[-1] ^= 1
    bad_header = bytearray(ipv4.build(ip("10.0.0.9"), ip("10.0.0.2"), ipv4.UDP, good, 1))
    bad_header[8] ^= 1
    frames = [
        b"short",
        ethernet.build(mac(3), mac(9), ethernet.IPV4, b""),  # another host's
        ethernet.build(bytes.fromhex("01005e000001"), mac(9), ethernet.IPV4, b""),  # multicast
        frame_to(b, b"", 0x86DD),  # IPv6
        frame_to(b, bytes(bad_header)),
        frame_to(b, ipv4.build(ip("10.0.0.9"), ip("10.0.0.7"), ipv4.UDP, good, 2)),
        frame_to(b, ipv4.build(ip("10.0.0.9"), ip("10.0.0.2"), ipv4.UDP, bytes(bad_sum), 3)),
        frame_to(b, ipv4.build(ip("10.0.0.9"), ip("10.0.0.2"), 99, b"?", 4)),
        frame_to(b, ipv4.build(ip("10.0.0.9"), ip("10.0.0.2"), ipv4.ICMP, b"\x08", 5)),
        frame_to(b, b"\x00" * 10, ethernet.ARP),
    ]
    for frame in frames:
        b.receive(frame, 0.0)
    assert b.drop_counts() == {
        "ethernet.truncated": 1,
        "ethernet.not-for-us": 2,
        "ethernet.ethertype": 1,
        "ipv4.checksum": 1,
        "ipv4.not-for-us": 1,
        "udp.checksum": 1,
        "ipv4.protocol": 1,
        "icmp.truncated": 1,
        "arp.truncated": 1,
    }
    assert b.frames_received == len(frames)


def test_a_batch_of_frames_is_bracketed_for_the_transports_that_ask() -> None:
    a, b = make_stack(1, "10.0.0.1/24"), make_stack(2, "10.0.0.2/24")
    calls: list[object] = []
    b.register_protocol(
        ipv4.TCP,
        lambda s, d, seg, now, vouched: calls.append((bytes(seg), vouched)),
        batch=(lambda: calls.append("begin"), lambda now: calls.append(("end", now))),
    )
    send = a.register_protocol(ipv4.TCP, lambda s, d, seg, now, vouched: None)
    assert send(ip("10.0.0.2"), b"", 1.0)
    pump([a, b], 1.0)  # ARP resolved
    calls.clear()
    assert send(ip("10.0.0.2"), b"one", 1.0) and send(ip("10.0.0.2"), b"two", 1.0)
    frames = a.take_frames()
    b.receive_batch([frames[0], b"\x00" * 5, frames[1]], 2.0, vouched=0b100)
    assert calls == ["begin", (b"one", False), (b"two", True), ("end", 2.0)]
    assert b.drop_counts() == {"ethernet.truncated": 1}


def test_a_transport_plugs_in_by_protocol_number() -> None:
    a, b = make_stack(1, "10.0.0.1/24"), make_stack(2, "10.0.0.2/24")
    heard: list[tuple[bytes, bytes, bytes, float]] = []
    ticks: list[float] = []

    def receive(
        source: bytes, destination: bytes, segment: memoryview, now: float, vouched: bool
    ) -> None:
        heard.append((source, destination, bytes(segment), now))
        send_b(source, b"echo:" + bytes(segment), now)

    send_a = a.register_protocol(
        ipv4.TCP, lambda s, d, seg, now, vouched: heard.append((s, d, bytes(seg), now))
    )
    send_b = b.register_protocol(ipv4.TCP, receive, tick=ticks.append, next_deadline=lambda: 42.0)
    assert send_a(ip("10.0.0.2"), memoryview(b"segment"), 1.0)
    pump([a, b], 1.0)
    assert heard == [
        (ip("10.0.0.1"), ip("10.0.0.2"), b"segment", 1.0),
        (ip("10.0.0.2"), ip("10.0.0.1"), b"echo:segment", 1.0),
    ]
    assert b.next_deadline() == 42.0 and a.next_deadline() is None
    b.tick(42.0)
    assert ticks == [42.0]
    with pytest.raises(ValueError):
        a.register_protocol(ipv4.UDP, receive)
    with pytest.raises(ValueError):
        a.register_protocol(ipv4.TCP, receive)


def test_packets_wait_for_arp_and_are_dropped_when_nobody_answers() -> None:
    a = make_stack(1, "10.0.0.1/24")
    a.take_frames()
    a.udp_send(1, ip("10.0.0.99"), 2, b"lost", 0.0)
    assert a.next_deadline() == 1.0
    for now in (1.0, 2.0, 3.0):
        a.tick(now)
    assert len(a.take_frames()) == 3  # the request and its two repetitions
    assert a.drop_counts() == {"arp.unresolved": 1} and a.next_deadline() is None


def test_incomplete_fragments_time_out_in_the_stack() -> None:
    b = make_stack(2, "10.0.0.2/24")
    (first, _) = ipv4.fragment(ip("10.0.0.9"), ip("10.0.0.2"), ipv4.UDP, bytes(2000), 5, 1500)
    b.receive(frame_to(b, first), 0.0)
    assert b.next_deadline() == 30.0
    b.tick(30.0)
    assert b.drop_counts() == {"ipv4.reassembly-timeout": 1}


def test_dhcp_configures_the_stack_from_a_server_on_the_link() -> None:
    client = Stack(mac(1))
    server_stack = make_stack(2, "10.0.0.1/24")
    script = ScriptedServer(address="10.0.0.1", offer="10.0.0.50")

    def serve(
        source: bytes, port: int, destination: bytes, payload: memoryview, now: float
    ) -> None:
        reply = script.answer(payload)
        if reply is not None:
            server_stack.udp_send(dhcp.SERVER_PORT, ipv4.BROADCAST, dhcp.CLIENT_PORT, reply, now)

    server_stack.udp_bind(dhcp.SERVER_PORT, serve)
    client.start_dhcp(0.0, hostname="guest")
    pump([client, server_stack], 0.0)
    assert client.config == static(
        "10.0.0.50/24", gateway="10.0.0.1", dns=("10.0.0.53", "10.0.0.54")
    )
    assert client.next_deadline() == 1800.0
    replies = echo_log(client, 1)
    client.ping(ip("10.0.0.1"), 1, 1, b"", 1.0)
    pump([client, server_stack], 1.0)
    assert replies == [(ip("10.0.0.1"), 1, b"")]
    # Renewal at T1 goes unicast from the leased address.
    client.tick(1800.0)
    pump([client, server_stack], 1800.0)
    assert script.heard[-1].ciaddr == ip("10.0.0.50") and client.dhcp is not None
    assert client.dhcp.state == dhcp.BOUND
    client.stop_dhcp(1900.0)
    pump([client, server_stack], 1900.0)
    assert script.heard[-1].type == dhcp.RELEASE and client.config is None
