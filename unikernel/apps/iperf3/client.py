"""An iperf3 client (`iperf3 -c`) on our TCP stack: runs one test against any iperf3 3.x server.

    result = await run_client(network, "10.0.0.1", TestParams(time=2, parallel=4, reverse=True))
    print(result.sent_mbps, result.received_mbps)

Forward, we send `len`-byte blocks (one buffer, reused) on every stream until the time is up or
the byte count is reached, then wait until the server has acknowledged every byte before
TEST_END: iperf3's server counts only what it has read by then. Reverse (-R), we count what
arrives until the server closes each stream after TEST_END, which is everything it counted as
sent. Each side's bytes and seconds come from its own results, as iperf3 reports them.
"""

from __future__ import annotations

from unikernel.apps.iperf3.protocol import (
    DEFAULT_PORT,
    ClientProtocol,
    CreateStreams,
    Done,
    ProtocolError,
    ResultsReceived,
    ResultsRequested,
    TestRunning,
    TestStarted,
    stream_id,
)
from unikernel.apps.iperf3.streams import (
    Budget,
    ControlChannel,
    CpuMeter,
    StreamStats,
    Timeouts,
    mbps,
    sink,
    source,
)
from unikernel.core.nursery import open_nursery
from unikernel.core.scheduler import fail_after, move_on_after, now, sleep

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from unikernel.apps.iperf3.protocol import Event, TestParams, TestResults
    from unikernel.core.scheduler import Thread
    from unikernel.net.tcp_sockets import TcpSocket

    class Connector(Protocol):
        """What opens our connections: unikernel.net.service.NetworkService, say."""

        async def connect(
            self, host: str, port: int, timeout: float | None = None
        ) -> TcpSocket: ...


_POLL = 0.005  # how often the driver looks at its streams while the test runs


class ClientConfig(Timeouts):
    """The client's timeouts (see Timeouts)."""

    __slots__ = ()


class ClientResult:
    """One test as both sides counted it: `streams` are ours, `server` the server's results."""

    __slots__ = ("params", "seconds", "server", "streams")

    def __init__(
        self, params: TestParams, streams: list[StreamStats], server: TestResults, seconds: float
    ) -> None:
        self.params = params
        self.streams = streams
        self.server = server
        self.seconds = seconds  # ours: from TEST_RUNNING to our last byte

    def __repr__(self) -> str:
        return (
            f"<ClientResult {'reverse' if self.params.reverse else 'forward'}, "
            f"{len(self.streams)} streams: sent {self.sent_bytes} bytes, "
            f"{self.sent_mbps:.1f} Mbit/s; received {self.received_bytes} bytes, "
            f"{self.received_mbps:.1f} Mbit/s>"
        )

    @property
    def our_bytes(self) -> int:
        return sum(stream.bytes for stream in self.streams)

    @property
    def server_seconds(self) -> float:
        """The server's test time, from its streams' end times (ours if it gives none)."""
        ends = [stream.end_time - stream.start_time for stream in self.server.streams]
        longest = max(ends, default=0.0)
        return longest if longest > 0 else self.seconds

    @property
    def sent_bytes(self) -> int:
        return self.server.bytes if self.params.reverse else self.our_bytes

    @property
    def received_bytes(self) -> int:
        return self.our_bytes if self.params.reverse else self.server.bytes

    @property
    def sent_mbps(self) -> float:
        seconds = self.server_seconds if self.params.reverse else self.seconds
        return mbps(self.sent_bytes, seconds)

    @property
    def received_mbps(self) -> float:
        seconds = self.seconds if self.params.reverse else self.server_seconds
        return mbps(self.received_bytes, seconds)


async def run_client(
    network: Connector,
    host: str,
    params: TestParams,
    port: int = DEFAULT_PORT,
    config: ClientConfig | None = None,
) -> ClientResult:
    """Run one test against the iperf3 server at host:port. Raises ValueError for a test we
    cannot run, PeerError if the server refuses or ends it, ProtocolError if it breaks the
    protocol, TimeoutError past a bound, OSError if a connection fails."""
    problem = params.problem()
    if problem is not None:
        raise ValueError(problem[1])
    config = config or ClientConfig()
    timeout = config.handshake
    protocol = ClientProtocol(params)
    control = await network.connect(host, port, timeout=timeout)
    channel = ControlChannel(control, protocol)
    streams: list[StreamStats] = []
    try:
        await channel.flush(timeout)  # the cookie
        event = await channel.next_event(timeout)
        if not isinstance(event, CreateStreams):
            raise _unexpected(event)
        for index in range(event.count):
            sock = await network.connect(host, port, timeout=timeout)
            streams.append(StreamStats(stream_id(index), sock, sender=not params.reverse))
            if params.nodelay:
                sock.nodelay = True
            await sock.send(event.cookie, timeout=timeout)
        for expected in (TestStarted, TestRunning):
            event = await channel.next_event(timeout)
            if not isinstance(event, expected):
                raise _unexpected(event)
        return await _run(channel, params, config, streams)
    except BaseException:
        protocol.terminate()  # CLIENT_TERMINATE, unless the protocol is over already
        raise
    finally:
        for stream in streams:
            stream.sock.close()
        await channel.close(timeout)


