"""The AF_PACKET driver against Linux's stack, over a veth pair in a test-made namespace.

One end of the pair is the unikernel's NIC, as in the VM: bound through PacketNetif, with no
Linux address, its MAC ours. Linux holds the other end with 10.78.0.1/24 and talks to our
stack with ping and nc. Both ends die with the namespace, whatever happens.

A veth keeps Linux's offloads by default: it hands its peer partial checksums and TCP
super-packets of up to 64 KiB, as virtio-net does with vnet_hdr=on. The `netns` fixture turns
them off on Linux's end; `offloading_netns` leaves them on, for the driver to cope with.
"""

from __future__ import annotations

import _socket
import ctypes
import fcntl
import hashlib
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

from tests.support.linux_peer import echo_server, mac_text, on_stack
from tests.support.netns import Netns, require
from unikernel.core.scheduler import fail_after, now, sleep, spawn
from unikernel.drivers import Netif
from unikernel.drivers.offloads import (
    GSO_NONE,
    NEEDS_CSUM,
    VNET_HDR,
    complete_checksum,
    split_udp,
)
from unikernel.drivers.packet import PacketNetif
from unikernel.net import ethernet, ipv4, udp
from unikernel.net.interface import Interface
from unikernel.net.ipv4 import parse_address
from unikernel.net.service import attach_tcp
from unikernel.net.sockets import UdpSocket, ping
from unikernel.net.tcp import ACK, PSH, build_segment
from unikernel.net.tcp_sockets import TcpSocket

OURS_DEV, LINUX_DEV = "ub-ours", "ub-linux"
LINUX = "10.78.0.1"
OURS = "10.78.0.2"
_TEST_ETHERTYPE = 0x88B5  # IEEE 802 local experimental: nobody else sends it
_SIOCETHTOOL = 0x8946
_ETHTOOL_STXCSUM = 0x17


@pytest.fixture
def netns() -> Iterator[Netns]:
    """The veth pair, Linux's end computing every checksum and segment itself, as before a
    NIC without offloads (turning off its checksum offload turns off TSO as well)."""
    yield from _veth_pair(linux_offloads=False)


@pytest.fixture
def offloading_netns() -> Iterator[Netns]:
    """The veth pair with Linux's default offloads: partial checksums and TCP super-packets
    reach our end unfinished."""
    yield from _veth_pair(linux_offloads=True)


def _veth_pair(linux_offloads: bool) -> Iterator[Netns]:
    require()
    namespace = Netns()
    try:
        namespace.ip("link", "add", OURS_DEV, "type", "veth", "peer", "name", LINUX_DEV)
        namespace.ip("address", "add", f"{LINUX}/24", "dev", LINUX_DEV)
        namespace.ip("link", "set", LINUX_DEV, "up")
        if not linux_offloads:
            namespace.call_inside(lambda: _disable_tx_checksum_offload(LINUX_DEV))
        yield namespace
    finally:
        namespace.close()


@pytest.fixture(params=[True, False], ids=["offloads", "no-offloads"])
def netif(netns: Netns, request: pytest.FixtureRequest) -> Iterator[PacketNetif]:
    """Our end of the veth pair, left down: the driver brings it up. With and without the
    virtio-net header (PacketNetif's `offloads`), which Linux's end offloads nothing to."""
    offloads: bool = request.param
    packet_netif = netns.call_inside(lambda: PacketNetif(OURS_DEV, offloads=offloads))
    try:
        assert packet_netif.offloads == offloads
        _wait_for_linux_end(netns)
        yield packet_netif
    finally:
        packet_netif.close()


@pytest.fixture
def offloading_netif(offloading_netns: Netns) -> Iterator[PacketNetif]:
    packet_netif = offloading_netns.call_inside(lambda: PacketNetif(OURS_DEV))
    try:
        assert packet_netif.offloads  # the default
        _wait_for_linux_end(offloading_netns)
        yield packet_netif
    finally:
        packet_netif.close()


