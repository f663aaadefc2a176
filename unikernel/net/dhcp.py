"""A DHCP client (RFC 2131, options from RFC 2132): the message format and its state machine.

    INIT -> SELECTING --OFFER--> REQUESTING --ACK--> BOUND --T1--> RENEWING --T2--> REBINDING
     ^          ^                     |                                 |               |
     |          +----- no answer -----+                                 |               |
     +------------------------------ NAK (retry after restart_delay) ---+---------------+
                                              or the lease ends (at once) --------------+

The client is fed DHCP messages (UDP payloads from port 67) and the time, and returns the
messages to send, each with its destination address (from port 68 to port 67; the source
address is the lease's while there is one, 0.0.0.0 otherwise). `lease` holds the address
configuration while the client is bound, renewing or rebinding.

Requests are repeated after 4, 8, 16 ... up to 64 s, each randomised by +-1 s (RFC 2131,
4.1); a REQUEST that gets no answer `max_requests` times starts over with a DISCOVER. While
renewing and rebinding, the client repeats after half the time left (at least 60 s).
"""

from __future__ import annotations

import struct

from unikernel.core.entropy import random_below as _random_below
from unikernel.net.config import Ipv4Config
from unikernel.net.ipv4 import ANY, BROADCAST
from unikernel.net.malformed import Malformed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    Buffer = bytes | bytearray | memoryview
    Outgoing = tuple[bytes, bytes]  # (destination address, DHCP message)

SERVER_PORT = 67
CLIENT_PORT = 68

BOOTREQUEST = 1
BOOTREPLY = 2
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE = range(1, 8)

# Options (RFC 2132).
PAD = 0
SUBNET_MASK = 1
ROUTER = 3
DNS_SERVERS = 6
HOSTNAME = 12
REQUESTED_ADDRESS = 50
LEASE_TIME = 51
MESSAGE_TYPE = 53
SERVER_ID = 54
PARAMETER_REQUEST = 55
RENEWAL_TIME = 58
REBINDING_TIME = 59
CLIENT_ID = 61
END = 255

BROADCAST_FLAG = 0x8000  # asks the server to broadcast its replies: we have no address yet
_MAGIC = b"\x63\x82\x53\x63"
# op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s")
_OPTIONS_AT = _FIXED.size + 64 + 128 + len(_MAGIC)  # after sname, file and the cookie
_MIN_LEN = 300  # BOOTP's minimum, which some relays still insist on
_INFINITE = 0xFFFFFFFF