async def _run(
    channel: ControlChannel, params: TestParams, config: ClientConfig, streams: list[StreamStats]
) -> ClientResult:
    """From TEST_RUNNING to IPERF_DONE."""
    protocol = channel.protocol
    assert isinstance(protocol, ClientProtocol)
    timeout = config.handshake
    cpu = CpuMeter()
    start = now()
    omit_until = start + params.omit
    bound = params.time + params.omit + config.grace if params.time else config.unbounded_test
    deadline = start + bound
    async with open_nursery() as data:
        if params.reverse:
            threads = [data.spawn(sink, stream, omit_until, deadline) for stream in streams]
        else:
            block = memoryview(bytes(params.length))
            budget = Budget(params.byte_limit) if params.byte_limit else None
            threads = [data.spawn(source, s, block, budget, omit_until, deadline) for s in streams]
        await _test_running(channel, params, streams, threads, start, bound)
        if not params.reverse:
            await _finish_sending(streams, threads, timeout)
        protocol.end_test()
        await channel.flush(timeout)
        event = await channel.next_event(timeout)
        if not isinstance(event, ResultsRequested):
            raise _unexpected(event)
        if params.reverse:
            await _finish_receiving(threads, config.catch_up)
        data.cancel()  # the sinks the server has not closed within catch_up
    seconds = max(stream.end for stream in streams) - start
    protocol.send_results(cpu.results([s.result(start) for s in streams], not params.reverse))
    await channel.flush(timeout)
    event = await channel.next_event(timeout)
    if not isinstance(event, ResultsReceived):
        raise _unexpected(event)
    server = event.results
    event = await channel.next_event(timeout)  # DISPLAY_RESULTS; IPERF_DONE goes out
    if not isinstance(event, Done):
        raise _unexpected(event)
    failed = [f"stream {s.id}: {s.error}" for s in streams if s.error is not None]
    if failed:
        raise OSError("; ".join(failed))
    return ClientResult(params, streams, server, seconds)


async def _test_running(
    channel: ControlChannel,
    params: TestParams,
    streams: list[StreamStats],
    threads: list[Thread[None]],
    start: float,
    bound: float,
) -> None:
    """Until the test's time is up, or its byte count sent (or received). The server says
    nothing meanwhile unless it fails: a thread listens all the same."""
    ends_at = start + params.omit + params.time if params.time else None
    deadline = start + bound
    limit = params.byte_limit

    async def listen() -> None:
        raise _unexpected(await channel.next_event(bound))

    async with open_nursery() as listening:
        listening.spawn(listen)
        while True:
            at = now()
            if ends_at is not None and at >= ends_at:
                break
            if limit and params.reverse and sum(s.bytes + s.omitted for s in streams) >= limit:
                break
            if limit and not params.reverse and all(thread.done for thread in threads):
                break
            if all(stream.error is not None for stream in streams):
                raise OSError(f"every stream failed: {streams[0].error}")
            if at >= deadline:
                raise TimeoutError(f"the test did not end within {bound} s")
            await sleep(_POLL if ends_at is None else min(_POLL, ends_at - at))
        listening.cancel()  # before we read the control connection ourselves


async def _finish_sending(
    streams: list[StreamStats], threads: list[Thread[None]], timeout: float
) -> None:
    """Stop after the blocks in flight and wait until the server has acknowledged them all."""
    for stream in streams:
        stream.stop = True
    with fail_after(timeout):
        for thread in threads:
            await thread.join()
        for stream in streams:
            try:
                await stream.sock.drain()
            except OSError as error:
                stream.error = stream.error or f"draining: {error}"
            stream.end = now()


async def _finish_receiving(threads: list[Thread[None]], catch_up: float) -> None:
    """Count what still arrives until the server closes every stream (it does at TEST_END),
    for at most `catch_up` seconds."""
    with move_on_after(catch_up):
        for thread in threads:
            await thread.join()


def _unexpected(event: Event) -> ProtocolError:
    return ProtocolError(f"the server sent {event!r} out of turn")
