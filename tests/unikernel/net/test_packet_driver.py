"""The AF_PACKET driver against Linux's stack, over a veth pair in a test-made namespace.

One end of the pair is the unikernel's NIC, as in the VM: bound through PacketNetif, with no
Linux address, its MAC ours. Linux holds the other end with 10.78.0.1/24 and talks to our
stack with ping and nc. Both ends die with the namespace, whatever happens.
"""

from __future__ import annotations

import _socket
import ctypes
import fcntl
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from unikernel.core.scheduler import now, spawn
from unikernel.drivers.packet import PacketNetif
from unikernel.net.interface import Interface
from unikernel.net.ipv4 import parse_address
from unikernel.net.sockets import UdpSocket, ping

from .netns import Netns, require
from .test_linux_interop import echo_server, mac_text, on_stack

OURS_DEV, LINUX_DEV = "ub-ours", "ub-linux"
LINUX = "10.78.0.1"
OURS = "10.78.0.2"
_TEST_ETHERTYPE = 0x88B5  # IEEE 802 local experimental: nobody else sends it
_SIOCETHTOOL = 0x8946
_ETHTOOL_STXCSUM = 0x17


@pytest.fixture
def netns() -> Iterator[Netns]:
    require()
    namespace = Netns()
    try:
        namespace.ip("link", "add", OURS_DEV, "type", "veth", "peer", "name", LINUX_DEV)
        namespace.ip("address", "add", f"{LINUX}/24", "dev", LINUX_DEV)
        namespace.ip("link", "set", LINUX_DEV, "up")
        # veth leaves Linux's UDP checksums for a NIC to finish (CHECKSUM_PARTIAL), and a
        # packet socket sees them unfinished: make Linux compute them, as before a real NIC.
        namespace.call_inside(lambda: _disable_tx_checksum_offload(LINUX_DEV))
        yield namespace
    finally:
        namespace.close()


@pytest.fixture
def netif(netns: Netns) -> Iterator[PacketNetif]:
    """Our end of the veth pair, left down: the driver brings it up."""
    packet_netif = netns.call_inside(lambda: PacketNetif(OURS_DEV))
    try:
        yield packet_netif
    finally:
        packet_netif.close()


def _disable_tx_checksum_offload(device: str) -> None:
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        value = bytearray(struct.pack("II", _ETHTOOL_STXCSUM, 0))
        # struct ifreq: the name, then a pointer to the ethtool command.
        address = _buffer_address(value)
        fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, struct.pack("16sP16x", device.encode(), address))
    finally:
        sock.close()


