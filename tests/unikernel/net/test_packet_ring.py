"""PacketRingNetif (AF_PACKET with PACKET_MMAP rings) against Linux, over a veth pair in a
test-made namespace, as test_packet_driver.py tests PacketNetif: the same fixtures' pair,
Linux's end at 10.78.0.1/24 with its offloads on or off."""

from __future__ import annotations

import _socket
import json
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.linux_peer import mac_text
from tests.support.netns import Netns, require
from tests.unikernel.net.test_packet_driver import (
    _TEST_ETHERTYPE,
    LINUX_DEV,
    OURS_DEV,
    _sha,
    _test_frame,
    _veth_pair,
    _wait_for_linux_end,
    pinged_by_linux,
    receive_from_linux,
    send_to_linux,
)
from unikernel.drivers.packet_ring import PacketRingNetif

_TEST_TYPE = struct.pack("!H", _TEST_ETHERTYPE)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """The veth pair, Linux's end offloading nothing."""
    yield from _veth_pair(linux_offloads=False)


@pytest.fixture
def offloading_netns() -> Iterator[Netns]:
    """The veth pair, Linux's end sending partial checksums and TCP super-packets."""
    yield from _veth_pair(linux_offloads=True)


def _open(netns: Netns, offloads: bool) -> PacketRingNetif:
    netif = netns.call_inside(lambda: PacketRingNetif(OURS_DEV, offloads=offloads))
    assert netif.offloads == offloads  # this kernel takes the virtio-net header with rings
    _wait_for_linux_end(netns)
    return netif


@pytest.fixture(params=[True, False], ids=["offloads", "no-offloads"])
def netif(netns: Netns, request: pytest.FixtureRequest) -> Iterator[PacketRingNetif]:
    ring_netif = _open(netns, request.param)
    try:
        yield ring_netif
    finally:
        ring_netif.close()


def _listener(netns: Netns) -> _socket.socket:
    """A packet socket on Linux's end, for our test ethertype only."""
    sock = netns.call_inside(lambda: _socket.socket(_socket.AF_PACKET, _socket.SOCK_RAW, 0))
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 8 << 20)
    sock.bind((LINUX_DEV, _TEST_ETHERTYPE))
    sock.settimeout(2)
    return sock


def _numbered(source: bytes, number: int, size: int = 60) -> bytes:
    return _test_frame(source, number.to_bytes(4, "big") + os.urandom(size - 18))


def _read_test_frames(netif: PacketRingNetif, count: int, seconds: float) -> list[bytes]:
    """Our test ethertype's frames, until `count` came or `seconds` passed."""
    frames: list[bytes] = []
    deadline = time.monotonic() + seconds
    while len(frames) < count and time.monotonic() < deadline:
        batch = netif.read_batch(16)
        frames += [bytes(frame) for frame in batch if frame[12:14] == _TEST_TYPE]
        if not batch:
            select.select([netif.fileno()], [], [], 0.05)
    return frames


def test_ring_netif_takes_the_interface_settings(netns: Netns) -> None:
    netns.ip("link", "set", OURS_DEV, "mtu", "1400")
    with netns.call_inside(lambda: PacketRingNetif(OURS_DEV)) as netif:
        link = json.loads(netns.ip("-json", "link", "show", OURS_DEV))[0]
        assert netif.mtu == 1400 and mac_text(netif.mac) == link["address"]
        assert "UP" in link["flags"]
        assert netif.offloads and netif.segmentation  # a veth cuts TSO super-frames
        # Slots for a 64 KiB GSO packet both ways; the rings' sizes as the module says.
        assert netif.rx_slot_size >= 0xFFFF + 18 + 10 and netif.tx_slot_size >= 0xFFFF + 18
        assert "rx 60x" in repr(netif) and "tx 60x" in repr(netif), repr(netif)
        assert all(frame[12:14] == b"\x86\xdd" for frame in netif.read_batch(8))
    with netns.call_inside(lambda: PacketRingNetif(OURS_DEV, offloads=False)) as netif:
        assert not netif.segmentation
        assert netif.rx_slot_size < 2048 and netif.tx_slot_size < 2048
    with pytest.raises(OSError, match="no interface 'absent'"):
        netns.call_inside(lambda: PacketRingNetif("absent"))
    with pytest.raises(OSError, match="not an Ethernet interface"):
        netns.call_inside(lambda: PacketRingNetif("lo"))


