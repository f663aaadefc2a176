"""UDP (RFC 768): datagrams with the pseudo-header checksum, and a demultiplexer by port."""

from __future__ import annotations

import errno
import struct

from unikernel.core.entropy import random_below
from unikernel.net.ipv4 import UDP, checksum, ones_sum, pseudo_header_sum
from unikernel.net.malformed import Malformed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Buffer = bytes | bytearray | memoryview
    # (source address, source port, destination address, payload view, now)
    Handler = Callable[[bytes, int, bytes, memoryview, float], None]

HEADER_LEN = 8
EPHEMERAL_FIRST = 49152  # the IANA dynamic range, to 65535
_HEADER = struct.Struct("!HHHH")


class Datagram:
    """`payload` is a view into the received buffer."""

    __slots__ = ("destination_port", "payload", "source_port")

    def __init__(self, source_port: int, destination_port: int, payload: memoryview) -> None:
        self.source_port = source_port
        self.destination_port = destination_port
        self.payload = payload


def parse(segment: Buffer, source: bytes, destination: bytes) -> Datagram:
    """Validate a datagram between these addresses; bytes past its length field are cut."""
    if len(segment) < HEADER_LEN:
        raise Malformed("truncated")
    view = memoryview(segment)
    source_port, destination_port, length, sum_ = _HEADER.unpack_from(view)
    if length < HEADER_LEN or length > len(view):
        raise Malformed("length")
    view = view[:length]
    # A zero checksum means the sender computed none (allowed over IPv4).
    if sum_ and checksum(view, pseudo_header_sum(source, destination, UDP, length)):
        raise Malformed("checksum")
    return Datagram(source_port, destination_port, view[HEADER_LEN:])


def build(
    source: bytes, destination: bytes, source_port: int, destination_port: int, payload: Buffer
) -> bytes:
    length = HEADER_LEN + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"a UDP datagram holds at most {0xFFFF - HEADER_LEN} bytes")
    header = _HEADER.pack(source_port, destination_port, length, 0)
    initial = pseudo_header_sum(source, destination, UDP, length) + ones_sum(header)
    # A computed 0 goes out as 0xFFFF, its other form: 0 on the wire means "no checksum".
    sum_ = checksum(payload, initial) or 0xFFFF
    return b"".join((header[:6], sum_.to_bytes(2, "big"), payload))


class Demux:
    """Which handler gets the datagrams sent to each local port."""

    def __init__(self, random_below: Callable[[int], int] = random_below) -> None:
        self._handlers: dict[int, Handler] = {}
        self._random_below = random_below

    def bind(self, port: int, handler: Handler) -> int:
        """Give `port`'s datagrams to `handler`; port 0 picks a free ephemeral port (from a
        random start, so that ports are hard to guess). Returns the port."""
        if port == 0:
            port = self._free_port()
        elif not 0 < port <= 0xFFFF:
            raise ValueError(f"no UDP port {port}")
        elif port in self._handlers:
            raise OSError(errno.EADDRINUSE, f"UDP port {port} is taken")
        self._handlers[port] = handler
        return port

    def unbind(self, port: int) -> None:
        self._handlers.pop(port, None)

    def handler(self, port: int) -> Handler | None:
        return self._handlers.get(port)

    def _free_port(self) -> int:
        count = 0x10000 - EPHEMERAL_FIRST
        start = self._random_below(count)
        for i in range(count):
            port = EPHEMERAL_FIRST + (start + i) % count
            if port not in self._handlers:
                return port
        raise OSError(errno.EADDRINUSE, "every ephemeral UDP port is taken")
