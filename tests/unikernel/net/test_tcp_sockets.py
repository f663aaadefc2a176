"""Blocking sockets for cooperative threads, over two engines joined in memory.

Each segment on the wire is a thread that sleeps the link delay, then hands the segment to the
other stack; the scheduler runs on a FakeClock, so timeouts and sleeps take no real time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.support.tcp_wire import A_IP, B_IP, seeded
from unikernel.core.clock import FakeClock
from unikernel.core.scheduler import now, run, sleep, spawn
from unikernel.net.tcp import CLOSED, TcpConfig, TcpLayer
from unikernel.net.tcp_sockets import TcpSocket, TcpSockets


class ThreadWire:
    """Stack `a` at A_IP and stack `b` at B_IP; `loss` of the segments vanish."""

    def __init__(
        self,
        *,
        seed: int = 0,
        loss: float = 0.0,
        delay: float = 0.005,
        config_b: TcpConfig | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.delay = delay
        self.a = TcpSockets(TcpLayer(seeded(seed + 1), None, A_IP), self._sender(lambda: self.b))
        self.b = TcpSockets(
            TcpLayer(seeded(seed + 2), config_b, B_IP), self._sender(lambda: self.a)
        )

    def _sender(self, other: Callable[[], TcpSockets]) -> Callable[[bytes, bytes, bytes], None]:
        def send(destination: bytes, source: bytes, segment: bytes) -> None:
            if self.rng.random() >= self.loss:
                spawn(self._deliver, other(), source, destination, segment)

        return send

    async def _deliver(
        self, to: TcpSockets, source: bytes, destination: bytes, data: bytes
    ) -> None:
        await sleep(self.delay)
        to.input(source, destination, data)


def fake_run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run(main, clock=FakeClock())


async def echo_server(wire: ThreadWire, port: int) -> None:
    listener = wire.b.listen(port)
    conn = await listener.accept()
    while data := await conn.recv(4096):
        await conn.send(data)
    conn.close()


def test_an_echo_through_a_lossy_wire() -> None:
    wire = ThreadWire(seed=5, loss=0.03)
    payload = bytes(range(256)) * 400

    async def main() -> bytes:
        server = spawn(echo_server, wire, 7)
        conn = await wire.a.connect(B_IP, 7, timeout=5)
        assert conn.remote == (B_IP, 7) and conn.local[0] == A_IP

        async def reader() -> bytes:
            chunks = []
            while chunk := await conn.recv(10_000):
                assert len(chunk) <= 10_000
                chunks.append(chunk)
            return b"".join(chunks)

        echoed = spawn(reader)
        await conn.send(payload)
        conn.shutdown()
        data = await echoed.join()
        await server.join()
        conn.close()
        return data

    assert fake_run(main) == payload


def test_connecting_to_a_closed_port_is_refused() -> None:
    wire = ThreadWire()

    async def main() -> None:
        wire.b.listen(80)  # a different port listens
        with pytest.raises(ConnectionRefusedError):
            await wire.a.connect(B_IP, 81)

    fake_run(main)


def test_connect_times_out_on_a_black_hole_and_leaves_nothing_behind() -> None:
    wire = ThreadWire(loss=1.0)

    async def main() -> float:
        with pytest.raises(TimeoutError):
            await wire.a.connect(B_IP, 80, timeout=2.5)
        assert len(wire.a.layer) == 0
        return now()

    assert fake_run(main) == 2.5


def test_recv_times_out_and_the_connection_survives() -> None:
    wire = ThreadWire()

    async def late_sender() -> None:
        listener = wire.b.listen(80)
        conn = await listener.accept()
        await sleep(10)
        await conn.send(b"finally")
        conn.close()

    async def main() -> tuple[bytes, float]:
        spawn(late_sender)
        conn = await wire.a.connect(B_IP, 80)
        with pytest.raises(TimeoutError):
            await conn.recv(timeout=1.0)
        data = await conn.recv(timeout=60)
        assert await conn.recv() == b""
        return data, now()

    data, when = fake_run(main)
    assert data == b"finally" and 10 < when < 10.1


def test_send_waits_while_the_peer_does_not_read() -> None:
    wire = ThreadWire(config_b=TcpConfig(recv_buffer=32 * 1024))
    size = 1_000_000

    async def slow_reader(done: list[bytes]) -> None:
        listener = wire.b.listen(80)
        conn = await listener.accept()
        await sleep(10)
        chunks = []
        while chunk := await conn.recv():
            chunks.append(chunk)
        done.append(b"".join(chunks))

    async def main() -> tuple[float, bytes]:
        done: list[bytes] = []
        reader = spawn(slow_reader, done)
        conn = await wire.a.connect(B_IP, 80)
        await conn.send(bytes(size))  # more than both buffers: must wait for the reader
        sent_at = now()
        await conn.drain(timeout=30)
        assert conn.connection.unacked == 0
        conn.close()
        await reader.join()
        return sent_at, done[0]

    sent_at, received = fake_run(main)
    assert sent_at > 10 and received == bytes(size)


def test_a_reset_reaches_the_reader() -> None:
    wire = ThreadWire()

    async def resetter() -> None:
        listener = wire.b.listen(80)
        conn = await listener.accept()
        await sleep(1)
        conn.abort()

    async def main() -> None:
        spawn(resetter)
        conn = await wire.a.connect(B_IP, 80)
        with pytest.raises(ConnectionResetError):
            await conn.recv(timeout=5)
        with pytest.raises(ConnectionResetError):
            await conn.send(b"x")
        assert conn.connection.state == CLOSED

    fake_run(main)


def test_accept_serves_several_clients_and_fails_once_closed() -> None:
    wire = ThreadWire()

    async def client(i: int) -> bytes:
        conn = await wire.a.connect(B_IP, 80)
        await conn.send(b"client %d" % i)
        reply = await conn.recv()
        conn.close()
        return reply

    async def main() -> list[bytes]:
        listener = wire.b.listen(80, backlog=8)
        clients = [spawn(client, i) for i in range(5)]
        served: list[TcpSocket] = []
        for _ in range(5):
            conn = await listener.accept(timeout=5)
            served.append(conn)
            await conn.send((await conn.recv()).upper())
        replies = [await c.join() for c in clients]
        listener.close()
        with pytest.raises(OSError):
            await listener.accept()
        for conn in served:
            conn.close()
        return replies

    assert sorted(fake_run(main)) == [b"CLIENT %d" % i for i in range(5)]


def test_a_retransmission_timer_fires_without_any_traffic() -> None:
    # Only the timer thread can notice the loss here: nothing else would wake the engine.
    wire = ThreadWire()
    dropped: list[float] = []
    send_a = wire.a._send

    def lose_first_data(destination: bytes, source: bytes, segment: bytes) -> None:
        if len(segment) > 40 and not dropped:
            dropped.append(now())
            return
        send_a(destination, source, segment)

    wire.a._send = lose_first_data

    async def main() -> tuple[bytes, float]:
        listener = wire.b.listen(80)
        conn = await wire.a.connect(B_IP, 80)
        server = await listener.accept()
        await conn.send(b"once more")
        data = await server.recv(timeout=10)
        return data, now()

    data, when = fake_run(main)
    assert (
        data == b"once more" and dropped and when - dropped[0] == pytest.approx(0.2 + 0.005)
    )  # RTO floor, one trip