class Message:
    __slots__ = ("chaddr", "ciaddr", "flags", "op", "options", "siaddr", "xid", "yiaddr")

    def __init__(
        self,
        op: int,
        xid: int,
        chaddr: bytes,
        options: dict[int, bytes],
        *,
        flags: int = 0,
        ciaddr: bytes = ANY,
        yiaddr: bytes = ANY,
        siaddr: bytes = ANY,
    ) -> None:
        self.op = op
        self.xid = xid
        self.chaddr = chaddr  # the client's MAC
        self.options = options
        self.flags = flags
        self.ciaddr = ciaddr
        self.yiaddr = yiaddr
        self.siaddr = siaddr

    @property
    def type(self) -> int | None:
        value = self.options.get(MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None


def parse(data: Buffer) -> Message:
    if len(data) < _OPTIONS_AT:
        raise Malformed("truncated")
    view = memoryview(data)
    op, htype, hlen, _, xid, _, flags, ciaddr, yiaddr, siaddr, _, chaddr = _FIXED.unpack_from(view)
    if view[_OPTIONS_AT - 4 : _OPTIONS_AT] != _MAGIC:
        raise Malformed("magic")
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise Malformed("op")
    if (htype, hlen) != (1, 6):
        raise Malformed("hardware")
    options = _parse_options(view[_OPTIONS_AT:])
    return Message(
        op, xid, chaddr[:6], options, flags=flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr
    )


def _parse_options(view: memoryview) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    i = 0
    while i < len(view):
        code = view[i]
        if code == END:
            break
        if code == PAD:
            i += 1
            continue
        if i + 1 >= len(view) or i + 2 + view[i + 1] > len(view):
            raise Malformed("option")
        length = view[i + 1]
        # An option given more than once is one long option cut in pieces (RFC 3396).
        options[code] = options.get(code, b"") + view[i + 2 : i + 2 + length]
        i += 2 + length
    return options


def build(
    op: int,
    xid: int,
    chaddr: bytes,
    options: Iterable[tuple[int, bytes]],
    *,
    flags: int = 0,
    secs: int = 0,
    ciaddr: bytes = ANY,
    yiaddr: bytes = ANY,
    siaddr: bytes = ANY,
) -> bytes:
    fixed = _FIXED.pack(
        op, 1, 6, 0, xid, secs, flags, ciaddr, yiaddr, siaddr, ANY, chaddr.ljust(16, b"\0")
    )
    parts = [fixed, bytes(64 + 128), _MAGIC]
    for code, value in options:
        # Longer than 255 bytes: several pieces of the same option (RFC 3396).
        for start in range(0, max(len(value), 1), 255):
            piece = value[start : start + 255]
            parts.append(bytes((code, len(piece))) + piece)
    parts.append(bytes((END,)))
    message = b"".join(parts)
    return message.ljust(_MIN_LEN, b"\0")


class Lease:
    """An address configuration from a server, and when to renew, rebind and give it up
    (times on the client's clock; `math.inf` for an infinite lease)."""

    __slots__ = ("config", "expires_at", "rebind_at", "renew_at", "server")

    def __init__(
        self,
        config: Ipv4Config,
        server: bytes,
        renew_at: float,
        rebind_at: float,
        expires_at: float,
    ) -> None:
        self.config = config
        self.server = server
        self.renew_at = renew_at
        self.rebind_at = rebind_at
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"<Lease {self.config!r} until {self.expires_at}>"


INIT = "init"
SELECTING = "selecting"
REQUESTING = "requesting"
BOUND = "bound"
RENEWING = "renewing"
REBINDING = "rebinding"

_INF = float("inf")


class DhcpClient:
    def __init__(
        self,
        mac: bytes,
        *,
        hostname: str | None = None,
        max_requests: int = 4,
        max_backoff: float = 64.0,
        restart_delay: float = 10.0,
        random_below: Callable[[int], int] = _random_below,
    ) -> None:
        self.mac = mac
        self.hostname = hostname
        self.max_requests = max_requests
        self.max_backoff = max_backoff
        self.restart_delay = restart_delay  # after a NAK
        self._random_below = random_below
        self.state = INIT
        self.lease: Lease | None = None
        self.xid = 0
        self._offer: tuple[bytes, bytes] | None = None  # (offered address, server)
        self._attempts = 0
        self._started = 0.0  # when this exchange began, for the `secs` field
        self._deadline = _INF

    def start(self, now: float) -> list[Outgoing]:
        """Begin (or begin again) by looking for a server."""
        return self._discover(now)

    def receive(self, payload: Buffer, now: float) -> list[Outgoing]:
        """Take a message from a server; raises Malformed. Replies to other clients or to
        other exchanges are ignored."""
        message = parse(payload)
        if message.op != BOOTREPLY or message.xid != self.xid or message.chaddr != self.mac:
            return []
        kind = message.type
        server = message.options.get(SERVER_ID, b"")
        if self.state == SELECTING and kind == OFFER:
            if len(server) != 4 or message.yiaddr == ANY:
                return []
            self._offer = (message.yiaddr, server)
            return self._enter(REQUESTING, now)
        if self.state not in (REQUESTING, RENEWING, REBINDING):
            return []
        if self.state == REQUESTING and self._offer and server and server != self._offer[1]:
            return []  # another server's answer to our broadcast REQUEST
        if kind == ACK:
            lease = self._lease_from(message, now)
            if lease is not None:
                self.lease = lease
                self.state = BOUND
                self._deadline = lease.renew_at
        elif kind == NAK:
            # Wait before starting over: a server that keeps refusing must not get a storm.
            self.lease = None
            self.state = INIT
            self._deadline = now + self.restart_delay
        return []

    def tick(self, now: float) -> list[Outgoing]:
        """Repeat what went unanswered, and move through the lease's times."""
        if now < self._deadline:
            return []
        state = self.state
        if state == INIT:
            return self._discover(now)
        if state == SELECTING:
            return self._send(now)
        if state == REQUESTING:
            if self._attempts >= self.max_requests:
                return self._discover(now)
            return self._send(now)
        lease = self.lease
        if lease is None:
            return []
        if now >= lease.expires_at:
            self.lease = None
            return self._discover(now)
        if now >= lease.rebind_at and state != REBINDING:
            return self._enter(REBINDING, now)
        if state == BOUND:
            return self._enter(RENEWING, now)
        return self._send(now)

    def next_deadline(self) -> float | None:
        return None if self._deadline == _INF else self._deadline

    def release(self) -> list[Outgoing]:
        """Give the lease back and stop."""
        lease = self.lease
        self.lease = None
        self.state = INIT
        self._deadline = _INF
        if lease is None:
            return []
        options = [(MESSAGE_TYPE, bytes((RELEASE,))), (SERVER_ID, lease.server)]
        message = build(BOOTREQUEST, self.xid, self.mac, options, ciaddr=lease.config.address)
        return [(lease.server, message)]

    def _discover(self, now: float) -> list[Outgoing]:
        self.xid = self._random_below(1 << 32)
        self._started = now
        self._offer = None
        return self._enter(SELECTING, now)

    def _enter(self, state: str, now: float) -> list[Outgoing]:
        self.state = state
        self._attempts = 0
        return self._send(now)

    def _send(self, now: float) -> list[Outgoing]:
        """Send the current state's message, and set when to send it again."""
        self._attempts += 1
        state = self.state
        if state in (SELECTING, REQUESTING):
            backoff = min(2.0 ** (self._attempts + 1), self.max_backoff)
            self._deadline = now + backoff + self._random_below(2001) / 1000 - 1.0
        else:
            lease = self.lease
            assert lease is not None
            until = lease.rebind_at if state == RENEWING else lease.expires_at
            self._deadline = min(until, now + max((until - now) / 2, 60.0))
        return [self._message(now)]

    def _message(self, now: float) -> Outgoing:
        secs = min(int(now - self._started), 0xFFFF)
        options = [(MESSAGE_TYPE, bytes((DISCOVER if self.state == SELECTING else REQUEST,)))]
        options.append((CLIENT_ID, b"\x01" + self.mac))
        if self.state == REQUESTING:
            assert self._offer is not None
            options += [(REQUESTED_ADDRESS, self._offer[0]), (SERVER_ID, self._offer[1])]
        if self.hostname:
            options.append((HOSTNAME, self.hostname.encode()))
        wanted = (SUBNET_MASK, ROUTER, DNS_SERVERS, LEASE_TIME, RENEWAL_TIME, REBINDING_TIME)
        options.append((PARAMETER_REQUEST, bytes(wanted)))
        lease = self.lease
        if self.state in (RENEWING, REBINDING) and lease is not None:
            # We have an address now: ciaddr, no broadcast flag; unicast to our server first.
            destination = lease.server if self.state == RENEWING else BROADCAST
            address = lease.config.address
            message = build(BOOTREQUEST, self.xid, self.mac, options, secs=secs, ciaddr=address)
            return (destination, message)
        flags = BROADCAST_FLAG
        return (BROADCAST, build(BOOTREQUEST, self.xid, self.mac, options, flags=flags, secs=secs))

    def _lease_from(self, ack: Message, now: float) -> Lease | None:
        options = ack.options
        address = ack.yiaddr if ack.yiaddr != ANY else ack.ciaddr
        if address == ANY:
            return None
        prefix_len = _prefix_len(options.get(SUBNET_MASK, b""), address)
        router = options.get(ROUTER, b"")
        gateway = router[:4] if len(router) >= 4 else None
        dns_bytes = options.get(DNS_SERVERS, b"")
        dns = tuple(dns_bytes[i : i + 4] for i in range(0, len(dns_bytes) - 3, 4))
        server = options.get(SERVER_ID, b"")
        if len(server) != 4:
            server = self.lease.server if self.lease else (self._offer or (ANY, ANY))[1]
        duration = _seconds(options.get(LEASE_TIME), 3600)
        renew = _seconds(options.get(RENEWAL_TIME), duration * 0.5)
        rebind = _seconds(options.get(REBINDING_TIME), duration * 0.875)
        if not renew <= rebind <= duration:
            renew, rebind = duration * 0.5, duration * 0.875
        config = Ipv4Config(address, prefix_len, gateway, dns)
        return Lease(config, server, now + renew, now + rebind, now + duration)


def _seconds(value: bytes | None, default: float) -> float:
    if value is None or len(value) != 4:
        return default
    seconds = int.from_bytes(value, "big")
    return _INF if seconds == _INFINITE else float(seconds)


def _prefix_len(mask: bytes, address: bytes) -> int:
    """The prefix length of a contiguous netmask; without one, the address's old class."""
    if len(mask) == 4:
        bits = int.from_bytes(mask, "big")
        prefix_len = bin(bits).count("1")
        if bits == (0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF:
            return prefix_len
    return 8 if address[0] < 128 else 16 if address[0] < 192 else 24
