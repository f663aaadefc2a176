"""The ARP engine: resolution with retries, the pending queue, the cache and its expiry."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.net import arp, ethernet
from unikernel.net.arp import ArpEngine
from unikernel.net.malformed import Malformed

from .wire import ip, mac

ME, PEER, OTHER = ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")


def engine(**options: Any) -> ArpEngine:
    return ArpEngine(mac(1), ME, **options)


def arp_of(frame: bytes) -> tuple[ethernet.Frame, arp.ArpPacket]:
    parsed = ethernet.parse(frame)
    assert parsed.ethertype == ethernet.ARP and parsed.source == mac(1)
    return parsed, arp.parse(parsed.payload)


def reply_from_peer(to: bytes = ME) -> bytes:
    return arp.build(arp.REPLY, mac(2), PEER, mac(1), to)


def request(sender_mac: bytes, sender: bytes, target: bytes) -> bytes:
    return arp.build(arp.REQUEST, sender_mac, sender, bytes(6), target)


def test_a_packet_for_an_unknown_address_waits_for_the_reply() -> None:
    a = engine()
    assert a.lookup(PEER, 0.0) is None
    (frame,) = a.queue(PEER, b"packet 1", 0.0)
    eth, question = arp_of(frame)
    assert eth.destination == ethernet.BROADCAST and question.operation == arp.REQUEST
    assert (question.sender_mac, question.sender_ip, question.target_ip) == (mac(1), ME, PEER)
    assert a.queue(PEER, b"packet 2", 0.1) == []  # one request out is enough
    released = a.receive(reply_from_peer(), 0.2)
    assert [ethernet.parse(f).payload.tobytes() for f in released] == [b"packet 1", b"packet 2"]
    assert all(ethernet.parse(f).destination == mac(2) for f in released)
    assert all(ethernet.parse(f).ethertype == ethernet.IPV4 for f in released)
    assert a.lookup(PEER, 0.3) == mac(2) and a.next_deadline() is None


def test_requests_are_repeated_then_given_up() -> None:
    a = engine(retry_interval=1.0, attempts=3)
    a.queue(PEER, b"p", 0.0)
    assert a.next_deadline() == 1.0
    assert a.tick(0.9) == []
    assert len(a.tick(1.0)) == 1 and a.next_deadline() == 2.0
    assert len(a.tick(2.0)) == 1
    assert a.tick(3.0) == [] and a.next_deadline() is None
    assert a.dropped == {"unresolved": 1}
    (frame,) = a.queue(PEER, b"q", 4.0)  # a later packet starts afresh
    assert arp_of(frame)[1].target_ip == PEER


def test_the_pending_queue_is_bounded_dropping_the_oldest() -> None:
    a = engine(max_queued=2)
    for n in range(4):
        a.queue(PEER, b"p%d" % n, 0.0)
    assert a.dropped == {"queue-full": 2}
    released = a.receive(reply_from_peer(), 0.1)
    assert [ethernet.parse(f).payload.tobytes() for f in released] == [b"p2", b"p3"]


def test_addresses_being_resolved_are_bounded() -> None:
    a = engine(max_resolving=1)
    assert len(a.queue(PEER, b"p", 0.0)) == 1
    assert a.queue(OTHER, b"q", 0.0) == []
    assert a.dropped == {"resolving-full": 1}


def test_a_request_for_us_is_answered_and_its_sender_learnt() -> None:
    a = engine()
    (frame,) = a.receive(request(mac(2), PEER, ME), 0.0)
    eth, answer = arp_of(frame)
    assert eth.destination == mac(2) and answer.operation == arp.REPLY
    assert (answer.sender_mac, answer.sender_ip) == (mac(1), ME)
    assert (answer.target_mac, answer.target_ip) == (mac(2), PEER)
    assert a.lookup(PEER, 0.0) == mac(2)


def test_strangers_talking_among_themselves_are_not_learnt() -> None:
    a = engine()
    assert a.receive(request(mac(2), PEER, OTHER), 0.0) == []
    assert len(a) == 0 and a.lookup(PEER, 0.0) is None


def test_gratuitous_arp_updates_a_known_entry_but_creates_none() -> None:
    a = engine()
    a.receive(request(mac(2), PEER, ME), 0.0)
    a.receive(request(mac(7), PEER, PEER), 1.0)  # PEER moved to another NIC
    assert a.lookup(PEER, 1.0) == mac(7)
    a.receive(request(mac(3), OTHER, OTHER), 1.0)
    assert a.lookup(OTHER, 1.0) is None


def test_entries_expire() -> None:
    a = engine(lifetime=60.0)
    a.receive(request(mac(2), PEER, ME), 0.0)
    assert a.lookup(PEER, 59.9) == mac(2)
    assert a.lookup(PEER, 60.0) is None
    a.tick(59.0)
    assert len(a) == 1
    a.tick(60.0)
    assert len(a) == 0


def test_hearing_from_a_host_again_extends_its_entry() -> None:
    a = engine(lifetime=60.0)
    a.receive(request(mac(2), PEER, ME), 0.0)
    a.receive(request(mac(3), OTHER, ME), 10.0)
    a.receive(request(mac(2), PEER, ME), 30.0)
    a.tick(75.0)  # OTHER's entry is stale, PEER's is not
    assert a.lookup(PEER, 75.0) == mac(2) and a.lookup(OTHER, 75.0) is None and len(a) == 1


def test_the_cache_is_bounded_forgetting_the_oldest() -> None:
    a = engine(max_entries=2)
    for n in (2, 3, 4):
        a.receive(request(mac(n), ip(f"10.0.0.{n}"), ME), float(n))
    assert len(a) == 2 and a.lookup(ip("10.0.0.2"), 5.0) is None
    assert a.lookup(ip("10.0.0.4"), 5.0) == mac(4)


def test_someone_else_claiming_our_address_is_counted_not_learnt() -> None:
    a = engine()
    assert a.receive(request(mac(9), ME, ME), 0.0) == []
    assert a.conflicts == 1 and len(a) == 0
    assert a.receive(request(mac(1), ME, ME), 0.0) == []  # our own announcement, looped back
    assert a.conflicts == 1


def test_probes_from_0_0_0_0_are_answered_but_not_learnt() -> None:
    a = engine()
    (frame,) = a.receive(request(mac(2), bytes(4), ME), 0.0)
    assert arp_of(frame)[1].operation == arp.REPLY and len(a) == 0


def test_without_an_address_nothing_is_answered() -> None:
    a = ArpEngine(mac(1))
    assert a.receive(request(mac(2), PEER, ME), 0.0) == []
    (frame,) = a.queue(PEER, b"p", 0.0)
    assert arp_of(frame)[1].sender_ip == bytes(4)
    with pytest.raises(ValueError):
        a.announce()


def test_the_announcement_is_a_gratuitous_request() -> None:
    eth, announcement = arp_of(engine().announce())
    assert eth.destination == ethernet.BROADCAST and announcement.operation == arp.REQUEST
    assert announcement.sender_ip == announcement.target_ip == ME


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (reply_from_peer()[:27], "truncated"),
        (b"\x00\x06" + reply_from_peer()[2:], "unsupported"),  # IEEE 802 hardware
        (reply_from_peer()[:7] + b"\x03" + reply_from_peer()[8:], "operation"),  # RARP
        (arp.build(arp.REPLY, ethernet.BROADCAST, PEER, mac(1), ME), "sender"),
    ],
)
def test_malformed_packets_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(Malformed) as caught:
        engine().receive(data, 0.0)
    assert caught.value.reason == reason


addresses = st.binary(min_size=4, max_size=4)
unicast_macs = st.binary(min_size=6, max_size=6).filter(lambda m: not m[0] & 1)


@given(st.sampled_from([arp.REQUEST, arp.REPLY]), unicast_macs, addresses, unicast_macs, addresses)
def test_build_then_parse_gives_the_same_packet(
    operation: int, sender_mac: bytes, sender: bytes, target_mac: bytes, target: bytes
) -> None:
    packet = arp.parse(arp.build(operation, sender_mac, sender, target_mac, target))
    assert (packet.operation, packet.sender_mac, packet.sender_ip) == (
        operation,
        sender_mac,
        sender,
    )
    assert (packet.target_mac, packet.target_ip) == (target_mac, target)
