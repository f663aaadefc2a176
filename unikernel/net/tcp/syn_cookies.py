"""SYN cookies (RFC 4987 3.6): a listener whose SYN queue is full answers a SYN without keeping
any state, with an initial sequence number that encodes what the connection needs; the ACK that
completes the handshake brings it back (as its acknowledgment number minus one), and the
connection is made from it then. layer.py decides when to use them; this module only makes and
checks them.

The cookie, our ISN, is laid out as RFC 4987 describes (D. J. Bernstein's layout):

    bits 31-27  the time counter, mod 32: one step every PERIOD seconds
    bits 26-24  the index of the peer's MSS in MSS_TABLE (rounded down)
    bits 23-0   a MAC of the connection: both addresses and ports, the peer's ISN, the full
                counter, the MSS index and the options below, keyed with a secret

A cookie is valid in the period it was made and the next (64 to 128 s). The MAC is keyed
BLAKE2s (RFC 7693, a MAC by design) with a 32-byte secret drawn once from the stack's entropy
source; a blind forger must guess 24 bits for each address, port and ISN it tries.

Options travel as Linux's do: in the low 6 bits of our SYN-ACK's timestamp (RFC 7323), which
the peer echoes in every segment, the ACK included, as TSecr:

    bits 3-0  the peer's window scale (15: none)
    bit 4     SACK permitted
    bit 5     timestamps (always set there; a peer without them echoes nothing)

They are covered by the MAC, so a peer cannot change them. A peer that offers no timestamps has
nowhere to carry them back: its cookie connection goes without window scaling and SACK (our
SYN-ACK offers neither, so both ends agree). The MSS comes back rounded down to MSS_TABLE.
Timestamps start from an offset that is a keyed hash of the connection (RFC 7323 5.4, as Linux
computes its own), which the ACK's handler can compute again.
"""

from __future__ import annotations

# hashlib.blake2s is this one; importing hashlib would load OpenSSL, 4 MB in the image.
from _blake2 import blake2s
from struct import Struct

PERIOD = 64.0  # seconds per step of the time counter
LIFETIME = 2 * PERIOD  # the longest a cookie stays valid
# The MSS values a cookie can carry: the minimum we accept, the default (RFC 9293 3.7.1),
# common tunnels and VPNs, PPPoE, Ethernet and jumbo frames. A peer's MSS rounds down.
MSS_TABLE = (64, 536, 1200, 1300, 1400, 1440, 1460, 8960)
NO_WSCALE = 15
OPTION_BITS = 6
OPTION_MASK = (1 << OPTION_BITS) - 1
_SACK = 0x10
_TIMESTAMPS = 0x20
NO_OPTIONS = NO_WSCALE  # what a peer without timestamps gets: nothing

_COUNTER_SHIFT = 27
_MSS_SHIFT = 24
_MAC_MASK = (1 << _MSS_SHIFT) - 1
_MASK = 0xFFFFFFFF
_INPUT = Struct("!4sH4sHIIBB")  # remote ip, port, local ip, port, peer ISN, counter, MSS, options
_TUPLE = Struct("!4sH4sH")


def mss_index(mss: int) -> int:
    """The index of the largest MSS_TABLE entry not above `mss` (the first, below them all)."""
    index = 0
    for i, value in enumerate(MSS_TABLE):
        if value <= mss:
            index = i
    return index


def encode_options(wscale: int, sack: bool) -> int:
    """The option bits for a peer that offered timestamps; `wscale` -1 for none."""
    return (NO_WSCALE if wscale < 0 else wscale) | (_SACK if sack else 0) | _TIMESTAMPS


def decode_options(options: int) -> tuple[bool, int, bool]:
    """(timestamps, window scale or -1, SACK) from option bits."""
    wscale = options & 0x0F
    return (
        bool(options & _TIMESTAMPS),
        -1 if wscale == NO_WSCALE else wscale,
        bool(options & _SACK),
    )


class SynCookies:
    """Makes and checks the cookies of one TCP layer, under one secret."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a SYN cookie secret needs at least 16 bytes")
        self._secret = secret[:32]

    def make(
        self,
        remote_ip: bytes,
        remote_port: int,
        local_ip: bytes,
        local_port: int,
        peer_isn: int,
        mss: int,
        options: int,
        now: float,
    ) -> int:
        """Our ISN for a SYN from remote to local with sequence number `peer_isn`, the peer's
        MSS rounded down to MSS_TABLE and `options` (encode_options(), or NO_OPTIONS)."""
        counter = int(now // PERIOD)
        index = mss_index(mss)
        mac = self._mac(
            remote_ip, remote_port, local_ip, local_port, peer_isn, counter, index, options
        )
        return (counter & 0x1F) << _COUNTER_SHIFT | index << _MSS_SHIFT | mac

    def check(
        self,
        remote_ip: bytes,
        remote_port: int,
        local_ip: bytes,
        local_port: int,
        peer_isn: int,
        cookie: int,
        options: int,
        now: float,
    ) -> int:
        """The MSS that `cookie` carries if it is one we made for this connection, with these
        options, no longer than LIFETIME ago; else -1."""
        current = int(now // PERIOD)
        age = (current - (cookie >> _COUNTER_SHIFT)) & 0x1F
        if age > 1:
            return -1  # stale (or from the future)
        index = (cookie >> _MSS_SHIFT) & 0x07
        mac = self._mac(
            remote_ip, remote_port, local_ip, local_port, peer_isn, current - age, index, options
        )
        return MSS_TABLE[index] if mac == cookie & _MAC_MASK else -1

    def ts_offset(
        self, remote_ip: bytes, remote_port: int, local_ip: bytes, local_port: int
    ) -> int:
        """The connection's timestamp offset: random to others, the same at SYN and at ACK."""
        digest = blake2s(
            _TUPLE.pack(remote_ip, remote_port, local_ip, local_port),
            digest_size=4,
            key=self._secret,
            person=b"tsoff",
        ).digest()
        return int.from_bytes(digest, "big")

    def _mac(
        self,
        remote_ip: bytes,
        remote_port: int,
        local_ip: bytes,
        local_port: int,
        peer_isn: int,
        counter: int,
        index: int,
        options: int,
    ) -> int:
        message = _INPUT.pack(
            remote_ip,
            remote_port,
            local_ip,
            local_port,
            peer_isn & _MASK,
            counter & _MASK,
            index,
            options,
        )
        digest = blake2s(message, digest_size=4, key=self._secret, person=b"cookie").digest()
        return int.from_bytes(digest, "big") & _MAC_MASK


def cookie_timestamp(ts_clock: int, options: int) -> int:
    """Our SYN-ACK's TSval: our timestamp clock's value `ts_clock` with its low bits replaced
    by `options`, never above it, so that the connection's later timestamps never go back."""
    value = (ts_clock & ~OPTION_MASK) | options
    if value > ts_clock:
        value -= 1 << OPTION_BITS
    return value & _MASK
