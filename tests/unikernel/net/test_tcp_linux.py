"""Our TCP against Linux's, over a TAP device: 1 MB each way with netcat, and an HTTP GET.

The namespace, the TAP device and our stack come from test_linux_interop's fixtures; TCP is
wired to the stack as tcp_sockets' docstring shows. Every transfer is checked byte for byte
(SHA-256), and its throughput printed (run with -s to see it). Linux's side of a TAP device
has no offloads (no IFF_VNET_HDR), so every segment we receive must fit our MSS and carry a
correct checksum: both are checked.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.linux_peer import (
    LINUX,
    OURS,
    TEST_TIMEOUT,
    netns,
    offloading_tap,
    on_stack,
    tap,
)
from tests.support.netns import Netns, require
from unikernel.core.entropy import random_u32
from unikernel.core.scheduler import fail_after, now, sleep, spawn
from unikernel.drivers import Netif
from unikernel.drivers.tap import TapNetif
from unikernel.net.interface import Interface
from unikernel.net.ipv4 import parse_address
from unikernel.net.tcp import TcpConfig, TcpLayer
from unikernel.net.tcp_sockets import TcpSocket, TcpSockets

__all__ = ["netns", "offloading_tap", "tap"]  # the fixtures, imported for pytest

T = TypeVar("T")

SIZE = 1 << 20
TRANSFER_TIMEOUT = 20.0  # for one 1 MB transfer; on_stack bounds the whole body at 30 s


@dataclass
class Tcp:
    """Our TCP on an interface, and what it received from Linux."""

    sockets: TcpSockets
    layer: TcpLayer
    interface: Interface
    largest_segment: int = 0


def tcp_on(interface: Interface) -> Tcp:
    stack = interface.stack
    address = stack.address
    assert address is not None
    layer = TcpLayer(
        random_u32, TcpConfig(mtu=stack.mtu, segmentation=stack.segmentation), local_ip=address
    )

    def send(destination: bytes, source: bytes, segment: bytes) -> None:
        ip_send(destination, segment, now())
        interface.flush()

    tcp = Tcp(TcpSockets(layer, send=send), layer, interface)

    def receive(
        source: bytes, destination: bytes, segment: memoryview, at: float, vouched: bool
    ) -> None:
        tcp.largest_segment = max(tcp.largest_segment, len(segment))
        tcp.sockets.input(source, destination, segment, at, vouched)

    ip_send = stack.register_protocol(
        6, receive, tick=tcp.sockets.tick, next_deadline=layer.next_deadline
    )
    return tcp


def on_tcp(
    tap: Netif,
    body: Callable[[Tcp], Coroutine[Any, Any, T]],
    timeout: float = TEST_TIMEOUT,
) -> T:
    """body(tcp) on our stack at OURS, bounded at `timeout` seconds; then check that Linux
    sent nothing we could not take."""
    seen: list[Tcp] = []

    async def wired(interface: Interface) -> T:
        tcp = tcp_on(interface)
        seen.append(tcp)
        return await body(tcp)

    result = on_stack(tap, f"{OURS}/24", wired, timeout)
    (tcp,) = seen
    if not tap.segmentation:  # no super-packets (segments over our MSS) from Linux then
        assert tcp.largest_segment <= tap.mtu - 20, tcp.largest_segment
    # No checksum we could not verify (a partial one left unfinished) either way.
    assert tcp.layer.stats["dropped_malformed"] == 0, tcp.layer.stats
    print(f"\nlargest segment from Linux: {tcp.largest_segment} bytes; {tcp.layer.stats}")
    return result


def report(what: str, seconds: float) -> None:
    print(f"\n{what}: {SIZE / seconds / 1e6:.2f} MB/s ({SIZE} bytes in {seconds:.3f} s)")


async def wait_tcp_listener(netns: Netns, port: int, timeout: float = 5.0) -> None:
    """Until a TCP socket in the namespace listens on `port`."""
    with fail_after(timeout):
        while not (await netns.output(["ss", "-H", "-t", "-l", "-n", f"sport = :{port}"])):
            await sleep(0.02)


async def receive_all(sock: TcpSocket) -> bytes:
    """Everything until the peer's FIN."""
    chunks = []
    while chunk := await sock.recv(65536, timeout=TRANSFER_TIMEOUT):
        chunks.append(chunk)
    return b"".join(chunks)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def payload(netns: Netns) -> bytes:
    require("nc", "ss")
    return os.urandom(SIZE)


