"""What the iperf3 server and client drivers share: the control channel over a TCP socket, the
data streams' sending and sinking threads, and the numbers they keep.

Every wait has a bound: calls take a timeout, and the data threads a deadline past which they
give up. Sources stop when asked (their `stop` flag) after the block in flight, so that the
bytes they count are the bytes TCP took; sinks are cancelled, which loses nothing, since a
cancelled read (recv() or discard()) has taken no data.
"""

from __future__ import annotations

import os

from unikernel.apps.iperf3.protocol import Event, ProtocolError, StreamResult, TestResults
from unikernel.core.scheduler import now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.apps.iperf3.protocol import ClientProtocol, ServerProtocol
    from unikernel.net.tcp_sockets import TcpSocket

CONTROL_READ = 4096  # control messages are a few hundred bytes
SINK_READ = 1 << 20  # large reads: fewer trips through the scheduler per byte


async def read_exactly(sock: TcpSocket, size: int, timeout: float) -> bytes:
    """`size` bytes from `sock`; ProtocolError if it closes first, TimeoutError after
    `timeout` seconds in all."""
    deadline = now() + timeout
    data = b""
    while len(data) < size:
        chunk = await sock.recv(size - len(data), timeout=max(0.0, deadline - now()))
        if not chunk:
            raise ProtocolError(f"the connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


class Timeouts:
    """Seconds either driver waits. handshake: for each step of the control protocol and for
    the streams to connect; grace: past the test's announced time (plus omit) before it must
    have ended; unbounded_test: the limit on a test by byte count, which announces no time;
    catch_up: after TEST_END, for the last bytes still in flight to arrive."""

    __slots__ = ("catch_up", "grace", "handshake", "unbounded_test")

    def __init__(
        self,
        *,
        handshake: float = 10.0,
        grace: float = 10.0,
        unbounded_test: float = 600.0,
        catch_up: float = 5.0,
    ) -> None:
        self.handshake = handshake
        self.grace = grace
        self.unbounded_test = unbounded_test
        self.catch_up = catch_up


class ControlChannel:
    """A protocol machine over the control connection: reads feed it, and whatever it queues
    to send goes out before the next read."""

    def __init__(self, sock: TcpSocket, protocol: ServerProtocol | ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol
        self._events: list[Event] = []

    async def flush(self, timeout: float) -> None:
        data = self.protocol.data_to_send()
        if data:
            await self.sock.send(data, timeout=timeout)

    async def feed(self, data: bytes, timeout: float) -> None:
        """Bytes read elsewhere (the cookie, say) fed to the protocol."""
        try:
            events = self.protocol.feed(data)
        except ProtocolError:
            try:  # noqa: SIM105 (contextlib takes 10 ms to import)
                await self.flush(timeout)
            except OSError:
                pass  # the protocol's reply (SERVER_ERROR) goes out if it can
            raise
        self._events += events
        await self.flush(timeout)

    async def next_event(self, timeout: float) -> Event:
        """The protocol's next event, reading as needed; ProtocolError if the connection
        breaks the protocol (what the protocol queued in reply is sent first)."""
        deadline = now() + timeout
        while not self._events:
            try:
                data = await self.sock.recv(CONTROL_READ, timeout=max(0.0, deadline - now()))
            except TimeoutError:
                raise
            except OSError as error:  # reset: the peer is gone, no reply to send
                raise ProtocolError(f"the control connection failed: {error}") from error
            await self.feed(data, max(0.0, deadline - now()))
        return self._events.pop(0)

    async def close(self, timeout: float) -> None:
        """Send what is queued, then close; never raises."""
        try:  # noqa: SIM105 (contextlib takes 10 ms to import)
            await self.flush(timeout)
        except OSError:  # TimeoutError included
            pass
        self.sock.close()


class StreamStats:
    """One data stream's numbers: bytes counted after the omitted start, and when."""

    __slots__ = (
        "bytes",
        "end",
        "eof",
        "error",
        "id",
        "last_data",
        "omitted",
        "retransmits",
        "sender",
        "sock",
        "start",
        "stop",
    )

    def __init__(self, id: int, sock: TcpSocket, sender: bool) -> None:
        self.id = id
        self.sock = sock
        self.sender = sender
        self.bytes = 0  # sent (taken by TCP) or received, after the omitted start
        self.omitted = 0  # the same, during the omitted start
        self.start = 0.0
        self.end = 0.0
        self.last_data = 0.0
        self.eof = False
        self.error: str | None = None
        self.retransmits = 0
        self.stop = False  # a source sends no further block once this is set

    def __repr__(self) -> str:
        role = "sender" if self.sender else "receiver"
        return f"<stream {self.id} {role}: {self.bytes} bytes, error={self.error}>"

    def result(self, test_start: float) -> StreamResult:
        """This stream's line of our results message."""
        retransmits = self.retransmits if self.sender else -1
        return StreamResult(
            self.id,
            self.bytes,
            retransmits=retransmits,
            start_time=0.0,
            end_time=round(max(0.0, self.end - test_start), 6),
        )


class Budget:
    """A byte count shared by a test's sources (-n, -k): each sends whole blocks until the
    total sent reaches the limit, as iperf_send() does."""

    __slots__ = ("limit", "taken")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def take(self, size: int) -> bool:
        if self.taken >= self.limit:
            return False
        self.taken += size
        return True


async def source(
    stats: StreamStats, block: memoryview, budget: Budget | None, omit_until: float, deadline: float
) -> None:
    """Send `block` over and over until stopped, the budget runs out or the deadline passes;
    errors end up in stats.error."""
    sock = stats.sock
    size = len(block)
    stats.start = now()
    try:
        while not stats.stop and (budget is None or budget.take(size)):
            await sock.send(block, timeout=max(0.0, deadline - now()))
            at = now()
            if at < omit_until:
                stats.omitted += size
            else:
                stats.bytes += size
            stats.last_data = at
    except OSError as error:  # TimeoutError included
        stats.error = f"sending: {error or type(error).__name__}"
    finally:
        stats.end = now()
        stats.retransmits = sock.connection.retransmits


async def sink(stats: StreamStats, omit_until: float, deadline: float) -> None:
    """Receive and discard until the peer closes or the deadline passes; errors end up in
    stats.error. The threads that start sinks cancel them when the test is over."""
    sock = stats.sock
    stats.start = stats.end = now()
    try:
        while True:
            # Counted, never copied out of TCP's buffer: no one looks at the bytes.
            size = await sock.discard(SINK_READ, timeout=max(0.0, deadline - now()))
            at = now()
            stats.last_data = at
            stats.end = at
            if not size:
                stats.eof = True
                return
            if at < omit_until:
                stats.omitted += size
            else:
                stats.bytes += size
    except OSError as error:  # TimeoutError included
        stats.error = f"receiving: {error or type(error).__name__}"


class CpuMeter:
    """CPU use over a test, in percent of one CPU, as iperf3 reports it (cpu_util_*)."""

    def __init__(self) -> None:
        self._start = os.times()
        self._wall = now()

    def results(self, streams: list[StreamResult], sender: bool) -> TestResults:
        """Our results message, with the CPU use since we started."""
        times = os.times()
        wall = max(now() - self._wall, 1e-9)
        user = (times.user - self._start.user) / wall * 100
        system = (times.system - self._start.system) / wall * 100
        return TestResults(
            streams,
            cpu_util_total=round(user + system, 6),
            cpu_util_user=round(user, 6),
            cpu_util_system=round(system, 6),
            # We count retransmissions when sending; iperf3's receivers say -1, unknown.
            sender_has_retransmits=1 if sender else -1,
        )


def mbps(size: int, seconds: float) -> float:
    """Megabits per second, as iperf3 counts them (10^6 bits)."""
    return size * 8 / seconds / 1e6 if seconds > 0 else 0.0
