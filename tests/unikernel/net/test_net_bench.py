"""Microbenchmarks of the per-packet cost: checksum, parsing, the whole receive path.

Run them with `pytest tests/unikernel/net/test_net_bench.py --benchmark-enable`; by default
(--benchmark-disable) each body runs once, as a test.
"""

from __future__ import annotations

import os
from typing import Any

from unikernel.net import arp, ethernet, ipv4, udp
from unikernel.net.ipv4 import checksum

from .wire import ip, mac, make_stack

PACKET = os.urandom(1500)
A, B = ip("10.0.0.1"), ip("10.0.0.2")


def test_checksum_of_a_1500_byte_packet(benchmark: Any) -> None:
    result = benchmark(checksum, PACKET)
    assert 0 <= result <= 0xFFFF


def test_checksum_of_a_20_byte_header(benchmark: Any) -> None:
    header = ipv4.build_header(A, B, ipv4.UDP, 1480, 1)
    assert benchmark(checksum, header) == 0


def test_ipv4_parse(benchmark: Any) -> None:
    data = memoryview(ipv4.build(A, B, ipv4.UDP, PACKET[:1480], 1))
    packet = benchmark(ipv4.parse, data)
    assert packet.source == A and len(packet.payload) == 1480


def test_ipv4_build_header(benchmark: Any) -> None:
    header = benchmark(ipv4.build_header, A, B, ipv4.TCP, 1460, 7)
    assert checksum(header) == 0


def test_udp_parse_with_checksum(benchmark: Any) -> None:
    data = memoryview(udp.build(A, B, 1000, 2000, PACKET[:1472]))
    assert len(benchmark(udp.parse, data, A, B).payload) == 1472


def test_frame_receive_path_udp_1472_bytes(benchmark: Any) -> None:
    """Ethernet, IPv4 and UDP checks, and delivery to a bound port's handler."""
    stack = make_stack(2, "10.0.0.2/24")
    delivered = []
    stack.udp_bind(2000, lambda s, sp, d, payload, at: delivered.append(len(payload)))
    datagram = udp.build(A, B, 1000, 2000, PACKET[:1472])
    frame = ethernet.build(
        stack.mac, mac(1), ethernet.IPV4, ipv4.build(A, B, ipv4.UDP, datagram, 1)
    )
    benchmark(stack.receive, frame, 0.0)
    assert delivered and delivered[-1] == 1472 and stack.drop_counts() == {}


def test_frame_receive_path_to_a_transport_hook(benchmark: Any) -> None:
    """What a TCP segment costs the stack before TCP sees it."""
    stack = make_stack(2, "10.0.0.2/24")
    seen = []
    stack.register_protocol(ipv4.TCP, lambda s, d, segment, at, vouched: seen.append(len(segment)))
    frame = ethernet.build(
        stack.mac, mac(1), ethernet.IPV4, ipv4.build(A, B, ipv4.TCP, PACKET[:1480], 1)
    )
    benchmark(stack.receive, frame, 0.0)
    assert seen and seen[-1] == 1480


def test_send_path_udp_1472_bytes(benchmark: Any) -> None:
    """A datagram to a resolved neighbour, up to the frame ready for the driver."""
    a = make_stack(1, "10.0.0.1/24")
    a.take_frames()  # its announcement
    a.arp.receive(arp.build(arp.REQUEST, mac(2), B, bytes(6), A), 0.0)  # B asks: A learns it
    a.take_frames()
    payload = PACKET[:1472]

    def send() -> list[bytes]:
        a.udp_send(1000, B, 2000, payload, 0.0)
        return a.take_frames()

    frames = benchmark(send)
    assert len(frames) == 1 and len(frames[0]) == 14 + 1500
