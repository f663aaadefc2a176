"""The HTTP server's driver: the sans-IO engine (protocol.py) on our threads and a stream network
(our TCP, or hosted the host kernel's: unikernel.net.streams).

    server = HttpServer(network, site.handle, port=80)
    await server.serve()                      # until cancelled

A thread per connection feeds the engine what arrives and sends what it returns; requests on one
connection are handled in order (pipelined ones wait their turn), each by `handler`. Beyond
`max_connections` open at once, a new connection gets 503 and is closed. A client too slow to
send its request gets 408 (the engine's request timeout), one that stays idle between
requests is closed, and one too slow to take its response is reset after `send_timeout`;
none of them holds up the others.
"""

from __future__ import annotations

import time

from unikernel.apps.http.messages import Request, text_response
from unikernel.apps.http.protocol import CLOSED, NEED_DATA, Limits, ServerConnection
from unikernel.core.nursery import open_nursery
from unikernel.core.scheduler import Cancelled, move_on_after, now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from unikernel.apps.http.messages import Handler, Response
    from unikernel.net.streams import StreamListener, StreamNetwork, StreamSocket

HTTP_PORT = 80
RECEIVE_SIZE = 65536
REFUSAL_TIMEOUT = 1.0  # seconds a refused client gets to take its 503
# Closing with the client's bytes unread makes a kernel reset the connection, which can destroy
# the response still on its way (an error's, a refusal's): shut our side, read what comes for
# up to this long, then close (Apache's "lingering close").
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20


class HttpServer:
    """Serves `handler` on `port` until cancelled; counts what it did."""

    def __init__(
        self,
        network: StreamNetwork,
        handler: Handler,
        port: int = HTTP_PORT,
        *,
        limits: Limits | None = None,
        max_connections: int = 1024,
        send_timeout: float = 30.0,
        log: Callable[[str], object] | None = None,
    ) -> None:
        self.network = network
        self.handler = handler
        self.port = port
        self.limits = limits or Limits()
        self.max_connections = max_connections
        self.send_timeout = send_timeout
        self._log = log
        self._listener: StreamListener | None = None
        self.open = 0
        self.connections = 0
        self.requests = 0
        self.refused = 0  # answered 503: too many open
        self.rejected = 0  # requests the engine refused (4xx, 5xx of the protocol)
        self.timed_out = 0  # 408s sent, and idle connections closed
        self.errors = 0  # handlers that raised (answered 500)

    def listen(self) -> StreamListener:
        """Take the port now, before saying the server is up; serve() does if nobody has."""
        if self._listener is None:
            self._listener = self.network.listen(self.port, backlog=self.max_connections)
        return self._listener

    async def serve(self) -> None:
        listener = self.listen()
        try:
            async with open_nursery() as connections:
                while True:
                    sock = await listener.accept()
                    if self.open >= self.max_connections:
                        self.refused += 1
                        connections.spawn(self._refuse, sock)
                        continue
                    self.open += 1
                    self.connections += 1
                    connections.spawn(self._serve_connection, sock)
        finally:
            listener.close()

    async def _refuse(self, sock: StreamSocket) -> None:
        response = ServerConnection(self.limits).respond(
            text_response(503, "too many connections; try again"), time.time(), close=True
        )
        try:
            for piece in response:
                await sock.send(piece, timeout=REFUSAL_TIMEOUT)
            await linger_close(sock)
        except (OSError, TimeoutError):
            sock.abort()

    async def _serve_connection(self, sock: StreamSocket) -> None:
        # A response's last, partial segment must not wait for the ACK of the ones before it,
        # which a client may delay (40 ms on Linux): no Nagle, as nginx's tcp_nodelay.
        sock.nodelay = True
        conn = ServerConnection(self.limits, now=now())
        send_timeout = self.send_timeout
        try:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    deadline = conn.deadline()
                    try:
                        data = await sock.recv(
                            RECEIVE_SIZE, None if deadline is None else max(0.0, deadline - now())
                        )
                    except TimeoutError:
                        reply = conn.timed_out(now())
                        if reply is not None:
                            self.timed_out += 1
                            if reply:
                                await sock.send(reply, send_timeout)
                        continue
                    interim = conn.receive(data, now())
                    if interim:
                        await sock.send(interim, send_timeout)
                elif isinstance(event, Request):
                    response = await self._handle(event)
                    for piece in conn.respond(response, time.time()):
                        await sock.send(piece, send_timeout)
                    self.requests += 1
                elif event is CLOSED:
                    break
                else:  # a ProtocolFailure: its response, then CLOSED
                    self.rejected += 1
                    await sock.send(event.response, send_timeout)  # type: ignore[attr-defined]
            await linger_close(sock)
        except Cancelled:
            sock.abort()
            raise
        except (OSError, TimeoutError):  # reset, or too slow to take what we sent
            sock.abort()
        finally:
            self.open -= 1

    async def _handle(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except Exception as error:  # one bad request must not take the server down
            self.errors += 1
            if self._log is not None:
                self._log(f"http: {request.method} {request.target}: {error!r}")
            return text_response(500)


async def linger_close(sock: StreamSocket) -> None:
    """Close after the client has seen our FIN, reading (and dropping) what it still sends,
    for a bounded time and number of bytes."""
    sock.shutdown()
    read = 0
    try:
        with move_on_after(LINGER_SECONDS):
            while read < LINGER_BYTES:
                data = await sock.recv(RECEIVE_SIZE)
                if not data:
                    break
                read += len(data)
    except OSError:
        pass  # reset: nothing left to protect
    sock.close()