def test_netcat_sends_a_megabyte_through_our_echo_server(
    netns: Netns, tap: TapNetif, payload: bytes
) -> None:
    # nc -N: a FIN once its input is sent; it exits once we have echoed all and closed too.
    async def body(tcp: Tcp) -> tuple[int, bytes, str, float]:
        listener = tcp.sockets.listen(8080)

        async def echo() -> None:
            sock = await listener.accept(timeout=5)
            while data := await sock.recv(65536, timeout=TRANSFER_TIMEOUT):
                await sock.send(data, timeout=TRANSFER_TIMEOUT)
            sock.close()
            await sock.drain(timeout=5)

        server = spawn(echo)
        started = time.perf_counter()
        client = netns.spawn(["nc", "-N", "-w", "10", OURS, "8080"], stdin=payload)
        try:
            status = await client.wait(timeout=TRANSFER_TIMEOUT)
            elapsed = time.perf_counter() - started
            await server.join()
        finally:
            server.cancel()
            listener.close()
        return status, client.output(), client.errors(), elapsed

    status, echoed, errors, elapsed = on_tcp(tap, body)
    assert status == 0, errors
    assert len(echoed) == SIZE and sha(echoed) == sha(payload)
    report("Linux -> us -> Linux, echoed", elapsed)


def send_to_netcat(netns: Netns, tap: TapNetif, payload: bytes) -> tuple[float, Tcp]:
    """Send `payload` to a netcat listener in the namespace, checked byte for byte; the
    seconds it took, and our TCP."""

    async def body(tcp: Tcp) -> tuple[int, bytes, str, float]:
        server = netns.spawn(["nc", "-l", LINUX, "9000"])
        await wait_tcp_listener(netns, 9000)
        started = time.perf_counter()
        sock = await tcp.sockets.connect(parse_address(LINUX), 9000, timeout=5)
        await sock.send(payload, timeout=TRANSFER_TIMEOUT)
        sock.close()
        await sock.drain(timeout=TRANSFER_TIMEOUT)
        elapsed = time.perf_counter() - started
        status = await server.wait(timeout=5)  # nc exits on our FIN
        return status, server.output(), server.errors(), elapsed

    used: list[Tcp] = []

    async def recorded(tcp: Tcp) -> tuple[int, bytes, str, float]:
        used.append(tcp)
        return await body(tcp)

    status, received, errors, elapsed = on_tcp(tap, recorded)
    assert status == 0, errors
    assert len(received) == SIZE and sha(received) == sha(payload)
    return elapsed, used[0]


def test_we_send_a_megabyte_to_a_netcat_listener(
    netns: Netns, tap: TapNetif, payload: bytes
) -> None:
    elapsed, tcp = send_to_netcat(netns, tap, payload)
    assert tcp.interface.stack.super_frames_sent == 0  # a link without offloads: none
    report("us -> Linux", elapsed)


def receive_from_netcat(netns: Netns, tap: TapNetif, payload: bytes) -> float:
    """Receive `payload` from a netcat server in the namespace, checked byte for byte; the
    seconds it took."""

    # nc -N: a FIN after its input; it exits once we have closed too.
    async def body(tcp: Tcp) -> tuple[int, bytes, str, float]:
        server = netns.spawn(["nc", "-N", "-l", LINUX, "9001"], stdin=payload)
        await wait_tcp_listener(netns, 9001)
        started = time.perf_counter()
        sock = await tcp.sockets.connect(parse_address(LINUX), 9001, timeout=5)
        received = await receive_all(sock)
        elapsed = time.perf_counter() - started
        sock.close()
        status = await server.wait(timeout=5)
        return status, received, server.errors(), elapsed

    status, received, errors, elapsed = on_tcp(tap, body)
    assert status == 0, errors
    assert len(received) == SIZE and sha(received) == sha(payload)
    return elapsed


def test_we_receive_a_megabyte_from_a_netcat_server(
    netns: Netns, tap: TapNetif, payload: bytes
) -> None:
    report("Linux -> us", receive_from_netcat(netns, tap, payload))


def test_we_get_a_file_from_pythons_http_server(
    netns: Netns, tap: TapNetif, tmp_path: Path
) -> None:
    require("python3", "ss")
    body_bytes = os.urandom(100_000)
    (tmp_path / "blob.bin").write_bytes(body_bytes)

    async def body(tcp: Tcp) -> bytes:
        netns.spawn(
            ["python3", "-m", "http.server", "8000", "--bind", LINUX, "--directory", str(tmp_path)]
        )
        await wait_tcp_listener(netns, 8000, timeout=10)
        sock = await tcp.sockets.connect(parse_address(LINUX), 8000, timeout=5)
        request = f"GET /blob.bin HTTP/1.0\r\nHost: {LINUX}:8000\r\nUser-Agent: unibench\r\n\r\n"
        await sock.send(request.encode(), timeout=5)
        response = await receive_all(sock)  # HTTP/1.0: the server closes after the body
        sock.close()
        return response

    response = on_tcp(tap, body)
    head, separator, content = response.partition(b"\r\n\r\n")
    assert separator, response[:200]
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.0 200"), status_line
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    assert headers["content-length"] == str(len(body_bytes))
    assert content == body_bytes


