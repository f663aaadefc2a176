"""ICMP (RFC 792): echo request and reply, and the destination-unreachable errors we send."""

from __future__ import annotations

from unikernel.net.ipv4 import checksum, ones_sum
from unikernel.net.malformed import Malformed

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview

ECHO_REPLY = 0
DESTINATION_UNREACHABLE = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11

PROTOCOL_UNREACHABLE = 2  # codes of DESTINATION_UNREACHABLE
PORT_UNREACHABLE = 3

HEADER_LEN = 8


class Message:
    """`rest` is the header's last 4 bytes as an int (identifier and sequence for echoes);
    `body` is a view into the received buffer."""

    __slots__ = ("body", "code", "rest", "type")

    def __init__(self, type: int, code: int, rest: int, body: memoryview) -> None:
        self.type = type
        self.code = code
        self.rest = rest
        self.body = body

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        return self.rest & 0xFFFF


def parse(data: Buffer) -> Message:
    if len(data) < HEADER_LEN:
        raise Malformed("truncated")
    if checksum(data):
        raise Malformed("checksum")
    view = memoryview(data)
    return Message(view[0], view[1], int.from_bytes(view[4:8], "big"), view[8:])


def build(type: int, code: int, rest: int, body: Buffer) -> bytes:
    header = bytes((type, code, 0, 0)) + rest.to_bytes(4, "big")
    sum_ = checksum(body, ones_sum(header))
    return b"".join((header[:2], sum_.to_bytes(2, "big"), header[4:], body))


def echo_request(ident: int, sequence: int, data: Buffer) -> bytes:
    return build(ECHO_REQUEST, 0, ident << 16 | sequence, data)


def echo_reply(request: Message) -> bytes:
    """The reply to an echo request: same identifier, sequence and data."""
    return build(ECHO_REPLY, 0, request.rest, request.body)


def unreachable(code: int, original: Buffer) -> bytes:
    """Destination unreachable, quoting the offending datagram's header and 8 payload bytes
    (`original` is cut to that by the caller)."""
    return build(DESTINATION_UNREACHABLE, code, 0, original)
