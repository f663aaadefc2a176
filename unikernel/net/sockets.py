"""Socket-like UDP and ping for applications on cooperative threads.

Addresses are (dotted-quad string, port) as in Python's socket module. A socket runs over an
Interface (a Stack and its driver threads); receiving waits without blocking other threads,
with an optional timeout that raises TimeoutError.
"""

from __future__ import annotations

import errno

from unikernel.core.entropy import random_below
from unikernel.core.scheduler import fail_after, now
from unikernel.core.sync import Event, Queue
from unikernel.net.ipv4 import format_address, parse_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Self

    from unikernel.net.interface import Interface

    Buffer = bytes | bytearray | memoryview
    Answer = Callable[[memoryview], Buffer | None]
    Address = tuple[str, int]


class _UdpPort:
    """A UDP port held on a stack (0 until bound), given back when closed: with blocks too."""

    def __init__(self, interface: Interface) -> None:
        self._stack = interface.stack
        self.port = 0
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.port:
                self._stack.udp_unbind(self.port)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class UdpSocket(_UdpPort):
    def __init__(self, interface: Interface, *, max_queued: int = 256) -> None:
        super().__init__(interface)
        self._interface = interface
        self._queue: Queue[tuple[bytes, Address]] = Queue(max_queued)
        self.dropped = 0  # datagrams that found the receive queue full

    def bind(self, port: int = 0) -> int:
        """Receive what is sent to `port` (0: an ephemeral port); returns the port."""
        self._check_open()
        if self.port:
            raise OSError(errno.EINVAL, "the socket is bound already")
        self.port = self._stack.udp_bind(port, self._deliver)
        return self.port

    def getsockname(self) -> Address:
        address = self._stack.address
        return ("0.0.0.0" if address is None else format_address(address), self.port)

    async def sendto(self, data: Buffer, address: Address) -> int:
        """Send one datagram; binds an ephemeral port first if need be. OSError when it cannot
        go out at all (no address yet, no route, too long)."""
        self._check_open()
        if not self.port:
            self.bind()
        host, port = address
        try:
            sent = self._stack.udp_send(self.port, parse_address(host), port, data, now())
        except ValueError as error:
            raise OSError(errno.EMSGSIZE, str(error)) from None
        if not sent:
            raise OSError(errno.ENETUNREACH, f"no route to {host}")
        self._interface.flush()
        await self._interface.drain()
        return len(data)

    async def recvfrom(self, timeout: float | None = None) -> tuple[bytes, Address]:
        """The next datagram and its sender; TimeoutError after `timeout` seconds."""
        self._check_open()
        if timeout is None:
            return await self._queue.get()
        with fail_after(timeout):
            received = await self._queue.get()
        return received

    def _deliver(
        self, source: bytes, source_port: int, destination: bytes, payload: memoryview, at: float
    ) -> None:
        # Copied: the payload is a view into a receive buffer.
        if not self._queue.try_put((bytes(payload), (format_address(source), source_port))):
            self.dropped += 1

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "the socket is closed")


class UdpResponder(_UdpPort):
    """Answers every datagram sent to a port as it arrives, on the stack's receive path: for
    request-response protocols such as DNS, whose answer needs no waiting. No queue and no
    thread switch per datagram, and the replies to one batch of received frames leave in one
    batch of writes (the interface flushes after each batch).

    `answer(payload)` gets a view of the request (valid only during the call) and returns the
    reply, or None to send nothing. The reply goes back to where the request came from."""

    def __init__(self, interface: Interface, port: int, answer: Answer) -> None:
        super().__init__(interface)
        self._answer = answer
        self.answered = 0
        self.unanswered = 0  # requests answer() chose to leave unanswered
        self.failed = 0  # requests answer() raised on, or whose reply could not be sent
        self.port = self._stack.udp_bind(port, self._deliver)

    def _deliver(
        self, source: bytes, source_port: int, destination: bytes, payload: memoryview, at: float
    ) -> None:
        try:
            reply = self._answer(payload)
            if reply is None:
                self.unanswered += 1
            elif self._stack.udp_send(self.port, source, source_port, reply, at):
                self.answered += 1
            else:
                self.failed += 1
        except Exception:  # one bad request must not stop the interface's reader
            self.failed += 1


async def ping(
    interface: Interface, host: str, *, timeout: float = 1.0, data: bytes = b"", sequence: int = 0
) -> float:
    """Send one ICMP echo request; the round-trip time in seconds, or TimeoutError."""
    stack = interface.stack
    ident = random_below(0x10000)
    answered = Event()
    rtt = 0.0

    def on_reply(source: bytes, reply_sequence: int, body: memoryview, at: float) -> None:
        nonlocal rtt
        if source == destination and reply_sequence == sequence and bytes(body) == data:
            rtt = at - sent_at
            answered.set()

    destination = parse_address(host)
    stack.bind_echo(ident, on_reply)
    try:
        sent_at = now()
        if not stack.ping(destination, ident, sequence, data, sent_at):
            raise OSError(errno.ENETUNREACH, f"no route to {host}")
        interface.flush()
        with fail_after(timeout):
            await answered.wait()
    finally:
        stack.unbind_echo(ident)
    return rtt
