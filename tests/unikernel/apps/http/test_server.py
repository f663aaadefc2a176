"""The HTTP server's driver (apps/http/server.py) with the real engine, on the host kernel's
TCP (the socket mode: the same driver as on our stack), against real clients: curl, and raw
sockets for what curl will not do (pipelining, a client sending a byte at a time, garbage)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.netns import require
from unikernel.apps.http.messages import Request, Response, text_response
from unikernel.apps.http.protocol import Limits
from unikernel.apps.http.server import HttpServer
from unikernel.core.nursery import open_nursery
from unikernel.core.scheduler import run, sleep, wait_readable
from unikernel.net.host_sockets import HostNetwork

BIG = os.urandom(1 << 20) * 10  # a 10 MiB response


async def handler(request: Request) -> Response:
    if request.path == "/big":
        return Response(200, [("Content-Type", "application/octet-stream")], memoryview(BIG))
    if request.path == "/boom":
        raise RuntimeError("the handler failed")
    if request.path == "/slow":
        await sleep(0.3)
    return text_response(200, f"{request.method} {request.target} {len(request.body)}")


class Running:
    """The server on 127.0.0.1 in a thread of its own, stopped (cancelled) at the end."""

    def __init__(self, limits: Limits, max_connections: int) -> None:
        self.network = HostNetwork("127.0.0.1")
        self.server = HttpServer(
            self.network, handler, 0, limits=limits, max_connections=max_connections
        )
        self.port = self.server.listen().port
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=run, args=(self._main,))
        self._thread.start()

    async def _main(self) -> None:
        async with open_nursery() as nursery:
            nursery.spawn(self.server.serve)
            await wait_readable(self._stop_read)
            nursery.cancel()

    def stop(self) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join(10)
        assert not self._thread.is_alive()
        os.close(self._stop_read)
        os.close(self._stop_write)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Running]:
    limits, bound = getattr(request, "param", (Limits(request_timeout=1.0, idle_timeout=5.0), 64))
    running = Running(limits, bound)
    try:
        yield running
    finally:
        running.stop()


def curl(port: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    require("curl")
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        check=False,
        cwd="/",
    )


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_curl_reuses_the_connection_for_several_requests(server: Running) -> None:
    url = f"http://127.0.0.1:{server.port}"
    done = curl(server.port, "-v", f"{url}/a", f"{url}/b?x=1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"GET /a 0\nGET /b?x=1 0\n"
    assert b"Re-using existing connection" in done.stderr
    assert server.server.connections == 1 and server.server.requests == 2


def test_a_post_body_and_a_chunked_one(server: Running) -> None:
    url = f"http://127.0.0.1:{server.port}/post"
    plain = curl(server.port, "--data-binary", "x" * 5000, url)
    assert plain.stdout == b"POST /post 5000\n"
    chunked = curl(
        server.port, "-H", "Transfer-Encoding: chunked", "--data-binary", "y" * 70000, url
    )
    assert chunked.stdout == b"POST /post 70000\n"


def test_pipelined_requests_are_answered_in_order(server: Running) -> None:
    requests = b"".join(
        f"GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in ("slow", "one", "two")
    )
    reply = exchange(
        server.port, requests + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    lines = reply.replace(b"\r\n", b"\n").split(b"\n")
    bodies = [line for line in lines if line.startswith(b"GET /")]
    assert bodies == [b"GET /slow 0", b"GET /one 0", b"GET /two 0", b"GET /last 0"]
    assert reply.count(b"HTTP/1.1 200 OK") == 4


def test_a_ten_mebibyte_response_arrives_whole(server: Running) -> None:
    done = curl(server.port, f"http://127.0.0.1:{server.port}/big")
    assert done.returncode == 0, done.stderr
    assert done.stdout == BIG


def test_head_has_the_length_but_no_body(server: Running) -> None:
    done = curl(server.port, "--head", f"http://127.0.0.1:{server.port}/big")
    assert b"Content-Length: 10485760" in done.stdout
    assert len(done.stdout) < 1000


def test_malformed_requests_get_4xx_and_the_server_goes_on(server: Running) -> None:
    cases = {
        b"GARBAGE\r\n\r\n": b"400",
        b"GET / HTTP/1.1\r\n\r\n": b"400",  # no Host
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n": b"505",
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n": b"414",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: y\r\n" * 200 + b"\r\n": b"431",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n": b"413",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n": b"501",
    }
    for request, status in cases.items():
        reply = exchange(server.port, request)
        assert reply.startswith(b"HTTP/1.1 " + status), (request[:40], reply[:80])
        assert b"Connection: close" in reply
    assert curl(server.port, f"http://127.0.0.1:{server.port}/still").stdout == b"GET /still 0\n"
    assert server.server.rejected == len(cases)


def test_a_failing_handler_gets_500_and_others_are_served(server: Running) -> None:
    url = f"http://127.0.0.1:{server.port}"
    done = curl(server.port, "--write-out", "%{http_code}", "-o", "/dev/null", f"{url}/boom")
    assert done.stdout == b"500"
    assert curl(server.port, f"{url}/fine").stdout == b"GET /fine 0\n"
    assert server.server.errors == 1


def test_a_client_sending_a_byte_at_a_time_times_out_while_others_are_served(
    server: Running,
) -> None:
    """request_timeout is 1 s here: the slow client's request never completes in time."""
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    request = b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 50
    served_meanwhile = 0
    start = time.monotonic()
    try:
        for byte in request:
            try:
                slow.send(bytes([byte]))
            except OSError:
                break  # the server has closed it
            done = curl(server.port, f"http://127.0.0.1:{server.port}/other")
            served_meanwhile += done.stdout == b"GET /other 0\n"
            time.sleep(0.05)
            if time.monotonic() - start > 3:
                break
        reply = b""
        while chunk := slow.recv(4096):
            reply += chunk
    finally:
        slow.close()
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert served_meanwhile >= 5
    assert server.server.timed_out >= 1


@pytest.mark.parametrize("server", [(Limits(), 2)], indirect=True)
def test_beyond_the_connection_bound_a_client_gets_503(server: Running) -> None:
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted
        reply = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503 "), reply[:80]
        assert server.server.refused == 1
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)  # their threads see them closed
    assert curl(server.port, f"http://127.0.0.1:{server.port}/after").stdout == b"GET /after 0\n"