def _wait_for_linux_end(netns: Netns, timeout: float = 3.0) -> None:
    """Until Linux's end can transmit. Our end coming up gives it its carrier, but its queue
    starts only when the kernel's link watcher gets round to it, up to a second later
    (rate-limited); until then it drops every frame (QDISC_DROP)."""
    deadline = time.monotonic() + timeout
    while True:
        link = json.loads(netns.ip("-json", "link", "show", LINUX_DEV))[0]
        if link["operstate"] == "UP" and link.get("qdisc") != "noop":
            return
        assert time.monotonic() < deadline, link
        time.sleep(0.02)


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
        # Its receive queue holds a few TCP windows, past net.core.rmem_max (we are root).
        sock = _socket.socket(fileno=os.dup(netif.fileno()))
        try:
            assert sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF) >= 4 << 20
        finally:
            sock.close()
        assert netif.offloads  # by default
        # It does not block, and nothing waits but Linux's IPv6 chatter.
        assert all(bytes(frame[12:14]) == b"\x86\xdd" for frame in netif.read_batch(8))
    with pytest.raises(OSError, match="no interface 'absent'"):
        netns.call_inside(lambda: PacketNetif("absent"))
    with pytest.raises(OSError, match="not an Ethernet interface"):
        netns.call_inside(lambda: PacketNetif("lo"))
    with pytest.raises(ValueError):
        PacketNetif("a-name-far-too-long")


def test_we_send_super_frames_only_to_a_nic_that_cuts_them(netns: Netns) -> None:
    """Where TSO is off, the kernel would cut them in software, which needs its own TCP: the
    image's kernel may have none. So TSO off, or no virtio-net header: no super-frames."""
    require("ethtool")
    with netns.call_inside(lambda: PacketNetif(OURS_DEV)) as netif:
        assert netif.segmentation  # a veth cuts TCP super-packets by default
    netns.call_inside(lambda: subprocess.run(["ethtool", "-K", OURS_DEV, "tso", "off"], check=True))
    with netns.call_inside(lambda: PacketNetif(OURS_DEV)) as netif:
        assert netif.offloads and not netif.segmentation
    with netns.call_inside(lambda: PacketNetif(OURS_DEV, offloads=False)) as netif:
        assert not netif.segmentation


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
    report = pinged_by_linux(netns, netif)
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


# Offloads: partial checksums and GSO super-packets from Linux's end.

_SOURCE, _DESTINATION = parse_address("10.1.0.1"), parse_address("10.1.0.2")
_FRAME_HEADER = ethernet.header(b"\x02" * 6, b"\x04" * 6, ethernet.IPV4)
_L4_START = ethernet.HEADER_LEN + ipv4.HEADER_LEN  # where csum_start points
_UDP_CHECK, _TCP_CHECK = 6, 16  # csum_offset: the checksum field in each header


def _frame(protocol: int, segment: bytes) -> bytes:
    packet = ipv4.build(_SOURCE, _DESTINATION, protocol, segment, ident=1)
    return _FRAME_HEADER + packet


def _udp_frame(payload: bytes) -> bytes:
    return _frame(ipv4.UDP, udp.build(_SOURCE, _DESTINATION, 4000, 5000, payload))


def _tcp_frame(payload: bytes) -> bytes:
    segment = build_segment(_SOURCE, _DESTINATION, 4000, 5000, 1, 2, ACK | PSH, 512, b"", payload)
    return _frame(ipv4.TCP, segment)


def _partial(frame: bytes, check_offset: int) -> bytearray:
    """The frame as a NIC with checksum offload gets it: the checksum field holding the
    pseudo-header's folded sum (Linux's ~tcp_v4_check(len, saddr, daddr, 0)), not its own."""
    partial = bytearray(frame)
    protocol = partial[ethernet.HEADER_LEN + 9]
    total = ipv4.pseudo_header_sum(_SOURCE, _DESTINATION, protocol, len(frame) - _L4_START)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    position = _L4_START + check_offset
    partial[position : position + 2] = total.to_bytes(2, "big")
    return partial