def test_frames_both_ways_and_the_descriptor_says_when(
    netns: Netns, netif: PacketRingNetif
) -> None:
    listener = _listener(netns)
    try:
        fd = netif.fileno()
        netif.read_batch(64)  # Linux's IPv6 chatter, if any
        netif.read_batch(64)
        _, writable, _ = select.select([], [fd], [], 0)
        assert writable  # a free TX slot
        ours = [_numbered(netif.mac, n) for n in range(3)]
        assert netif.write_batch(ours) == 3
        assert [listener.recv(2048) for _ in ours] == ours  # in order, whole
        linux_mac = listener.getsockname()[4]
        theirs = _numbered(linux_mac, 7, 300)
        listener.send(theirs)
        readable, _, _ = select.select([fd], [], [], 2)
        assert readable  # a frame waits in the RX ring
        # Only Linux's frame, never our own three echoed back.
        assert _read_test_frames(netif, 2, 0.3) == [theirs]
        netif.read_batch(16)  # gives back the slot the last batch held
        assert not select.select([fd], [], [], 0)[0]
        assert netif.counts()["kernel_drops"] == 0
    finally:
        listener.close()


def test_our_own_frames_are_skipped_without_the_kernels_filter(
    netns: Netns, netif: PacketRingNetif
) -> None:
    dup = _socket.socket(fileno=os.dup(netif.fileno()))
    dup.setsockopt(263, 23, 0)  # SOL_PACKET, PACKET_IGNORE_OUTGOING off
    dup.close()
    netif.filters_outgoing = True
    listener = _listener(netns)
    try:
        ours = _numbered(netif.mac, 1)
        assert netif.write_batch([ours]) == 1
        assert listener.recv(2048) == ours
        theirs = _numbered(listener.getsockname()[4], 2)
        listener.send(theirs)
        assert _read_test_frames(netif, 2, 0.3) == [theirs]
    finally:
        listener.close()


def test_linux_pings_our_stack(netns: Netns, netif: PacketRingNetif) -> None:
    pinged_by_linux(netns, netif)


def test_the_rx_ring_wraps_without_losing_or_repeating_a_frame(netns: Netns) -> None:
    """Linux's end sends six times as many frames as the RX ring has slots, in one burst,
    while we read: every one arrives once, in order, or the kernel counts it dropped."""
    netif = _open(netns, offloads=True)  # 60 slots of 68 KiB: the fewest
    try:
        slots = len(netif._rx_slots)
        total = 6 * slots
        sender = f"""
import socket, sys, time
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
sock.bind(("{LINUX_DEV}", 0))
for n in range({total}):
    frame = b"\\xff" * 6 + sock.getsockname()[4] + {_TEST_TYPE!r} + n.to_bytes(4, "big")
    sock.send(frame + bytes(200))
    if n % 8 == 7:
        time.sleep(0.0002)
"""
        process = netns.spawn([sys.executable, "-c", sender])
        frames = _read_test_frames(netif, total, 10)
        assert process.popen.wait(timeout=10) == 0, process.errors()
        numbers = [int.from_bytes(frame[14:18], "big") for frame in frames]
        assert numbers == sorted(set(numbers))  # in order, none twice
        assert all(len(frame) == 218 for frame in frames)
        dropped = netif.counts()["kernel_drops"]
        assert len(numbers) + dropped == total, (len(numbers), dropped)
        assert len(numbers) > 2 * slots  # the ring went round
    finally:
        netif.close()


def test_a_packet_over_a_slot_is_dropped_whole_and_counted(netns: Netns) -> None:
    """Without offloads the RX slots hold an MTU's frame: one larger (the MTUs raised after
    the rings were made) arrives cut short, and must not be handed on."""
    netif = _open(netns, offloads=False)
    listener = _listener(netns)
    try:
        for device in (OURS_DEV, LINUX_DEV):
            netns.ip("link", "set", device, "mtu", "9000")
        linux_mac = listener.getsockname()[4]
        big, small = _numbered(linux_mac, 1, 4000), _numbered(linux_mac, 2, 100)
        listener.send(big)
        listener.send(small)
        assert _read_test_frames(netif, 2, 1.0) == [small]
        assert netif.oversize_drops == 1 and netif.counts()["oversize_drops"] == 1
    finally:
        listener.close()
        netif.close()


