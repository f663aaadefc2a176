"""Floods over the TAP link, with Linux's real clients among them: our stack must keep taking
real connections through 5,000 spoofed SYNs, and keep reassembling real fragmented pings
through a flood of fragment trains that never complete.

The floods are frames crafted with scapy and sent by a small program inside the test's network
namespace, from a packet socket on Linux's side of the TAP device, so that they reach us as
any frame from Linux does. Spoofed sources are in 198.18.0.0/15 (RFC 2544's): our answers go
to our gateway, Linux, which does not forward and drops them, as a router drops what is sent
to a host that does not exist. Real clients are Linux's own TCP (a Python program connecting
with socket.create_connection inside the namespace) and ping. Run with -s to see the figures.
"""

from __future__ import annotations

import json
import random
import re
import struct
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from tests.support.linux_peer import LINUX, OURS, TAP, TEST_TIMEOUT, netns, tap
from tests.support.netns import Netns, require
from tests.support.programs import skip_or_fail
from unikernel.core.scheduler import fail_after, run, sleep, spawn
from unikernel.drivers.tap import TapNetif
from unikernel.net.config import static
from unikernel.net.interface import Interface
from unikernel.net.sockets import ping
from unikernel.net.stack import Stack
from unikernel.net.tcp_sockets import TcpSocket

from .test_tcp_linux import Tcp, tcp_on

__all__ = ["netns", "tap"]  # the fixtures, imported for pytest

T = TypeVar("T")

PORT = 8080
SPOOFED_SYNS = 5000
SYN_RATE = 2000.0  # a second: the flood lasts 2.5 s
# Until the oldest half-open child is 0.2 s old, a full SYN queue is taken for a burst (see
# Listener): the clients start that long after the queue is full, and stop before the flood.
FLOODED_AFTER = 0.3
PINGS = 20
FRAGMENT_RATE = 2500.0  # fragments a second

# Sends frames read from standard input (each after its 2-byte length) on a packet socket
# bound to the interface argv[1], argv[2] a second; prints how many went and when.
SENDER = """
import json, socket, struct, sys, time
interface, rate = sys.argv[1], float(sys.argv[2])
data = sys.stdin.buffer.read()
frames, i = [], 0
while i < len(data):
    (size,) = struct.unpack_from("!H", data, i)
    frames.append(data[i + 2 : i + 2 + size])
    i += 2 + size
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((interface, 0))
start = time.monotonic()
sent = 0
for n, frame in enumerate(frames):
    ahead = start + n / rate - time.monotonic()
    if ahead > 0.002:
        time.sleep(ahead)
    try:
        sock.send(frame)
        sent += 1
    except OSError:
        pass
print(json.dumps({"sent": sent, "start": start, "end": time.monotonic()}))
"""

# Connects to argv[1]:argv[2] again and again for argv[3] seconds, each time sending a line and
# reading it back until the server closes; prints, for each, when it began, how long connect()
# took, and what went wrong (null if nothing did).
CLIENT = """
import json, socket, sys, time
host, port, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
until = time.monotonic() + duration
results, n = [], 0
while time.monotonic() < until:
    began = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            connected = time.monotonic() - began
            line = b"hello %d" % n
            sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            echoed = b""
            while chunk := sock.recv(100):
                echoed += chunk
        problem = None if echoed == line else "echoed %r" % echoed
    except OSError as error:
        connected, problem = None, repr(error)
    results.append([began, connected, problem])
    n += 1
print(json.dumps(results))
"""


@pytest.fixture
def scapy_layers() -> tuple[Any, Any]:
    """scapy's layers (a dev dependency); under CI, missing it fails rather than skips."""
    try:
        from scapy.layers import inet, l2
    except ImportError:
        skip_or_fail("scapy is not installed (pip install -e .[dev])")
    return inet, l2


def on_routed_stack(
    tap: TapNetif,
    body: Callable[[Tcp], Coroutine[Any, Any, T]],
    timeout: float = TEST_TIMEOUT,
) -> tuple[T, Tcp, dict[str, int]]:
    """body(tcp) on our stack at OURS with Linux as its gateway (where answers to spoofed
    addresses go), bounded at `timeout` seconds; its result, our TCP, and the stack's drops."""

    async def main() -> tuple[T, Tcp, dict[str, int]]:
        stack = Stack(tap.mac, mtu=tap.mtu, config=static(f"{OURS}/24", LINUX))
        interface = Interface(stack, tap).start()
        try:
            tcp = tcp_on(interface)
            with fail_after(timeout):
                await ping(interface, LINUX, timeout=2.0)  # Linux's MAC, before the flood
                result = await body(tcp)
        finally:
            interface.close()
        return result, tcp, stack.drop_counts()

    return run(main)