@pytest.mark.parametrize(
    ("frame", "check_offset"),
    [
        (_udp_frame(b"unibench" * 100), _UDP_CHECK),
        (_udp_frame(b"odd"), _UDP_CHECK),
        (_tcp_frame(os.urandom(1460)), _TCP_CHECK),
        (_tcp_frame(os.urandom(20_001)), _TCP_CHECK),  # a super-packet's size, odd
    ],
    ids=["udp", "udp-odd-length", "tcp", "tcp-gso-size"],
)
def test_a_partial_checksum_is_finished_as_linux_would(frame: bytes, check_offset: int) -> None:
    partial = _partial(frame, check_offset)
    assert partial != frame
    assert complete_checksum(memoryview(partial), _L4_START, check_offset)
    assert partial == frame  # the checksum the stack's own builders compute


def test_a_partial_checksum_that_sums_to_zero_goes_out_as_ffff() -> None:
    # Pick the last two payload bytes so that the whole datagram sums to 0xFFFF: its
    # checksum computes as 0, which UDP would read as "none" (RFC 768): 0xFFFF instead.
    blank = _udp_frame(b"unibench" + b"\0\0")
    view = memoryview(blank)[_L4_START:]
    pseudo = ipv4.pseudo_header_sum(_SOURCE, _DESTINATION, ipv4.UDP, len(view))
    filler = ipv4.checksum(bytes(view[:6]) + b"\0\0" + bytes(view[8:]), pseudo)
    frame = _udp_frame(b"unibench" + filler.to_bytes(2, "big"))
    assert frame[_L4_START + 6 : _L4_START + 8] == b"\xff\xff"  # udp.build does the same
    partial = _partial(frame, _UDP_CHECK)
    assert complete_checksum(memoryview(partial), _L4_START, _UDP_CHECK)
    assert partial == frame


def test_a_checksum_offset_outside_the_frame_is_refused() -> None:
    frame = bytearray(_udp_frame(b"x"))
    assert not complete_checksum(memoryview(frame), _L4_START, len(frame) - _L4_START - 1)
    assert frame == _udp_frame(b"x")


def _udp_super_frame(payload: bytes, ident: int) -> bytes:
    """A UDP super-packet as Linux's UDP_SEGMENT makes one: IP and UDP lengths over the whole,
    a partial checksum."""
    length = udp.HEADER_LEN + len(payload)
    segment = struct.pack("!HHHH", 4000, 5000, length, 0) + payload
    header = ipv4.build_header(_SOURCE, _DESTINATION, ipv4.UDP, length, ident, dont_fragment=True)
    return _partial(_FRAME_HEADER + header + segment, _UDP_CHECK)


def test_a_udp_super_packet_is_cut_back_into_its_datagrams() -> None:
    payload = os.urandom(2500)
    datagrams = split_udp(memoryview(_udp_super_frame(payload, 0xFFFF)), 1000)
    assert datagrams is not None
    expected = []
    for index, piece in enumerate((payload[:1000], payload[1000:2000], payload[2000:])):
        segment = udp.build(_SOURCE, _DESTINATION, 4000, 5000, piece)
        ident = (0xFFFF + index) & 0xFFFF  # numbered on from the super-packet's, wrapping
        header = ipv4.build_header(
            _SOURCE, _DESTINATION, ipv4.UDP, len(segment), ident, dont_fragment=True
        )
        expected.append(_FRAME_HEADER + header + segment)
    assert datagrams == expected
    # What is not a UDP super-packet in an IPv4 frame is refused.
    assert split_udp(memoryview(_tcp_frame(payload)), 1000) is None
    assert split_udp(memoryview(_udp_super_frame(payload, 1)[:100]), 1000) is None
    assert split_udp(memoryview(_udp_super_frame(payload, 1)), 0) is None