async def read_head(sock: TcpSocket) -> tuple[bytes, bytes]:
    """An HTTP request's head (up to its blank line) and what followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await sock.recv(65536, timeout=TRANSFER_TIMEOUT)
        assert chunk, f"the client closed in its request head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def header_fields(head: bytes) -> dict[str, str]:
    _, *lines = head.decode("latin-1").split("\r\n")
    return {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }


def response_head(length: int) -> bytes:
    return (
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def test_curl_gets_a_megabyte_from_our_http_responder(
    netns: Netns, tap: TapNetif, payload: bytes
) -> None:
    require("curl")

    async def body(tcp: Tcp) -> tuple[int, bytes, str, bytes]:
        listener = tcp.sockets.listen(8080)

        async def serve() -> bytes:
            sock = await listener.accept(timeout=5)
            head, _ = await read_head(sock)
            await sock.send(response_head(len(payload)), timeout=5)
            await sock.send(payload, timeout=TRANSFER_TIMEOUT)
            sock.close()
            await sock.drain(timeout=TRANSFER_TIMEOUT)
            return head

        server = spawn(serve)
        url = f"http://{OURS}:8080/blob.bin"
        client = netns.spawn(["curl", "-sS", "--fail", "--max-time", "20", "-o", "-", url])
        try:
            status = await client.wait(timeout=TRANSFER_TIMEOUT)
            head = await server.join()
        finally:
            server.cancel()
            listener.close()
        return status, client.output(), client.errors(), head

    status, received, errors, head = on_tcp(tap, body)
    assert status == 0, errors
    assert head.startswith(b"GET /blob.bin HTTP/1.1\r\n"), head
    assert len(received) == SIZE and sha(received) == sha(payload)


def test_curl_uploads_a_megabyte_to_our_http_responder(
    netns: Netns, tap: TapNetif, payload: bytes, tmp_path: Path
) -> None:
    require("curl")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)

    async def body(tcp: Tcp) -> tuple[int, bytes, str, bytes, int]:
        listener = tcp.sockets.listen(8080)

        async def serve() -> tuple[bytes, int]:
            sock = await listener.accept(timeout=5)
            head, rest = await read_head(sock)
            fields = header_fields(head)
            length = int(fields["content-length"])
            if fields.get("expect", "").lower() == "100-continue":
                await sock.send(b"HTTP/1.1 100 Continue\r\n\r\n", timeout=5)
            digest = hashlib.sha256(rest)
            got = len(rest)
            while got < length and (chunk := await sock.recv(65536, timeout=TRANSFER_TIMEOUT)):
                digest.update(chunk)
                got += len(chunk)
            answer = digest.hexdigest().encode()  # the body of our reply: what we received
            await sock.send(response_head(len(answer)) + answer, timeout=5)
            sock.close()
            await sock.drain(timeout=5)
            return head, got

        server = spawn(serve)
        url = f"http://{OURS}:8080/upload"
        client = netns.spawn(
            [
                "curl", "-sS", "--fail", "--max-time", "20",
                "-H", "Content-Type: application/octet-stream",
                "--data-binary", f"@{upload}", url,
            ]
        )  # fmt: skip
        try:
            status = await client.wait(timeout=TRANSFER_TIMEOUT)
            head, got = await server.join()
        finally:
            server.cancel()
            listener.close()
        return status, client.output(), client.errors(), head, got

    status, answer, errors, head, got = on_tcp(tap, body)
    assert status == 0, errors
    assert head.startswith(b"POST /upload HTTP/1.1\r\n"), head
    assert got == SIZE
    assert answer.decode() == sha(payload)  # what we hashed is what curl sent


def test_we_receive_a_megabyte_from_linux_over_an_offloading_tap(
    netns: Netns, offloading_tap: TapNetif, payload: bytes
) -> None:
    """Linux's TCP hands us super-packets with partial checksums: taken whole, finished here."""
    tap = offloading_tap
    assert tap.segmentation  # Linux took our TUNSETOFFLOAD
    elapsed = receive_from_netcat(netns, tap, payload)
    assert tap.received.super_packets > 0 and tap.received.vouched_segments > 0
    assert tap.received.drops == tap.oversize_drops == 0
    counts = tap.counts()  # what the iperf3 appliance logs, and the tcp suite checks
    assert counts["rx_super_packets"] == tap.received.super_packets and counts["write_errors"] == 0
    report(f"Linux -> us, offloads on ({tap.received.super_packets} super-packets)", elapsed)


def test_we_send_a_megabyte_to_linux_in_segments_an_offloading_tap_cuts(
    netns: Netns, offloading_tap: TapNetif, payload: bytes
) -> None:
    """TSO: our TCP builds segments of many MSS once; Linux cuts them (or takes them whole)."""
    tap = offloading_tap
    elapsed, tcp = send_to_netcat(netns, tap, payload)
    sent = tcp.interface.stack.super_frames_sent
    assert sent > 0 and tap.write_errors == 0
    assert tcp.layer.stats["retransmits"] == 0, tcp.layer.stats
    report(f"us -> Linux, offloads on ({sent} super-frames)", elapsed)
