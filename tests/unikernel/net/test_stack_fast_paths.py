"""The stack's shortcuts for bulk traffic, which must change nothing but the time taken: a
received frame delivered to its transport in one step (Stack._receive_fast), and a sent
datagram's next hop and Ethernet header remembered from the last one to the same place; and
the runs a batch hands a transport that takes them (`run`), which change nothing either."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unikernel.net import arp, ethernet, ipv4
from unikernel.net.config import static
from unikernel.net.stack import Stack

from .wire import ip, mac, make_stack

ME, PEER = ip("10.0.0.2"), ip("10.0.0.9")

Delivered = list[tuple[bytes, bytes, bytes, float, bool]]


def receiving_stack() -> tuple[Stack, Delivered]:
    """Stack 2 at 10.0.0.2/24 with TCP plugged in, and what TCP was handed."""
    stack = make_stack(2, "10.0.0.2/24")
    stack.take_frames()  # its announcement
    delivered: Delivered = []
    stack.register_protocol(
        ipv4.TCP,
        lambda source, destination, segment, now, vouched: delivered.append(
            (source, destination, bytes(segment), now, vouched)
        ),
    )
    return stack, delivered


def tcp_frame(payload: bytes = b"segment", ident: int = 1) -> bytes:
    return ethernet.build(
        mac(2), mac(9), ethernet.IPV4, ipv4.build(PEER, ME, ipv4.TCP, payload, ident)
    )


def outcome(frames: list[bytes], vouched: int, batch: bool) -> tuple[Any, ...]:
    """Everything the stack did with `frames`: what TCP got, the drops, the frames counted and
    those it sent in reply (ICMP errors, ARP)."""
    stack, delivered = receiving_stack()
    if batch:
        stack.receive_batch(frames, 1.0, vouched)
    else:
        for index, frame in enumerate(frames):
            stack.receive(frame, 1.0, vouched >> index & 1 == 1)
    return delivered, stack.drop_counts(), stack.frames_received, stack.take_frames()


def counting_fast_path(patch: pytest.MonkeyPatch) -> list[int]:
    """[how many frames the fast path took] from here on."""
    taken = [0]
    fast = Stack._fast_datagram

    def counting(stack: Stack, frame: Any) -> Any:
        result = fast(stack, frame)
        taken[0] += result is not None
        return result

    patch.setattr(Stack, "_fast_datagram", counting)
    return taken


# Edits that make a frame one the fast path must leave to the long way (or not: a changed TOS,
# TTL or ident is still a plain datagram), each at the byte it changes.
EDITS: dict[str, Callable[[bytearray], None]] = {
    "broadcast MAC": lambda f: f.__setitem__(slice(0, 6), ethernet.BROADCAST),
    "another MAC": lambda f: f.__setitem__(5, 3),
    "IPv6": lambda f: f.__setitem__(slice(12, 14), b"\x86\xdd"),
    "ARP": lambda f: f.__setitem__(slice(12, 14), b"\x08\x06"),
    "version 6": lambda f: f.__setitem__(14, 0x65),
    "options": lambda f: f.__setitem__(14, 0x46),
    "short header": lambda f: f.__setitem__(14, 0x44),
    "TOS": lambda f: f.__setitem__(15, 0x10),
    "longer than the frame": lambda f: f.__setitem__(slice(16, 18), b"\x05\xdc"),
    "shorter than a header": lambda f: f.__setitem__(slice(16, 18), b"\x00\x13"),
    "ident": lambda f: f.__setitem__(19, f[19] ^ 0x55),
    "more fragments": lambda f: f.__setitem__(20, 0x20),
    "offset": lambda f: f.__setitem__(21, 0x01),
    "don't fragment": lambda f: f.__setitem__(20, 0x40),
    "TTL": lambda f: f.__setitem__(22, 1),
    "UDP": lambda f: f.__setitem__(23, ipv4.UDP),
    "no such protocol": lambda f: f.__setitem__(23, 99),
    "checksum": lambda f: f.__setitem__(25, f[25] ^ 1),
    "multicast source": lambda f: f.__setitem__(26, 224),
    "broadcast destination": lambda f: f.__setitem__(slice(30, 34), b"\xff" * 4),
    "subnet broadcast": lambda f: f.__setitem__(33, 255),
    "another address": lambda f: f.__setitem__(33, 7),
    "padding": lambda f: f.extend(bytes(6)),
    "truncated": lambda f: f.__delitem__(slice(30, None)),
}


LENGTH_EDITS = ("padding", "truncated")


def frame_with(edits: list[str], fix_checksum: bool, payload: bytes, ident: int) -> bytes:
    frame = bytearray(tcp_frame(payload, ident))
    for edit in sorted(edits, key=lambda edit: edit in LENGTH_EDITS):  # those last
        EDITS[edit](frame)
    if fix_checksum and len(frame) >= 34 and frame[14] == 0x45:
        frame[24:26] = bytes(2)
        frame[24:26] = ipv4.checksum(frame[14:34]).to_bytes(2, "big")
    return bytes(frame)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.lists(st.sampled_from(sorted(EDITS)), max_size=3),
            st.booleans(),
            st.binary(max_size=40),
            st.integers(0, 0xFFFF),
        ),
        min_size=1,
        max_size=6,
    ),
    vouched=st.integers(0, 63),
    batch=st.booleans(),
)
def test_the_receive_fast_path_changes_nothing(
    frames: list[tuple[list[str], bool, bytes, int]], vouched: int, batch: bool
) -> None:
    made = [frame_with(*spec) for spec in frames]
    with pytest.MonkeyPatch.context() as patch:
        taken = counting_fast_path(patch)
        fast = outcome(made, vouched, batch)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Stack, "_fast_datagram", lambda stack, frame: None)
        slow = outcome(made, vouched, batch)
    assert fast == slow
    assert taken[0] <= len(fast[0])  # it only ever delivers


def test_the_fast_path_takes_plain_segments_and_hands_over_views() -> None:
    stack = make_stack(2, "10.0.0.2/24")
    seen: list[object] = []
    stack.register_protocol(ipv4.TCP, lambda s, d, segment, now, vouched: seen.append(segment))
    with pytest.MonkeyPatch.context() as patch:
        taken = counting_fast_path(patch)
        stack.receive_batch([tcp_frame(b"a"), memoryview(tcp_frame(b"bc"))], 1.0, 0b10)
        stack.receive(tcp_frame(b"def") + bytes(4), 1.0)  # Ethernet padding is cut
    assert taken[0] == 3
    assert all(type(segment) is memoryview for segment in seen)
    assert [bytes(segment) for segment in seen] == [b"a", b"bc", b"def"]  # type: ignore[call-overload]
    assert stack.frames_received == 3 and stack.drop_counts() == {}


def resolved(stack: Stack, neighbour: bytes, neighbour_mac: bytes) -> None:
    """`stack` learns that `neighbour` is at `neighbour_mac` (it asks for our address)."""
    address = stack.address
    assert address is not None
    request = arp.build(arp.REQUEST, neighbour_mac, neighbour, bytes(6), address)
    stack.receive(ethernet.build(ethernet.BROADCAST, neighbour_mac, ethernet.ARP, request), 0.0)
    stack.take_frames()


def test_a_new_configuration_routes_afresh() -> None:
    stack = make_stack(1, "10.0.0.1/24")
    stack.take_frames()
    resolved(stack, ip("10.0.0.9"), mac(9))
    assert stack.send_ipv4(ipv4.TCP, ip("10.0.1.5"), b"x", 0.0) is False  # no route
    stack.configure(static("10.0.0.1/16"))  # now on our link
    stack.take_frames()
    assert stack.send_ipv4(ipv4.TCP, ip("10.0.1.5"), b"x", 0.0)
    (request,) = stack.take_frames()
    assert arp.parse(ethernet.parse(request).payload).target_ip == ip("10.0.1.5")
    stack.configure(static("10.0.0.1/24", gateway="10.0.0.9"))  # off it, through the gateway
    stack.take_frames()
    assert stack.send_ipv4(ipv4.TCP, ip("10.0.1.5"), b"x", 0.0)
    (frame,) = stack.take_frames()
    assert ethernet.parse(frame).destination == mac(9)
    assert ipv4.parse(ethernet.parse(frame).payload).destination == ip("10.0.1.5")
    assert stack.drop_counts() == {"ipv4.no-route": 1}


def test_a_neighbour_that_moves_gets_the_frames_at_its_new_mac() -> None:
    stack = make_stack(1, "10.0.0.1/24")
    stack.take_frames()
    resolved(stack, PEER, mac(9))
    assert stack.send_ipv4(ipv4.TCP, PEER, b"x", 0.0)
    frames = stack.take_frames()
    resolved(stack, PEER, mac(8))
    assert stack.send_ipv4(ipv4.TCP, PEER, b"y", 0.0)
    frames += stack.take_frames()
    assert [ethernet.parse(frame).destination for frame in frames] == [mac(9), mac(8)]
    assert all(ethernet.parse(frame).source == mac(1) for frame in frames)


def test_many_destinations_are_routed_right_past_what_is_remembered() -> None:
    stack = make_stack(1, "10.0.0.1/16", gateway="10.0.0.9")
    stack.take_frames()
    resolved(stack, ip("10.0.0.9"), mac(9))
    for n in range(600):  # more than the stack keeps: it forgets and finds them again
        on_link = ip(f"10.0.{n // 250}.{n % 250 + 1}")
        off_link = ip(f"192.0.{n // 250}.{n % 250 + 1}")
        assert stack.send_ipv4(ipv4.TCP, off_link, b"x", 0.0)
        assert stack.send_ipv4(ipv4.TCP, on_link, b"x", 0.0)
    frames = stack.take_frames()
    datagrams = [f for f in frames if ethernet.parse(f).ethertype == ethernet.IPV4]
    gateway = [f for f in datagrams if ipv4.parse(ethernet.parse(f).payload).destination[0] == 192]
    requests = [arp.parse(ethernet.parse(f).payload) for f in frames if f not in datagrams]
    assert len(gateway) == 600 and all(ethernet.parse(f).destination == mac(9) for f in gateway)
    assert len({r.target_ip for r in requests}) == len(requests) > 0
    assert all(r.target_ip.startswith(bytes((10, 0))) for r in requests)


OTHER_PEER = ip("10.0.0.8")
KINDS = {
    "tcp": lambda payload, ident: tcp_frame(payload, ident),
    "tcp from another peer": lambda payload, ident: ethernet.build(
        mac(2), mac(8), ethernet.IPV4, ipv4.build(OTHER_PEER, ME, ipv4.TCP, payload, ident)
    ),
    "udp": lambda payload, ident: frame_with(["UDP"], True, payload, ident),
    "not for us": lambda payload, ident: frame_with(["another MAC"], True, payload, ident),
    "fragment": lambda payload, ident: frame_with(["more fragments"], True, payload, ident),
}


def delivered_in_runs(frames: list[bytes], vouched: int) -> tuple[Any, ...]:
    """What a transport that takes runs was handed: each datagram as (source, destination,
    payload, vouched), and the runs' lengths; with the drops and frames counted."""
    stack = make_stack(2, "10.0.0.2/24")
    stack.take_frames()
    flat: list[tuple[bytes, bytes, bytes, bool]] = []
    runs: list[int] = []

    def one(source: bytes, destination: bytes, payload: Any, now: float, bit: bool) -> None:
        raise AssertionError("a transport that takes runs gets a batch's datagrams in runs")

    def run(source: bytes, destination: bytes, payloads: Any, bits: int, now: float) -> None:
        runs.append(len(payloads))
        for index, payload in enumerate(payloads):
            flat.append((source, destination, bytes(payload), bits >> index & 1 == 1))

    stack.register_protocol(ipv4.TCP, one, run=run)
    stack.receive_batch(frames, 1.0, vouched)
    return flat, runs, stack.drop_counts(), stack.frames_received


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=10),
    payloads=st.lists(st.binary(max_size=30), min_size=10, max_size=10),
    vouched=st.integers(0, 1023),
)
def test_runs_hand_over_what_receive_would_in_the_same_order(
    kinds: list[str], payloads: list[bytes], vouched: int
) -> None:
    frames = [KINDS[kind](payloads[i], i) for i, kind in enumerate(kinds)]
    flat, runs, drops, counted = delivered_in_runs(frames, vouched)
    one_by_one, drops_one_by_one, counted_one_by_one, _ = outcome(frames, vouched, batch=True)
    assert flat == [(s, d, p, v) for s, d, p, _, v in one_by_one]
    assert (drops, counted) == (drops_one_by_one, counted_one_by_one)
    # A run is as long as the frames for TCP, from one peer, that follow each other allow.
    expected: list[int] = []
    previous = None
    for kind in kinds:
        if kind.startswith("tcp"):
            if kind == previous:
                expected[-1] += 1
            else:
                expected.append(1)
        previous = kind
    assert runs == expected
