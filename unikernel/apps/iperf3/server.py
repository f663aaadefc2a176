"""An iperf3 server (`iperf3 -s`) on our TCP stack: the tcp suite's throughput appliance.

Any iperf3 3.x client can test against it: TCP, forward (client to us) or reverse (-R), 1 to 128
parallel streams (-P), for a time (-t) or a byte count (-n, -k), with --omit. Tests run one
after another; a client that comes while a test runs gets ACCESS_DENIED, as from iperf3 itself.
What we do not do (UDP, SCTP, --bidir, -b on a reverse test) is refused with SERVER_ERROR, so
the client prints why and exits instead of hanging.

Receiving, we go on reading after TEST_END until we have every byte the client's results say
it sent (its results come before ours), so the two counts agree, where iperf3's own server
drops what is still in flight. Sending (-R), we stop at TEST_END, close the streams and wait
until the client has acknowledged everything before asking for results.

As an appliance (`main(devices)`): on its declared network (its address in UNIKERNEL_IP), the port
from UNIBENCH_PORT (5201), and UNIBENCH_TESTS=N ends the program after N completed tests, so
that an image can power off.
"""

from __future__ import annotations

import os
from collections import deque

from unikernel.apps.iperf3.protocol import (
    COOKIE_SIZE,
    DEFAULT_PORT,
    IESTREAMACCEPT,
    MAX_STREAMS,
    Done,
    ParamsReceived,
    ProtocolError,
    ResultsReceived,
    ServerProtocol,
    Terminated,
    TestEnded,
    TestRejected,
    deny,
    parse_cookie,
    stream_id,
)
from unikernel.apps.iperf3.streams import (
    Budget,
    ControlChannel,
    CpuMeter,
    StreamStats,
    Timeouts,
    mbps,
    read_exactly,
    sink,
    source,
)
from unikernel.core.devices import Devices
from unikernel.core.nursery import open_nursery
from unikernel.core.scheduler import Cancelled, fail_after, now, sleep
from unikernel.core.sync import Queue
from unikernel.net.ipv4 import format_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from unikernel.apps.iperf3.protocol import Event, TestParams, TestResults
    from unikernel.core.scheduler import Thread
    from unikernel.net.tcp_sockets import TcpListenerSocket, TcpSocket

PORT_VARIABLE = "UNIBENCH_PORT"
TESTS_VARIABLE = "UNIBENCH_TESTS"
_POLL = 0.005  # how often a catching-up driver looks at its streams


class ServerConfig(Timeouts):
    """The server's timeouts (see Timeouts), and how many streams a test may open."""

    __slots__ = ("max_streams",)

    def __init__(self, *, max_streams: int = MAX_STREAMS, **timeouts: float) -> None:
        super().__init__(**timeouts)
        self.max_streams = max_streams


class TestReport:
    """What the server saw of one test."""

    __test__ = False
    __slots__ = ("error", "number", "params", "peer", "remote", "seconds", "streams")

    def __init__(self, number: int, remote: str) -> None:
        self.number = number
        self.remote = remote
        self.params: TestParams | None = None
        self.streams: list[StreamStats] = []
        self.seconds = 0.0
        self.peer: TestResults | None = None  # the client's results
        self.error: str | None = None

    def __repr__(self) -> str:
        return f"<TestReport {self.describe()}>"

    @property
    def reverse(self) -> bool:
        return self.params is not None and self.params.reverse

    @property
    def bytes(self) -> int:
        """What we sent (reverse) or received."""
        return sum(stream.bytes for stream in self.streams)

    @property
    def mbps(self) -> float:
        return mbps(self.bytes, self.seconds)

    def describe(self) -> str:
        head = f"test {self.number} from {self.remote}"
        if self.params is None:
            return f"{head}: {self.error}"
        direction = "reverse, we send" if self.reverse else "forward, we receive"
        line = (
            f"{head}: {direction}, {len(self.streams)} streams, {self.bytes} bytes in "
            f"{self.seconds:.2f} s, {self.mbps:.1f} Mbit/s"
        )
        return line if self.error is None else f"{line}; failed: {self.error}"