def test_a_full_tx_ring_takes_fewer_and_later_the_rest(offloading_netns: Netns) -> None:
    """A slow queue on our end (tbf) keeps sent frames in their slots: the ring fills, a
    batch is taken in part, and the rest once the descriptor says there is room."""
    require("tc")
    netns = offloading_netns
    netif = _open(netns, offloads=True)  # 60 TX slots
    listener = _listener(netns)
    try:
        tbf = ["rate", "4mbit", "burst", "2000", "limit", "1000000"]
        subprocess.run(
            ["tc", "-n", netns.name, "qdisc", "add", "dev", OURS_DEV, "root", "tbf", *tbf],
            check=True,
            timeout=10,
        )
        slots = len(netif._tx_slots)
        frames = [_numbered(netif.mac, n, 500) for n in range(slots + 40)]
        taken = netif.write_batch(frames)
        assert 0 < taken < len(frames)
        deadline = time.monotonic() + 10
        while taken < len(frames):
            assert time.monotonic() < deadline
            select.select([], [netif.fileno()], [], 1)
            taken += netif.write_batch(frames[taken:])
        received = [listener.recv(2048) for _ in frames]
        assert received == frames  # none lost or twice, in order
        assert netif.write_errors == 0
    finally:
        listener.close()
        netif.close()


def test_a_frame_over_a_slot_is_lost_but_taken(netns: Netns, netif: PacketRingNetif) -> None:
    listener = _listener(netns)
    try:
        too_big = _numbered(netif.mac, 1, netif.tx_slot_size + 1)
        fine = _numbered(netif.mac, 2)
        assert netif.write_batch([too_big, fine]) == 2
        assert listener.recv(70000) == fine
        assert netif.write_errors == 1
    finally:
        listener.close()


def test_a_frame_the_device_refuses_is_dropped_and_counted(netns: Netns) -> None:
    """Over the MTU, not a super-frame, yet within a TSO-sized slot: the veth refuses it, and
    the kernel would offer it again at every send(), the ring stuck behind it. It is dropped
    (counted) and the frames after it go out."""
    netif = _open(netns, offloads=True)
    listener = _listener(netns)
    try:
        over_mtu = _numbered(netif.mac, 1, netif.mtu + 100)
        fine = [_numbered(netif.mac, n) for n in (2, 3, 4)]
        assert netif.write_batch([fine[0], over_mtu, fine[1]]) == 3
        assert [listener.recv(2048) for _ in fine[:2]] == fine[:2]
        assert netif.write_errors == 1
        assert netif.write_batch([fine[2]]) == 1  # the ring goes on
        assert listener.recv(2048) == fine[2]
        assert netif.write_errors == 1
    finally:
        listener.close()
        netif.close()


def test_close_twice_and_with_a_frame_still_held(netns: Netns) -> None:
    netif = _open(netns, offloads=False)
    listener = _listener(netns)
    try:
        listener.send(_numbered(listener.getsockname()[4], 1))
        deadline = time.monotonic() + 2
        held: list[bytes | bytearray | memoryview] = []
        while not held and time.monotonic() < deadline:
            held = [f for f in netif.read_batch(16) if f[12:14] == _TEST_TYPE]
        assert held
        netif.close()
        assert netif.lingering  # the view kept the mapping alive, and close() went on
        assert held[0][14:18] == (1).to_bytes(4, "big")  # still readable
        netif.close()
        assert netif.fileno() == -1  # the socket is closed
        del held
    finally:
        listener.close()
        netif.close()


SIZE = 4 << 20
TRANSFER_TIMEOUT = 15.0


@pytest.mark.parametrize("offloads", [True, False], ids=["offloads", "no-offloads"])
@pytest.mark.parametrize("direction", ["to-us", "to-linux"])
def test_tcp_transfers_are_byte_exact(offloads: bool, direction: str) -> None:
    """A few MB each way, Linux's end offloading as our end does (super-packets with partial
    checksums when on)."""
    require("nc", "ss")
    payload = os.urandom(SIZE)
    with contextmanager(_veth_pair)(linux_offloads=offloads) as namespace:
        netif = _open(namespace, offloads)
        try:
            if direction == "to-us":
                received, stats = receive_from_linux(namespace, netif, payload)
            else:
                received, stats = send_to_linux(namespace, netif, payload)
            counts = netif.counts()
        finally:
            netif.close()
    assert len(received) == SIZE and _sha(received) == _sha(payload)
    assert stats["dropped_malformed"] == 0, stats
    assert counts["write_errors"] == counts["oversize_drops"] == 0, counts
    assert counts["rx_header_drops"] == 0, counts
    if offloads:
        assert counts["rx_vouched_segments"] > 0, counts
        if direction == "to-us":
            assert counts["rx_super_packets"] > 0, counts