def test_partial_checksums_from_a_packet_socket_are_finished_or_vouched_for(
    offloading_netns: Netns, offloading_netif: PacketNetif
) -> None:
    """Linux's end sends hand-made frames through a packet socket with the virtio-net
    header, asking for the checksum to be finished: the veth passes that on to our end. UDP's
    is finished here; TCP's is vouched for, left as it is for TCP not to check."""
    netif = offloading_netif
    frames = [_udp_frame(os.urandom(1000)), _tcp_frame(os.urandom(1400))]
    frames = [netif.mac + frame[6:] for frame in frames]  # to us
    sender = offloading_netns.call_inside(
        lambda: _socket.socket(_socket.AF_PACKET, _socket.SOCK_RAW, 0)
    )
    try:
        sender.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
        sender.bind((LINUX_DEV, 0))
        for frame, check_offset in zip(frames, (_UDP_CHECK, _TCP_CHECK), strict=True):
            header = VNET_HDR.pack(NEEDS_CSUM, GSO_NONE, 0, 0, _L4_START, check_offset)
            sender.send(header + _partial(frame, check_offset))
        received = _read_frames(netif, 0.3, lambda frame: frame[12:14] == b"\x08\x00")
    finally:
        sender.close()
    assert received == [frames[0], _partial(frames[1], _TCP_CHECK)]
    assert netif.received.partial_checksums == 1 and netif.received.vouched_segments == 1
    assert netif.received.super_packets == netif.received.drops == 0


def _read_frames(
    netif: PacketNetif, seconds: float, wanted: Callable[[bytes], bool]
) -> list[bytes]:
    frames: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frames += [bytes(frame) for frame in netif.read_batch(16) if wanted(bytes(frame))]
        time.sleep(0.01)
    return frames


SIZE = 1 << 20
TRANSFER_TIMEOUT = 8.0


async def _wait_tcp_listener(netns: Netns, port: int, timeout: float = 5.0) -> None:
    with fail_after(timeout):
        while not (await netns.output(["ss", "-H", "-t", "-l", "-n", f"sport = :{port}"])):
            await sleep(0.02)


async def _receive_all(sock: TcpSocket) -> bytes:
    chunks = []
    while chunk := await sock.recv(65536, timeout=TRANSFER_TIMEOUT):
        chunks.append(chunk)
    return b"".join(chunks)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_we_receive_a_megabyte_from_linux_with_offloads_on(
    offloading_netns: Netns, offloading_netif: PacketNetif
) -> None:
    """Linux's TCP over a veth with TSO: super-packets with partial checksums, taken whole."""
    require("nc", "ss")
    netns, netif = offloading_netns, offloading_netif
    payload = os.urandom(SIZE)
    received, stats = receive_from_linux(netns, netif, payload)
    assert len(received) == SIZE and _sha(received) == _sha(payload)
    assert stats["dropped_malformed"] == 0, stats
    print(
        f"\nfrom Linux: {netif.received.super_packets} GSO packets, "
        f"{netif.received.vouched_segments} vouched checksums, {stats['segments_in']} "
        f"segments; {netif.oversize_drops} oversize, {netif.received.drops} offload drops"
    )
    assert netif.received.super_packets > 0 and netif.received.vouched_segments > 0
    assert netif.oversize_drops == netif.received.drops == 0


def test_we_send_a_megabyte_to_linux_with_offloads_on(
    offloading_netns: Netns, offloading_netif: PacketNetif
) -> None:
    """Our frames go out behind an all-zero virtio-net header; Linux's ACKs come back with
    partial checksums."""
    require("nc", "ss")
    netns, netif = offloading_netns, offloading_netif
    payload = os.urandom(SIZE)
    received, stats = send_to_linux(netns, netif, payload)
    assert len(received) == SIZE and _sha(received) == _sha(payload)
    assert stats["dropped_malformed"] == 0 and netif.write_errors == 0, stats
    print(f"\nACKs from Linux: {netif.received.vouched_segments} vouched checksums")
    assert netif.received.vouched_segments > 0


@pytest.mark.parametrize("size", [1000, 4000], ids=["one-frame", "fragmented"])
def test_netcat_talks_to_our_udp_echo_server_with_offloads_on(
    offloading_netns: Netns, offloading_netif: PacketNetif, size: int
) -> None:
    """Linux leaves a datagram's checksum to the veth; one it fragments it finishes itself."""
    require("nc")
    payload = os.urandom(size)

    async def body(interface: Interface) -> bytes:
        server = spawn(echo_server, interface, 7)
        try:
            client = offloading_netns.spawn(["nc", "-u", OURS, "7"], stdin=payload)
            echoed = await client.wait_output(len(payload), timeout=5)
            client.kill()
        finally:
            server.cancel()
        return echoed

    assert on_stack(offloading_netif, f"{OURS}/24", body) == payload
    assert offloading_netif.received.partial_checksums == (1 if size == 1000 else 0)