def framed(frames: list[bytes]) -> bytes:
    """Frames as SENDER reads them."""
    return b"".join(struct.pack("!H", len(frame)) + frame for frame in frames)


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def spoofed(template: bytes, n: int, tcp_fields: tuple[int, int] | None = None) -> bytes:
    """`template` (an Ethernet frame with an IPv4 packet, as scapy built it) from source
    198.18.x.y number `n`, with the IP identification `n`; for a TCP template, with these
    source port and sequence number too. Checksums are made again."""
    frame = bytearray(template)
    ip = 14
    header_len = (frame[ip] & 0x0F) * 4
    frame[ip + 4 : ip + 6] = struct.pack("!H", n & 0xFFFF)
    frame[ip + 12 : ip + 16] = bytes((198, 18 + (n >> 16 & 1), n >> 8 & 0xFF, n & 0xFF))
    frame[ip + 10 : ip + 12] = b"\0\0"
    frame[ip + 10 : ip + 12] = struct.pack("!H", internet_checksum(bytes(frame[ip : ip + 20])))
    if tcp_fields is not None:
        tcp = ip + header_len
        frame[tcp : tcp + 2] = struct.pack("!H", tcp_fields[0])
        frame[tcp + 4 : tcp + 8] = struct.pack("!I", tcp_fields[1])
        frame[tcp + 16 : tcp + 18] = b"\0\0"
        segment = bytes(frame[tcp:])
        pseudo = bytes(frame[ip + 12 : ip + 20]) + struct.pack("!BBH", 0, 6, len(segment))
        frame[tcp + 16 : tcp + 18] = struct.pack("!H", internet_checksum(pseudo + segment))
    return bytes(frame)


Options = tuple[bool, bool, int]  # timestamps, SACK, the peer's window scale


async def echo_once(sock: TcpSocket, options: list[Options]) -> None:
    """Read until the client's FIN, send it all back, close; note the options it got."""
    conn = sock.connection
    options.append((conn.timestamps, conn.sack, conn.snd_scale))
    data = b""
    while chunk := await sock.recv(timeout=5):
        data += chunk
    await sock.send(data, timeout=5)
    sock.close()


def test_linux_clients_connect_through_a_flood_of_spoofed_syns(
    netns: Netns, tap: TapNetif, scapy_layers: Any
) -> None:
    inet, l2 = scapy_layers
    syn = l2.Ether(dst=tap.mac, src=tap.kernel_mac) / inet.IP(src="198.18.0.1", dst=OURS)
    syn /= inet.TCP(
        sport=1024,
        dport=PORT,
        flags="S",
        seq=0,
        window=64240,
        options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None),
                 ("WScale", 7)],
    )  # fmt: skip
    rng = random.Random(18)
    floods = [
        spoofed(bytes(syn), n, (rng.randrange(1024, 65536), rng.getrandbits(32)))
        for n in range(SPOOFED_SYNS)
    ]

    async def body(tcp: Tcp) -> tuple[dict[str, float], list[Any], list[Options], int]:
        listener = tcp.sockets.listen(PORT)  # a backlog of 128
        options: list[Options] = []
        handlers = []

        async def serve() -> None:
            while True:
                sock = await listener.accept()
                handlers.append(spawn(echo_once, sock, options))

        server = spawn(serve)
        try:
            sender = netns.spawn(
                [sys.executable, "-c", SENDER, TAP, str(SYN_RATE)], stdin=framed(floods)
            )
            queue = tcp.layer.listener(PORT)
            assert queue is not None
            with fail_after(5):
                while queue.queued < queue.backlog:  # full of spoofed half-open children
                    await sleep(0.01)
            await sleep(FLOODED_AFTER)
            duration = SPOOFED_SYNS / SYN_RATE - FLOODED_AFTER - 0.6  # within the flood
            client = netns.spawn([sys.executable, "-c", CLIENT, OURS, str(PORT), f"{duration:.2f}"])
            assert await client.wait(timeout=15) == 0, client.errors()
            assert await sender.wait(timeout=10) == 0, sender.errors()
            table = len(tcp.layer)  # as the flood ends
            flood = json.loads(sender.output())
            results = json.loads(client.output())
            for handler in handlers:
                await handler.join()
        finally:
            server.cancel()
            for handler in handlers:
                handler.cancel()
            listener.close()
        return flood, results, options, table

    (flood, results, options, table), tcp, drops = on_routed_stack(tap, body)
    stats = tcp.layer.stats
    problems = [problem for _, _, problem in results if problem is not None]
    connects = sorted(connected for _, connected, problem in results if problem is None) or [0.0]
    span = max(results[-1][0] - results[0][0], 1e-3)
    print(
        f"\n{len(results)} connections ({len(problems)} failed) in {span:.2f} s during the "
        f"flood ({len(results) / span:.0f} a second); connect() took {1000 * connects[0]:.1f} "
        f"to {1000 * connects[-1]:.1f} ms, median {1000 * connects[len(connects) // 2]:.1f} ms;"
        f" {flood['sent']} spoofed SYNs in {flood['end'] - flood['start']:.2f} s; {stats}"
    )
    # The flood reached us, and the clients came while it was on.
    assert flood["sent"] == SPOOFED_SYNS and stats["segments_in"] >= SPOOFED_SYNS
    assert results[-1][0] < flood["end"]
    # Every real client got in at once (a dropped SYN would have cost it a second), and was
    # echoed.
    assert not problems, problems[:5]
    assert len(results) >= 20
    assert connects[-1] < 0.5, connects[-5:]
    # Their connections came from cookies, with every option Linux offered.
    assert stats["syn_cookies_sent"] >= SPOOFED_SYNS // 2
    assert stats["syn_cookies_validated"] >= len(results)
    assert stats["syn_cookies_rejected"] == stats["listen_overflows"] == 0
    assert len(options) == len(results)
    assert all(ts and sack and scale > 0 for ts, sack, scale in options), set(options)
    # State stayed bounded: the half-open children the backlog allows, nothing per cookie.
    assert table <= 128 + 8, table
    # Linux answers some of our SYN-ACKs to the spoofed addresses with (rate-limited) ICMP
    # unreachables, which our stack counts as it drops them.
    assert set(drops) <= {"ethernet.not-for-us", "ethernet.ethertype", "icmp.type"}, drops