class Iperf3Server:
    """Serves iperf3 tests on a listening socket, one at a time."""

    def __init__(
        self,
        listener: TcpListenerSocket,
        config: ServerConfig | None = None,
        log: Callable[[str], object] | None = None,
        link_counts: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.listener = listener
        self.config = config or ServerConfig()
        self._log = log
        self._link_counts = link_counts  # logged after each test: where frames waited or went
        self._controls: Queue[tuple[TcpSocket, bytes]] = Queue()
        self._busy = False  # a control connection is queued or being served
        self._stream_cookie: str | None = None  # the test that is accepting streams now
        self._streams: Queue[TcpSocket] | None = None
        self._tests = 0

    async def serve(self, tests: int | None = None) -> list[TestReport]:
        """Serve until `tests` tests have completed (None: forever); the last reports. If the
        listener fails, serving stops (a test in progress too) with its error."""
        reports: deque[TestReport] = deque(maxlen=64)
        completed = 0
        async with open_nursery() as nursery:
            nursery.spawn(self._accept)
            while tests is None or completed < tests:
                control, cookie = await self._controls.get()
                try:
                    report = await self.run_test(control, cookie)
                finally:
                    self._busy = False
                reports.append(report)
                self._say(f"iperf3: {report.describe()}")
                if self._link_counts is not None:
                    counts = self._link_counts()
                    self._say("iperf3: link " + " ".join(f"{k}={v}" for k, v in counts.items()))
                if report.error is None:
                    completed += 1
            nursery.cancel()  # the acceptor, and the connections it is greeting
        return list(reports)

    def _say(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    async def _accept(self) -> None:
        """Greet each new connection in a thread of its own, until the listener fails."""
        async with open_nursery() as greeters:
            while True:
                sock = await self.listener.accept()
                greeters.spawn(self._greet, sock)

    async def _greet(self, sock: TcpSocket) -> None:
        """Read a new connection's cookie; hand it to the test accepting streams with that
        cookie, else make it the next control connection, or deny it if we are busy."""
        try:
            data = await read_exactly(sock, COOKIE_SIZE, self.config.handshake)
            cookie = parse_cookie(data)
        except (ProtocolError, OSError):
            sock.abort()
            return
        except Cancelled:
            sock.abort()  # serving has stopped: nobody will take this connection
            raise
        streams = self._streams
        if streams is not None and cookie == self._stream_cookie:
            streams.try_put(sock)
        elif self._busy:
            try:
                await sock.send(deny(), timeout=self.config.handshake)
            except OSError:
                pass
            finally:
                sock.close()
        else:
            self._busy = True
            self._controls.try_put((sock, data))

    async def run_test(self, control: TcpSocket, cookie: bytes) -> TestReport:
        """One test, from the control connection's cookie to IPERF_DONE; never raises for
        what the client does (the report's `error` says it)."""
        self._tests += 1
        address, port = control.remote
        report = TestReport(self._tests, f"{format_address(address)}:{port}")
        protocol = ServerProtocol(self.config.max_streams)
        channel = ControlChannel(control, protocol)
        timeout = self.config.handshake
        try:
            await channel.feed(cookie, timeout)
            event = await channel.next_event(timeout)
            if isinstance(event, TestRejected):
                report.error = f"refused: {event.reason}"
                return report
            if not isinstance(event, ParamsReceived):
                raise self._unexpected(event)
            params = report.params = event.params
            report.streams = await self._accept_streams(channel, protocol, event)
            await self._run(channel, report, params)
        except ProtocolError as error:
            report.error = str(error)
        except TimeoutError:
            report.error = f"timed out while {protocol.state}"
            protocol.terminate()
        except OSError as error:  # the control connection reset while we wrote to it
            report.error = f"the control connection failed while {protocol.state}: {error}"
        finally:
            for stream in report.streams:
                stream.sock.close()
            await channel.close(timeout)
        return report

    async def _accept_streams(
        self, channel: ControlChannel, protocol: ServerProtocol, event: ParamsReceived
    ) -> list[StreamStats]:
        """The test's stream connections, in the order they come (which numbers them). The
        control connection is watched meanwhile: a client that gives up or goes away ends
        the wait at once."""
        params = event.params
        queue: Queue[TcpSocket] = Queue()
        self._stream_cookie, self._streams = event.cookie, queue
        streams: list[StreamStats] = []

        async def watch() -> None:
            """The client says nothing while its streams connect: what it says is an error."""
            try:
                stray = await channel.next_event(self.config.handshake)
            except TimeoutError:
                return  # the wait for the streams has timed out too
            except OSError as error:
                raise ProtocolError(f"the control connection failed: {error}") from error
            raise self._unexpected(stray)

        try:
            async with open_nursery() as nursery:
                nursery.spawn(watch)
                with fail_after(self.config.handshake):
                    while len(streams) < params.parallel:
                        sock = await queue.get()
                        if params.nodelay:
                            sock.nodelay = True
                        streams.append(StreamStats(stream_id(len(streams)), sock, params.reverse))
                nursery.cancel()  # the watcher
        except BaseException as error:
            for stream in streams:
                stream.sock.close()
            if isinstance(error, TimeoutError):
                protocol.fail(IESTREAMACCEPT)
                raise ProtocolError(
                    f"{len(streams)} of {params.parallel} streams connected within "
                    f"{self.config.handshake} s"
                ) from None
            raise
        finally:
            self._stream_cookie = self._streams = None
        return streams

    async def _run(self, channel: ControlChannel, report: TestReport, params: TestParams) -> None:
        """From TEST_START to IPERF_DONE."""
        protocol = channel.protocol
        assert isinstance(protocol, ServerProtocol)
        config = self.config
        timeout = config.handshake
        streams = report.streams
        bound = params.time + params.omit + config.grace if params.time else config.unbounded_test
        cpu = CpuMeter()
        protocol.start_test()
        await channel.flush(timeout)
        start = now()
        deadline = start + bound
        omit_until = start + params.omit
        async with open_nursery() as data:
            if params.reverse:
                block = memoryview(bytes(params.length))
                budget = Budget(params.byte_limit) if params.byte_limit else None
                threads = [
                    data.spawn(source, s, block, budget, omit_until, deadline) for s in streams
                ]
            else:
                threads = [data.spawn(sink, s, omit_until, deadline) for s in streams]

            event = await channel.next_event(max(0.0, deadline - now()))
            if not isinstance(event, TestEnded):
                raise self._unexpected(event)
            if params.reverse:
                await self._stop_sources(streams, threads)
            protocol.request_results()
            await channel.flush(timeout)
            event = await channel.next_event(timeout)
            if not isinstance(event, ResultsReceived):
                raise self._unexpected(event)
            report.peer = event.results
            if not params.reverse:
                await self._catch_up(streams, event.results)
            data.cancel()  # the sinks: what the client sent has come
        report.seconds = max(stream.end for stream in streams) - start
        protocol.send_results(cpu.results([s.result(start) for s in streams], params.reverse))
        await channel.flush(timeout)
        event = await channel.next_event(timeout)
        if not isinstance(event, Done):
            raise self._unexpected(event)
        failed = [f"stream {s.id}: {s.error}" for s in streams if s.error is not None]
        if failed:
            report.error = "; ".join(failed)

    async def _stop_sources(self, streams: list[StreamStats], threads: list[Thread[None]]) -> None:
        """Stop sending after the blocks in flight, close the streams (as iperf3 does at
        TEST_END) and wait until the client has acknowledged every byte, so that the count
        it reports matches ours."""
        for stream in streams:
            stream.stop = True
        with fail_after(self.config.handshake):
            for thread in threads:
                await thread.join()
            for stream in streams:
                stream.sock.shutdown()
            for stream in streams:
                try:
                    await stream.sock.drain()
                except OSError as error:
                    stream.error = stream.error or f"draining: {error}"
                stream.end = now()

    async def _catch_up(self, streams: list[StreamStats], peer: TestResults) -> None:
        """Go on reading until each stream has the bytes the client says it sent, while they
        keep coming, for at most config.catch_up seconds."""
        sent = peer.by_id()
        limit = now() + self.config.catch_up
        while now() < limit:
            behind = [
                s
                for s in streams
                if s.id in sent and s.bytes < sent[s.id].bytes and not s.eof and s.error is None
            ]
            if not behind or now() - max(s.last_data for s in behind) > 0.5:
                return
            await sleep(_POLL)

    @staticmethod
    def _unexpected(event: Event) -> ProtocolError:
        if isinstance(event, Terminated):
            return ProtocolError("the client terminated the test")
        return ProtocolError(f"unexpected {event!r}")


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise ValueError(f"{name}={text!r}: a whole number is expected")
    return int(text)


async def main(devices: Devices) -> int:
    """The appliance: serve iperf3 tests on UNIBENCH_PORT (5201) of its network; with
    UNIBENCH_TESTS=N, exit 0 after N completed tests."""
    console = devices.console
    try:
        port = _env_int(os.environ, PORT_VARIABLE, DEFAULT_PORT)
        tests = _env_int(os.environ, TESTS_VARIABLE, 0) or None
        if not 1 <= port <= 65535:
            raise ValueError(f"{PORT_VARIABLE}={port}: a port is 1 to 65535")
    except ValueError as error:
        console.line(f"iperf3: {error}")
        return 2
    network = await devices.network().open()
    listener = network.listen(port)
    console.line(f"iperf3: listening on {network.address}:{port}")
    await Iperf3Server(listener, log=console.line, link_counts=network.counts).serve(tests)
    listener.close()
    await network.aclose()
    return 0
