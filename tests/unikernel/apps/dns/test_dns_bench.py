"""Microbenchmarks of one DNS query's cost in the appliance: the authority alone, and the whole
path a query takes in the unikernel (Ethernet, IPv4 and UDP in, the answer, and out again), on
the dns suite's zone of 1,000 names with its query mix.

Run them with `pytest tests/unikernel/apps/dns/test_dns_bench.py --benchmark-enable`; by default
(--benchmark-disable) each body runs once, as a test. The dns suite measures the same path
end to end, with dnsperf.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest

from tests.unikernel.net.wire import ip, mac, make_stack
from unikernel.apps.dns import wire
from unikernel.apps.dns.authority import Authority
from unikernel.apps.dns.zone import Zone
from unikernel.apps.dns.zonefile import compile_zone
from unikernel.net import arp, ethernet, ipv4, udp
from unikernel.net.interface import Interface
from unikernel.net.sockets import UdpResponder
from workloads.dns.dns_server import query_lines, zone_text

CLIENT, SERVER = ip("10.0.0.1"), ip("10.0.0.2")
QUERIES = 500


@functools.cache
def zone() -> Zone:
    return Zone.from_compiled(compile_zone(zone_text(1000)))


@functools.cache
def queries() -> list[bytes]:
    """The suite's query mix, as dnsperf sends it (no EDNS, RD clear)."""
    built = []
    for n, line in enumerate(query_lines(1000, QUERIES)):
        name, qtype = line.split()
        question = wire.Question(wire.name_from_text(name), wire.TYPES[qtype])
        built.append(wire.Message(n, question=[question]).to_wire())
    return built


def cycle(items: list[bytes]) -> Any:
    return itertools.cycle(items).__next__


@pytest.mark.parametrize("memoise", [False, True], ids=["computed", "memoised"])
def test_the_authority_answers_one_query(benchmark: Any, memoise: bool) -> None:
    authority = Authority([zone()], memoise=memoise)
    next_query = cycle(queries())
    for query in queries():
        authority.respond(query, "udp")  # memoised: every answer is known from here on
    response = benchmark(lambda: authority.respond(next_query(), "udp"))
    assert response is not None and response[2] & 0x80  # QR


class _Link:
    """What UdpResponder needs of an interface: its stack (no driver threads here)."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack


@pytest.mark.parametrize("memoise", [False, True], ids=["computed", "memoised"])
def test_a_query_frame_in_and_its_answer_frame_out(benchmark: Any, memoise: bool) -> None:
    stack = make_stack(2, "10.0.0.2/24")
    stack.take_frames()  # its announcement
    stack.arp.receive(arp.build(arp.REQUEST, mac(1), CLIENT, bytes(6), SERVER), 0.0)
    stack.take_frames()  # the client is a known neighbour, as it is after the first query
    authority = Authority([zone()], memoise=memoise)
    link: Interface = _Link(stack)  # type: ignore[assignment]
    responder = UdpResponder(link, 53, lambda query: authority.respond(query, "udp"))
    frames = []
    for n, query in enumerate(queries()):
        datagram = udp.build(CLIENT, SERVER, 40000 + n % 100, 53, query)
        packet = ipv4.build(CLIENT, SERVER, ipv4.UDP, datagram, n)
        frames.append(ethernet.build(stack.mac, mac(1), ethernet.IPV4, packet))
    for frame in frames:
        stack.receive(frame, 0.0)
    stack.take_frames()
    next_frame = cycle(frames)

    def one() -> list[bytes]:
        stack.receive(next_frame(), 0.0)
        return stack.take_frames()

    (answer,) = benchmark(one)
    assert ethernet.parse(answer).destination == mac(1)
    assert responder.failed == 0 and responder.answered > QUERIES
