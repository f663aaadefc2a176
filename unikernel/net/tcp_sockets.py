"""Blocking TCP calls for cooperative threads, over the sans-IO engine in unikernel.net.tcp.

Wiring, with stack.py's register_protocol() (its `send` takes no source address) and the
interface that drives the stack (see service.attach_tcp()):

    layer = TcpLayer(random_u32, TcpConfig(mtu=stack.mtu), local_ip=address)
    sockets = TcpSockets(
        layer,
        send=lambda dst, src, segment: ip_send(dst, segment, now()),
        wake_timer=interface.wake_timer,
        sent=interface.flush,
    )
    ip_send = stack.register_protocol(
        6,
        sockets.input,
        tick=sockets.tick,
        next_deadline=layer.next_deadline,
        batch=(sockets.begin_batch, sockets.end_batch),
    )

(Set layer.local_ip again when DHCP changes our address: connect() uses it.) Then:

    conn = await sockets.connect(address, 80, timeout=5)
    await conn.send(b"GET / HTTP/1.0\\r\\n\\r\\n")
    reply = await conn.recv(65536)                  # b"" once the peer has closed
    conn.close()

    listener = sockets.listen(80, backlog=128)
    conn = await listener.accept()

`send(destination_ip, source_ip, segment)` is the IP layer's output: it wraps each segment in an
IPv4 datagram, protocol 6. `now` is the clock the engine sees, the scheduler's by default.

The engine's timers fire in tick(). Wired as above, the interface's timer thread calls it at
the stack's deadline, which includes ours, and `wake_timer(deadline)` tells that thread when
ours comes earlier with nothing to send (a keepalive, a persist timer). Without `wake_timer`
(two engines joined in memory, say) a thread of our own, started with the first connect() or
listen(), fires them. Timeouts use fail_after(), so they follow the scheduler's clock, fake in
tests.
"""

from __future__ import annotations