def test_linux_pings_with_fragments_through_a_flood_of_incomplete_fragments(
    netns: Netns, tap: TapNetif, scapy_layers: Any
) -> None:
    require("ping")
    inet, l2 = scapy_layers
    # Two kinds of fragment train that never complete: a full first fragment, and a tiny one
    # near 64 KiB (which would once have been charged 64 KiB).
    echo = inet.IP(src="198.18.0.1", dst=OURS, id=1) / inet.ICMP(id=7, seq=1) / (b"x" * 3000)
    first = inet.fragment(echo, fragsize=1480)[0]
    assert first.flags == "MF" and first.frag == 0 and len(first.payload) == 1480
    far = inet.IP(src="198.18.0.1", dst=OURS, id=1, proto=1, flags="MF", frag=8180) / (b"y" * 8)
    ether = l2.Ether(dst=tap.mac, src=tap.kernel_mac)
    templates = [bytes(ether / first), bytes(ether / far)]
    floods = [spoofed(templates[n % 2], n) for n in range(int(FRAGMENT_RATE * 3.5))]

    async def body(tcp: Tcp) -> tuple[dict[str, float], int, str, bool]:
        stack = tcp.interface.stack
        reassembler = stack.reassembler
        sender = netns.spawn(
            [sys.executable, "-c", SENDER, TAP, str(FRAGMENT_RATE)], stdin=framed(floods)
        )
        before = stack.frames_received
        with fail_after(5):
            # Enough trains to fill the table (or, as it once was, the byte budget).
            while stack.frames_received - before < 2 * reassembler.max_datagrams:
                await sleep(0.01)
        pinger = netns.spawn(
            ["ping", "-n", "-c", str(PINGS), "-i", "0.1", "-W", "1", "-s", "3000", OURS]
        )
        status = await pinger.wait(timeout=10)
        still_flooding = sender.popen.poll() is None
        assert await sender.wait(timeout=10) == 0, sender.errors()
        flood = json.loads(sender.output())
        return flood, status, pinger.output().decode(), still_flooding

    (flood, status, report, still_flooding), _, drops = on_routed_stack(tap, body)
    answered = re.search(r"(\d+) received", report)
    print(
        f"\n{answered and answered.group(1)} of {PINGS} fragmented pings answered during "
        f"{flood['sent']} flood fragments in {flood['end'] - flood['start']:.2f} s; "
        f"drops {drops}"
    )
    assert flood["sent"] == len(floods) and still_flooding  # the pings went amid the flood
    assert status == 0 and f"{PINGS} received" in report, report
    assert "wrong data" not in report
    # The flood's trains were pushed out, the oldest first, rather than ours refused.
    assert drops.get("ipv4.reassembly-evicted", 0) >= len(floods) // 2, drops
    allowed = {"ethernet.not-for-us", "ethernet.ethertype", "ipv4.reassembly-evicted"}
    assert set(drops) <= allowed, drops