def test_a_udp_segmenting_sender_is_heard_datagram_by_datagram(
    offloading_netns: Netns, offloading_netif: PacketNetif
) -> None:
    """Linux sends one super-packet of UDP datagrams (UDP_SEGMENT) down the veth; our echo
    server must see, and answer, each datagram on its own."""
    sender = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_UDP, 103, 1000)  # UDP_SEGMENT: datagrams of 1000 bytes
sock.settimeout(5)
sock.sendto(bytes(range(256)) * 14, (sys.argv[1], 7))  # 3584 bytes: 4 datagrams
for _ in range(4):
    sys.stdout.buffer.write(len(sock.recv(65536)).to_bytes(2, "big"))
"""

    async def body(interface: Interface) -> tuple[int, bytes, str]:
        server = spawn(echo_server, interface, 7)
        try:
            client = offloading_netns.spawn([sys.executable, "-c", sender, OURS])
            status = await client.wait(timeout=8)
        finally:
            server.cancel()
        return status, client.output(), client.errors()

    status, lengths, errors = on_stack(offloading_netif, f"{OURS}/24", body)
    assert status == 0, errors
    assert lengths == b"".join(n.to_bytes(2, "big") for n in (1000, 1000, 1000, 584))
    assert offloading_netif.received.super_packets == 1 and offloading_netif.received.drops == 0


def receive_from_linux(netns: Netns, netif: Netif, payload: bytes) -> tuple[bytes, dict[str, int]]:
    """`payload` from Linux's nc, over TCP on our stack on `netif`: what arrived, and our TCP
    layer's counters."""

    async def body(interface: Interface) -> tuple[int, bytes, str, dict[str, int]]:
        tcp = attach_tcp(interface)
        server = netns.spawn(["nc", "-N", "-l", LINUX, "9001"], stdin=payload)
        await _wait_tcp_listener(netns, 9001)
        sock = await tcp.connect(parse_address(LINUX), 9001, timeout=5)
        received = await _receive_all(sock)
        sock.close()
        status = await server.wait(timeout=5)
        return status, received, server.errors(), tcp.layer.stats

    status, received, errors, stats = on_stack(netif, f"{OURS}/24", body, timeout=30)
    assert status == 0, errors
    return received, stats


def send_to_linux(netns: Netns, netif: Netif, payload: bytes) -> tuple[bytes, dict[str, int]]:
    """`payload` to Linux's nc, over TCP on our stack on `netif`: what nc got, and our TCP
    layer's counters."""

    async def body(interface: Interface) -> tuple[int, bytes, str, dict[str, int]]:
        tcp = attach_tcp(interface)
        server = netns.spawn(["nc", "-l", LINUX, "9000"])
        await _wait_tcp_listener(netns, 9000)
        sock = await tcp.connect(parse_address(LINUX), 9000, timeout=5)
        await sock.send(payload, timeout=TRANSFER_TIMEOUT)
        sock.close()
        await sock.drain(timeout=TRANSFER_TIMEOUT)
        status = await server.wait(timeout=5)  # nc exits on our FIN
        return status, server.output(), server.errors(), tcp.layer.stats

    status, received, errors, stats = on_stack(netif, f"{OURS}/24", body, timeout=30)
    assert status == 0, errors
    return received, stats


def pinged_by_linux(netns: Netns, netif: Netif) -> str:
    """Linux's ping of our stack on `netif`, five answers asserted: its report."""
    require("ping")

    async def body(interface: Interface) -> tuple[int, str]:
        pinger = netns.spawn(["ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", OURS])
        status = await pinger.wait(timeout=10)
        return status, pinger.output().decode()

    status, report = on_stack(netif, f"{OURS}/24", body)
    assert status == 0, report
    assert "5 received" in report and "wrong data" not in report
    return report