from unikernel.core import scheduler
from unikernel.core.scheduler import fail_after_or_never, move_on_after, spawn
from unikernel.core.sync import Event
from unikernel.net.tcp.states import (
    CLOSED,
    EV_CLOSED,
    EV_CONNECTED,
    EV_PEER_CLOSED,
    EV_READABLE,
    EV_RESET,
    EV_TIMED_OUT,
    EV_WRITABLE,
    SYN_RECEIVED,
    SYN_SENT,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from unikernel.core.scheduler import Thread
    from unikernel.net.tcp.connection import Connection
    from unikernel.net.tcp.layer import Listener, TcpLayer
    from unikernel.net.tcp.segment import Buffer

_INF = float("inf")
_ENDS = EV_CONNECTED | EV_RESET | EV_TIMED_OUT | EV_CLOSED  # wake every waiter
_WAKE_READERS = EV_READABLE | EV_PEER_CLOSED | _ENDS
_WAKE_WRITERS = EV_WRITABLE | _ENDS


class TcpSockets:
    """The TCP sockets of one stack."""

    def __init__(
        self,
        layer: TcpLayer,
        send: Callable[[bytes, bytes, bytes | bytearray], object],
        now: Callable[[], float] = scheduler.now,
        *,
        wake_timer: Callable[[float], object] | None = None,
        sent: Callable[[], object] | None = None,
    ) -> None:
        self.layer = layer
        self._send = send
        self._sent = sent  # after a flush's segments were all handed to send: write them
        self._now = now
        self._wake_timer = wake_timer  # None: we fire our timers ourselves
        self._timer_thread: Thread[None] | None = None
        self._kick: Event | None = None  # set to wake the timer thread early
        self._timer_deadline = _INF  # when the timer thread wakes up anyway
        self._flushing = False

    def input(
        self,
        source_ip: bytes,
        destination_ip: bytes,
        segment: Buffer,
        now: float | None = None,
        vouched: bool = False,
    ) -> None:
        """A TCP segment from the IP layer (`vouched`: its checksum need not be checked)."""
        at = self._now() if now is None else now
        self.layer.input(source_ip, destination_ip, segment, at, vouched)
        if not self.layer.batching:
            self._flush()

    def input_run(
        self,
        source_ip: bytes,
        destination_ip: bytes,
        segments: Sequence[Buffer],
        vouched: int,
        now: float | None = None,
    ) -> None:
        """Segments between the same two addresses that a read brought (see Stack's `run`)."""
        at = self._now() if now is None else now
        self.layer.input_run(source_ip, destination_ip, segments, vouched, at)
        if not self.layer.batching:
            self._flush()

    def begin_batch(self) -> None:
        """Segments up to end_batch() arrived together: they are answered together (see
        TcpLayer.begin_batch), and what they produce is handed on once."""
        self.layer.begin_batch()

    def end_batch(self, now: float | None = None) -> None:
        self.layer.end_batch(self._now() if now is None else now)
        self._flush()

    def tick(self, now: float | None = None) -> None:
        """Fire the engine's due timers: the stack's driver calls it, or our own timer thread."""
        self.layer.tick(self._now() if now is None else now)
        self._flush()

    async def connect(self, address: bytes, port: int, timeout: float | None = None) -> TcpSocket:
        """Open a connection; ConnectionRefusedError if refused, TimeoutError if the handshake
        does not finish within `timeout` seconds (or the SYN retries run out)."""
        self._start()
        conn = self.layer.connect(address, port, self._now())
        sock = TcpSocket(self, conn)
        self._flush()
        try:
            with fail_after_or_never(timeout):
                while conn.state in (SYN_SENT, SYN_RECEIVED):
                    await sock._wait(False)
        except BaseException:
            conn.abort(self._now())
            self._flush()
            raise
        if conn.state == CLOSED:
            raise conn.failure() or ConnectionAbortedError("connection closed while opening")
        return sock

    def listen(self, port: int, backlog: int = 128) -> TcpListenerSocket:
        self._start()
        return TcpListenerSocket(self, self.layer.listen(port, backlog))

    def _start(self) -> None:
        if self._wake_timer is not None:
            return  # the stack's driver ticks us
        if self._timer_thread is None or self._timer_thread.done:
            self._timer_thread = spawn(self._run_timers)

    async def _run_timers(self) -> None:
        """Fire the engine's timers: sleep until its next deadline, or until a call into the
        engine brings that deadline forward."""
        layer = self.layer
        while True:
            deadline = layer.next_deadline()
            kick = self._kick = Event()
            if deadline is None:
                self._timer_deadline = _INF
                await kick.wait()
            else:
                self._timer_deadline = deadline
                with move_on_after(max(0.0, deadline - self._now())):
                    await kick.wait()
            self._kick = None
            layer.tick(self._now())
            self._flush()

    def _flush(self) -> None:
        """Hand the engine's segments to the IP layer and its events to waiting threads."""
        if self._flushing:
            return  # the IP layer looped a segment straight back in: the loop below has it
        self._flushing = True
        layer = self.layer
        sent = False
        try:
            while True:
                out = layer.take_output()
                for destination, source, segment in out:
                    self._send(destination, source, segment)
                    sent = True
                events = layer.take_events()
                for subject, bits in events:
                    sock = subject.user
                    if sock is not None:
                        assert isinstance(sock, TcpSocket | TcpListenerSocket)
                        sock._notify(bits)
                if not out and not events:
                    break
        finally:
            self._flushing = False
        if sent and self._sent is not None:
            self._sent()
        deadline = layer.next_deadline()
        if deadline is None:
            return
        if self._wake_timer is not None:
            self._wake_timer(deadline)
        elif deadline < self._timer_deadline and self._kick is not None:
            self._kick.set()


class TcpSocket:
    """A connection, for threads."""

    __slots__ = ("_conn", "_readers", "_sockets", "_writers")

    def __init__(self, sockets: TcpSockets, conn: Connection) -> None:
        self._sockets = sockets
        self._conn = conn
        self._readers: Event | None = None
        self._writers: Event | None = None
        conn.user = self

    def __repr__(self) -> str:
        return f"<TcpSocket {self._conn!r}>"

    @property
    def connection(self) -> Connection:
        """The engine's side, for its state and statistics."""
        return self._conn

    @property
    def remote(self) -> tuple[bytes, int]:
        return self._conn.remote_ip, self._conn.remote_port

    @property
    def local(self) -> tuple[bytes, int]:
        return self._conn.local_ip, self._conn.local_port

    @property
    def nodelay(self) -> bool:
        return self._conn.nodelay

    @nodelay.setter
    def nodelay(self, value: bool) -> None:
        self._conn.nodelay = value

    async def send(self, data: Buffer, timeout: float | None = None) -> None:
        """Queue all of `data`, waiting while the send buffer is full."""
        conn = self._conn
        sockets = self._sockets
        view = memoryview(data)
        done = 0
        with fail_after_or_never(timeout):
            while True:
                done += conn.send(view[done:], sockets._now())
                sockets._flush()
                if done >= len(view):
                    return
                await self._wait(True)

    async def recv(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Up to `max_bytes`, waiting until some arrive; b"" once the peer has closed."""
        with fail_after_or_never(timeout):
            if not await self._wait_readable():
                return b""
            data = self._conn.recv(max_bytes, self._sockets._now())
            self._sockets._flush()  # a window update may be due
        return data

    async def discard(self, max_bytes: int = 65536, timeout: float | None = None) -> int:
        """recv() for an application that only counts what it receives: up to `max_bytes`
        removed unread, never copied; how many, or 0 once the peer has closed."""
        with fail_after_or_never(timeout):
            if not await self._wait_readable():
                return 0
            size = self._conn.discard(max_bytes, self._sockets._now())
            self._sockets._flush()  # a window update may be due
        return size

    async def _wait_readable(self) -> bool:
        """Wait until there is data to read (True) or the peer has closed (False); raise
        the connection's failure. Data is taken after the wait alone: a cancelled read has
        taken none."""
        conn = self._conn
        while True:
            if conn.readable:
                return True
            failure = conn.failure()
            if failure is not None:
                raise failure
            if conn.at_eof or conn.state == CLOSED:
                return False
            await self._wait(False)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the peer has acknowledged everything sent."""
        conn = self._conn
        with fail_after_or_never(timeout):
            while conn.unacked and conn.state != CLOSED:
                await self._wait(True)
        failure = conn.failure()
        if failure is not None:
            raise failure

    def shutdown(self) -> None:
        """Send a FIN after the queued data; recv() goes on working."""
        self._conn.shutdown(self._sockets._now())
        self._sockets._flush()

    def close(self) -> None:
        """Close gracefully: queued data still goes out, then the FIN."""
        self._conn.close(self._sockets._now())
        self._sockets._flush()

    def abort(self) -> None:
        """Reset the connection at once."""
        self._conn.abort(self._sockets._now())
        self._sockets._flush()

    def keepalive(self, idle: float, interval: float = 75.0, count: int = 9) -> None:
        self._conn.keepalive(idle, interval, count, self._sockets._now())
        self._sockets._flush()

    async def _wait(self, writing: bool) -> None:
        if writing:
            event = self._writers
            if event is None:
                event = self._writers = Event()
        else:
            event = self._readers
            if event is None:
                event = self._readers = Event()
        await event.wait()

    def _notify(self, bits: int) -> None:
        if bits & _WAKE_READERS:
            event = self._readers
            if event is not None:
                self._readers = None
                event.set()
        if bits & _WAKE_WRITERS:
            event = self._writers
            if event is not None:
                self._writers = None
                event.set()


class TcpListenerSocket:
    """A listening port, for threads."""

    __slots__ = ("_acceptors", "_listener", "_sockets")

    def __init__(self, sockets: TcpSockets, listener: Listener) -> None:
        self._sockets = sockets
        self._listener = listener
        self._acceptors: Event | None = None
        listener.user = self

    @property
    def port(self) -> int:
        return self._listener.port

    async def accept(self, timeout: float | None = None) -> TcpSocket:
        """The next established connection, waiting for one."""
        with fail_after_or_never(timeout):
            conn = await self._accept()
        return TcpSocket(self._sockets, conn)

    async def _accept(self) -> Connection:
        listener = self._listener
        while True:
            conn = listener.accept()
            if conn is not None:
                return conn
            if not listener.listening:
                raise OSError("the listener is closed")
            event = self._acceptors
            if event is None:
                event = self._acceptors = Event()
            await event.wait()

    def close(self) -> None:
        self._listener.close(self._sockets._now())
        self._sockets._flush()
        self._notify(0)

    def _notify(self, bits: int) -> None:
        event = self._acceptors
        if event is not None:
            self._acceptors = None
            event.set()