def _buffer_address(buffer: bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def _test_frame(source: bytes, payload: bytes) -> bytes:
    return b"\xff" * 6 + source + struct.pack("!H", _TEST_ETHERTYPE) + payload.ljust(46, b"\0")


def _read_test_frames(netif: PacketNetif, seconds: float) -> list[bytes]:
    """Our test ethertype's frames that arrive within `seconds` (IPv6 chatter left out)."""
    frames: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for frame in netif.read_batch(16):
            if bytes(frame[12:14]) == struct.pack("!H", _TEST_ETHERTYPE):
                frames.append(bytes(frame))
        time.sleep(0.01)
    return frames


def test_packet_netif_takes_the_interface_settings_and_explains_errors(netns: Netns) -> None:
    netns.ip("link", "set", OURS_DEV, "mtu", "1400")
    assert "UP" not in netns.ip("-brief", "link", "show", OURS_DEV).split()[1]
    with netns.call_inside(lambda: PacketNetif(OURS_DEV)) as netif:
        # Its MAC is the interface's own; the link came up.
        link = json.loads(netns.ip("-json", "link", "show", OURS_DEV))[0]
        assert netif.mtu == 1400 and mac_text(netif.mac) == link["address"]
        assert "UP" in link["flags"]
        # It does not block, and nothing waits but Linux's IPv6 chatter.
        assert all(bytes(frame[12:14]) == b"\x86\xdd" for frame in netif.read_batch(8))
    with pytest.raises(OSError, match="no interface 'absent'"):
        netns.call_inside(lambda: PacketNetif("absent"))
    with pytest.raises(OSError, match="not an Ethernet interface"):
        netns.call_inside(lambda: PacketNetif("lo"))
    with pytest.raises(ValueError):
        PacketNetif("a-name-far-too-long")


def test_packet_netif_needs_privileges() -> None:
    require("setpriv")
    # An unprivileged process: `nobody`, with no capabilities left.
    code = "from unikernel.drivers.packet import PacketNetif; PacketNetif('lo')"
    unprivileged = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    result = subprocess.run(
        [*unprivileged, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=Path(__file__).parents[3],  # the project, to import unikernel from
    )
    assert result.returncode != 0
    assert "CAP_NET_RAW" in result.stderr, result.stderr


@pytest.mark.parametrize("kernel_filter", [True, False], ids=["ignore-outgoing", "filtered"])
def test_our_own_frames_are_not_read_back(
    netns: Netns, netif: PacketNetif, kernel_filter: bool
) -> None:
    if not kernel_filter:
        # Turn the kernel's filter off on the same socket: the driver's own must do.
        dup = _socket.socket(fileno=os.dup(netif.fileno()))
        dup.setsockopt(263, 23, 0)  # SOL_PACKET, PACKET_IGNORE_OUTGOING
        dup.close()
        netif.filters_outgoing = True
    else:
        assert not netif.filters_outgoing  # this kernel has PACKET_IGNORE_OUTGOING
    # Linux's end listens with a packet socket of its own.
    listener = netns.call_inside(lambda: _socket.socket(_socket.AF_PACKET, _socket.SOCK_RAW, 0))
    try:
        listener.bind((LINUX_DEV, _TEST_ETHERTYPE))
        listener.settimeout(2)
        ours = _test_frame(netif.mac, b"from the unikernel")
        assert netif.write_batch([ours, ours]) == 2
        assert listener.recv(2048) == ours  # it went out...
        linux_mac = listener.getsockname()[4]
        theirs = _test_frame(linux_mac, b"from linux")
        listener.send(theirs)
        # ...and what we read is Linux's frame only, never our own echo.
        assert _read_test_frames(netif, 0.3) == [theirs]
    finally:
        listener.close()


def test_linux_pings_our_stack(
    netns: Netns, netif: PacketNetif, record_property: Callable[[str, object], None]
) -> None:
    require("ping")

    async def body(interface: Interface) -> tuple[int, str]:
        pinger = netns.spawn(["ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", OURS])
        status = await pinger.wait(timeout=10)
        return status, pinger.output().decode()

    status, report = on_stack(netif, f"{OURS}/24", body)
    assert status == 0, report
    assert "5 received" in report and "wrong data" not in report
    rtts = [float(ms) for ms in re.findall(r"time=([\d.]+) ms", report)]
    assert len(rtts) == 5
    record_property("median_rtt_ms", statistics.median(rtts))


def test_arp_both_ways_and_we_ping_linux(netns: Netns, netif: PacketNetif) -> None:
    linux_mac = json.loads(netns.ip("-json", "link", "show", LINUX_DEV))[0]["address"]

    async def body(interface: Interface) -> tuple[float, bytes | None, str]:
        rtt = await ping(interface, LINUX, timeout=2.0, data=b"unibench")
        learnt = interface.stack.arp.lookup(parse_address(LINUX), now())
        neighbours = await netns.output(["ip", "-json", "neigh", "show", "dev", LINUX_DEV])
        return rtt, learnt, neighbours

    rtt, learnt, neighbours = on_stack(netif, f"{OURS}/24", body)
    assert 0.0 < rtt < 2.0
    assert learnt is not None and mac_text(learnt) == linux_mac  # we learnt Linux's MAC...
    entries = {entry["dst"]: entry for entry in json.loads(neighbours)}
    ours = entries.get(OURS)
    assert ours is not None, neighbours  # ...and Linux learnt ours: the interface's own
    assert ours.get("lladdr") == mac_text(netif.mac)
    assert not {"FAILED", "INCOMPLETE"} & set(ours.get("state", [])), ours


@pytest.mark.parametrize("size", [1000, 4000], ids=["one-frame", "fragmented"])
def test_netcat_talks_to_our_udp_echo_server(netns: Netns, netif: PacketNetif, size: int) -> None:
    require("nc")
    payload = os.urandom(size)

    async def body(interface: Interface) -> bytes:
        server = spawn(echo_server, interface, 7)
        try:
            client = netns.spawn(["nc", "-u", OURS, "7"], stdin=payload)
            echoed = await client.wait_output(len(payload), timeout=5)
            client.kill()
        finally:
            server.cancel()
        return echoed

    assert on_stack(netif, f"{OURS}/24", body) == payload


def test_our_udp_socket_talks_to_a_netcat_listener(netns: Netns, netif: PacketNetif) -> None:
    require("nc", "ss")
    question, answer = os.urandom(1200), os.urandom(700)

    async def body(interface: Interface) -> tuple[bytes, bytes, tuple[str, int]]:
        listener = netns.spawn(["nc", "-u", "-l", LINUX, "9000"], stdin=answer)
        await netns.wait_udp_listener(9000)
        with UdpSocket(interface) as sock:
            await sock.sendto(question, (LINUX, 9000))
            heard = await listener.wait_output(len(question), timeout=5)
            reply, peer = await sock.recvfrom(timeout=5)
        listener.kill()
        return heard, reply, peer

    heard, reply, peer = on_stack(netif, f"{OURS}/24", body)
    assert heard == question
    assert reply == answer and peer == (LINUX, 9000)
