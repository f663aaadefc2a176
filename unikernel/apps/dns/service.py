"""The DNS appliance's driver: an Authority (authority.py, sans-IO) served on our UDP and TCP.

UDP queries are answered on the network's receive path as they arrive (UdpResponder): no
thread per query, and the answers to a batch of frames leave together. TCP (RFC 7766: the
client's retry after a truncated answer, and zone-sized answers) gets a thread per
connection, several queries per connection, answered in order; connections idle for
`tcp_idle` seconds are closed, and beyond `tcp_connections` at once new ones are refused.
"""

from __future__ import annotations

from unikernel.apps.dns.wire import TcpFraming
from unikernel.core.nursery import open_nursery
from unikernel.core.scheduler import Cancelled

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.apps.dns.authority import Authority
    from unikernel.net.service import NetworkService
    from unikernel.net.tcp_sockets import TcpSocket

DNS_PORT = 53


class DnsService:
    """Serves `authority` on `port` of `network` until cancelled; counts what it did."""

    def __init__(
        self,
        network: NetworkService,
        authority: Authority,
        port: int = DNS_PORT,
        *,
        tcp_connections: int = 64,
        tcp_idle: float = 10.0,
    ) -> None:
        self.network = network
        self.authority = authority
        self.port = port
        self.tcp_connections = tcp_connections
        self.tcp_idle = tcp_idle
        self.tcp_open = 0
        self.tcp_answered = 0
        self.tcp_refused = 0  # connections closed at once: too many open
        self.tcp_failed = 0  # connections that ended in an error (reset, bad framing)

    async def serve(self) -> None:
        respond = self.authority.respond

        def answer_udp(query: memoryview) -> bytes | None:
            return respond(query, "udp")

        with self.network.answer_udp(self.port, answer_udp):
            listener = self.network.listen(self.port)
            try:
                async with open_nursery() as connections:
                    while True:
                        sock = await listener.accept()
                        if self.tcp_open >= self.tcp_connections:
                            self.tcp_refused += 1
                            sock.abort()
                            continue
                        self.tcp_open += 1
                        connections.spawn(self._serve_tcp, sock)
            finally:
                listener.close()

    async def _serve_tcp(self, sock: TcpSocket) -> None:
        framing = TcpFraming()
        respond = self.authority.respond
        try:
            while True:
                data = await sock.recv(timeout=self.tcp_idle)
                if not data:
                    break  # the client is done
                for query in framing.feed(data):
                    reply = respond(query, "tcp")
                    if reply is not None:
                        await sock.send(framing.frame(reply), timeout=self.tcp_idle)
                        self.tcp_answered += 1
            sock.close()
        except Cancelled:
            sock.abort()
            raise
        except TimeoutError:  # idle too long: the client may open another
            sock.close()
        except (OSError, ValueError):  # reset, or framing broken (ValueError from the framing)
            self.tcp_failed += 1
            sock.abort()
        finally:
            self.tcp_open -= 1
