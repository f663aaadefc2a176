"""Our iperf3 client against our iperf3 server, over two TCP engines joined in memory.

Each segment on the wire is a thread that sleeps the link delay, then hands the segment to the
other engine; the scheduler runs on a FakeClock, so a 1-second test and a 10-second timeout
take no real time, only the CPU time of the segments. No root, no devices.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from unikernel.apps.iperf3.client import ClientConfig, ClientResult, run_client
from unikernel.apps.iperf3.protocol import (
    COOKIE_SIZE,
    IEACCESSDENIED,
    IENUMSTREAMS,
    PeerError,
    TestParams,
    frame,
    make_cookie,
)
from unikernel.apps.iperf3.server import Iperf3Server, ServerConfig, TestReport
from unikernel.apps.iperf3.streams import StreamStats, sink
from unikernel.core.clock import FakeClock
from unikernel.core.scheduler import fail_after, now, run, sleep, spawn
from unikernel.net.ipv4 import format_address, parse_address
from unikernel.net.tcp import TcpLayer
from unikernel.net.tcp_sockets import TcpSocket, TcpSockets

T = TypeVar("T")

CLIENT_IP = parse_address("10.0.0.1")
SERVER_IP = parse_address("10.0.0.2")
SERVER = format_address(SERVER_IP)
DELAY = 0.025  # one way: 50 ms round trips keep the bytes per fake second few


class Net:
    """One side of the wire, as the client driver wants it (NetworkService's connect)."""

    def __init__(self, sockets: TcpSockets) -> None:
        self.sockets = sockets

    async def connect(self, host: str, port: int, timeout: float | None = None) -> TcpSocket:
        return await self.sockets.connect(parse_address(host), port, timeout)


class Wire:
    def __init__(self, seed: int = 0) -> None:
        rng = random.Random(seed)
        self.client = Net(
            TcpSockets(TcpLayer(lambda: rng.getrandbits(32), None, CLIENT_IP), self._to(1))
        )
        self.server = Net(
            TcpSockets(TcpLayer(lambda: rng.getrandbits(32), None, SERVER_IP), self._to(0))
        )

    def _to(self, index: int) -> Callable[[bytes, bytes, bytes], None]:
        def send(destination: bytes, source: bytes, segment: bytes) -> None:
            spawn(self._deliver, index, source, destination, segment)

        return send

    async def _deliver(self, index: int, source: bytes, destination: bytes, data: bytes) -> None:
        await sleep(DELAY)
        (self.client, self.server)[index].sockets.input(source, destination, data)


def fake_run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return run(main, clock=FakeClock())


def one_test(params: TestParams) -> tuple[ClientResult, TestReport]:
    wire = Wire()

    async def main() -> tuple[ClientResult, TestReport]:
        server = Iperf3Server(wire.server.sockets.listen(5201))
        serving = spawn(server.serve, 1)
        with fail_after(60):
            result = await run_client(wire.client, SERVER, params)
            (report,) = await serving.join()
        return result, report

    return fake_run(main)


def test_forward_with_parallel_streams_counts_every_byte_on_both_sides() -> None:
    result, report = one_test(TestParams(time=1, parallel=2))
    assert report.error is None and not report.reverse
    assert [s.id for s in result.streams] == [s.id for s in report.streams] == [1, 3]
    assert result.sent_bytes == result.received_bytes == report.bytes > 0
    assert result.server.by_id()[3].bytes == result.streams[1].bytes  # stream by stream
    assert report.peer is not None and report.peer.bytes == result.sent_bytes
    assert 1.0 <= result.seconds < 1.5  # fake seconds: a second of sending, then the drain
    assert result.sent_mbps > 0 and result.received_mbps > 0


def test_reverse_by_byte_count_sends_exactly_the_count() -> None:
    result, report = one_test(TestParams(time=0, bytes=1 << 20, parallel=3, reverse=True))
    assert report.error is None and report.reverse
    assert result.sent_bytes == result.received_bytes == report.bytes == 1 << 20
    assert result.server.sender_has_retransmits == 1


def test_forward_by_block_count() -> None:
    result, report = one_test(TestParams(time=0, blocks=5, length=1000))
    assert result.sent_bytes == result.received_bytes == report.bytes == 5000


def test_omitted_seconds_are_left_out_of_the_counts() -> None:
    result, report = one_test(TestParams(time=1, omit=1))
    (stream,) = result.streams
    assert stream.omitted > 0 and stream.bytes > 0
    assert report.streams[0].omitted > 0
    assert 2.0 <= result.seconds < 2.5


def test_a_sink_counts_every_byte_it_discards_and_sees_the_end() -> None:
    """The receiving stream counts without copying (TcpSocket.discard): exactly the bytes
    sent, those before `omit_until` apart, and the peer's close as the end."""
    early, late = [70_001, 1, 1447], [300_000, 5, 65_536]
    wire = Wire()

    async def main() -> StreamStats:
        listener = wire.server.sockets.listen(5300)
        client = await wire.client.connect(SERVER, 5300, timeout=5)
        stats = StreamStats(1, await listener.accept(timeout=5), sender=False)
        sinking = spawn(sink, stats, now() + 0.5, now() + 30)
        for size in early:
            await client.send(bytes(size), timeout=5)
        await sleep(1)
        for size in late:
            await client.send(bytes(size), timeout=5)
        client.close()
        await sinking.join()
        return stats

    stats = fake_run(main)
    assert stats.error is None and stats.eof
    assert (stats.omitted, stats.bytes) == (sum(early), sum(late))


def test_a_second_client_is_denied_while_a_test_runs_and_served_after() -> None:
    wire = Wire()

    async def main() -> list[TestReport]:
        server = Iperf3Server(wire.server.sockets.listen(5201))
        serving = spawn(server.serve, 2)
        first = spawn(run_client, wire.client, SERVER, TestParams(time=2))
        await sleep(1)
        with pytest.raises(PeerError, match="busy") as caught:
            await run_client(wire.client, SERVER, TestParams(time=1))
        assert caught.value.code == IEACCESSDENIED
        await first.join()
        await run_client(wire.client, SERVER, TestParams(time=1, reverse=True))
        with fail_after(30):
            reports = await serving.join()
        return reports

    reports = fake_run(main)
    assert [(r.number, r.error, r.reverse) for r in reports] == [(1, None, False), (2, None, True)]


def test_the_server_refusal_reaches_our_client_as_a_peer_error() -> None:
    wire = Wire()

    async def main() -> list[TestReport]:
        server = Iperf3Server(wire.server.sockets.listen(5201), ServerConfig(max_streams=2))
        serving = spawn(server.serve, 1)
        with pytest.raises(PeerError, match="too large") as caught:
            await run_client(wire.client, SERVER, TestParams(time=1, parallel=3))
        assert caught.value.code == IENUMSTREAMS
        await run_client(wire.client, SERVER, TestParams(time=1, parallel=2))
        return await serving.join()  # the refused test does not count towards the 1

    refused, ran = fake_run(main)
    assert refused.error is not None and "3 streams: 1 to 2" in refused.error
    assert ran.error is None


def test_clients_that_vanish_or_stall_cost_a_bounded_wait_and_the_server_goes_on() -> None:
    wire = Wire()

    async def main() -> tuple[list[TestReport], bytes, float]:
        server = Iperf3Server(wire.server.sockets.listen(5201), ServerConfig(handshake=3.0))
        serving = spawn(server.serve, 1)
        # One sends its parameters, then resets everything.
        control = await wire.client.connect(SERVER, 5201)
        await control.send(make_cookie() + frame(TestParams(time=1).to_json()))
        assert await control.recv(1, timeout=5) == b"\x09"  # PARAM_EXCHANGE
        assert await control.recv(1, timeout=5) == b"\x0a"  # CREATE_STREAMS
        control.abort()
        await sleep(1)
        # Another connects and never sends its cookie: it holds nothing up.
        silent = await wire.client.connect(SERVER, 5201)
        # A third sends its cookie, then nothing: SERVER_TERMINATE after the handshake bound.
        mute = await wire.client.connect(SERVER, 5201)
        await mute.send(make_cookie())
        assert await mute.recv(1, timeout=5) == b"\x09"
        started = now()
        told = await mute.recv(100, timeout=10)
        waited = now() - started
        await run_client(wire.client, SERVER, TestParams(time=1))
        silent.close()
        mute.close()
        return await serving.join(), told, waited

    reports, told, waited = fake_run(main)
    errors = [r.error for r in reports]
    assert len(reports) == 3 and errors[2] is None, errors
    assert "control connection failed" in str(errors[0]), errors
    assert errors[1] == "timed out while parameters"
    assert told == b"\x0b" and 3.0 <= waited < 3.5


def test_the_client_gives_up_on_a_silent_server_within_its_bound() -> None:
    wire = Wire()

    async def main() -> float:
        listener = wire.server.sockets.listen(5201)

        async def mute() -> None:
            sock = await listener.accept()
            await sock.recv(COOKIE_SIZE)
            await sleep(100)

        spawn(mute)
        with pytest.raises(TimeoutError):
            await run_client(
                wire.client, SERVER, TestParams(time=1), config=ClientConfig(handshake=2)
            )
        return now()

    assert 2.0 <= fake_run(main) < 3.0


def test_the_client_refuses_tests_it_cannot_run() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="UDP"):
            await run_client(Wire().client, SERVER, TestParams(protocol="udp"))

    fake_run(main)


def test_serving_ends_with_an_error_when_the_listener_goes() -> None:
    wire = Wire()

    async def main() -> None:
        listener = wire.server.sockets.listen(5201)
        serving = spawn(Iperf3Server(listener).serve, None)
        await sleep(1)
        listener.close()
        with fail_after(1), pytest.raises(OSError, match="listener"):
            await serving.join()

    fake_run(main)
