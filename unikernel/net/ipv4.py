"""IPv4 (RFC 791): addresses, the Internet checksum, the header, and fragmenting on output.

Reassembly has its own module (reassembly.py). A host does not forward, so TTL matters only on
output; received datagrams are not dropped for a low TTL (RFC 1122, 3.2.1.7).
"""

from __future__ import annotations

import struct

from unikernel.net.malformed import Malformed

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview

ICMP = 1
TCP = 6
UDP = 17

HEADER_LEN = 20
MAX_LENGTH = 0xFFFF
DEFAULT_TTL = 64
ANY = bytes(4)
BROADCAST = b"\xff" * 4

_DONT_FRAGMENT = 0x4000
_MORE_FRAGMENTS = 0x2000
_OFFSET_MASK = 0x1FFF

# version+IHL, TOS, total length, id, flags+offset, TTL, protocol, checksum, source, destination
_HEADER = struct.Struct("!BBHHHBBH4s4s")
_WORDS = struct.Struct("!10H")


# Addresses: 4-byte bytes, which are hashable and go into headers as they are.


def parse_address(text: str) -> bytes:
    """Dotted quad to 4 bytes; ValueError for anything else (leading zeros included, which
    some parsers read as octal)."""
    parts = text.split(".")
    if len(parts) != 4 or not all(_is_octet(part) for part in parts):
        raise ValueError(f"not an IPv4 address: {text!r}")
    return bytes(int(part) for part in parts)


def _is_octet(part: str) -> bool:
    return (
        part.isascii()
        and part.isdigit()
        and len(part) <= 3
        and (part == "0" or not part.startswith("0"))
        and int(part) <= 255
    )


def format_address(address: bytes | memoryview) -> str:
    return f"{address[0]}.{address[1]}.{address[2]}.{address[3]}"


def netmask(prefix_len: int) -> bytes:
    if not 0 <= prefix_len <= 32:
        raise ValueError(f"a prefix length is 0 to 32, not {prefix_len}")
    return (0xFFFFFFFF << (32 - prefix_len) & 0xFFFFFFFF).to_bytes(4, "big")


def same_network(a: bytes, b: bytes, prefix_len: int) -> bool:
    shift = 32 - prefix_len
    return int.from_bytes(a, "big") >> shift == int.from_bytes(b, "big") >> shift


def is_group(address: bytes | memoryview) -> bool:
    """Multicast, reserved (class E) or limited broadcast: never a datagram's source."""
    return address[0] >= 224


# The Internet checksum (RFC 1071).


def ones_sum(data: Buffer) -> int:
    """The 16-bit one's complement sum of `data`'s big-endian words (an odd length is padded
    with a zero byte), 0 to 0xFFFF. Sums of even-length pieces add up: pass them to checksum().
    """
    # Read as one big number, data is the sum of word_i * 2**(16 i), and 2**16 is 1 modulo
    # 0xFFFF: one division in C folds every word at once (a Python loop costs ~20 ns a word).
    # Little-endian reading is twice as fast, and only swaps the sum's bytes (RFC 1071, 2.B);
    # it also pads an odd length at the right end for free.
    value = int.from_bytes(data, "little")
    folded = mod_ffff(value)
    if not folded and value:
        folded = 0xFFFF  # one's complement has two zeros: only all-zero data sums to +0
    return (folded >> 8) | (folded & 0xFF) << 8


# Halving rather than dividing: 2**16 is 1 modulo 0xFFFF, so the two parts of a number split at
# a multiple of 16 bits add up to the same value modulo 0xFFFF. CPython's `%` divides digit by
# digit (about 5 ns per 30 bits); a shift, an AND and an addition cost less than half of that,
# so a large number is halved down to about 1,000 bits before `%` (a 1,500-byte packet: 25% less
# time). The splits are multiples of 240 bits (16, and 30 for CPython's digit): whole digits
# move. The masks cover packets of up to 1,920 bytes; larger ones (jumbo frames, reassembled
# datagrams) are first halved with masks made for them.
_M7680, _M3840, _M1920, _M960 = ((1 << bits) - 1 for bits in (7680, 3840, 1920, 960))


def mod_ffff(value: int) -> int:
    """`value` (>= 0) modulo 0xFFFF, as `value % 0xFFFF` but faster for the large numbers
    that packets read as."""
    bits = value.bit_length()
    while bits > 2 * 7680:
        half = bits // 480 * 240
        value = (value >> half) + (value & ((1 << half) - 1))
        bits = value.bit_length()
    # Unrolled (a loop costs a few percent more); each step only where the number is larger.
    if bits > 7680:
        value = (value >> 7680) + (value & _M7680)
    if bits > 3840:
        value = (value >> 3840) + (value & _M3840)
    if bits > 1920:
        value = (value >> 1920) + (value & _M1920)
    if bits > 960:
        value = (value >> 960) + (value & _M960)
    return value % 0xFFFF


def checksum(data: Buffer, initial: int = 0) -> int:
    """The Internet checksum of `data`, `initial` being the sum (ones_sum() or
    pseudo_header_sum()) of what comes before it. Over data that carries its own correct
    checksum, the result is 0."""
    total = ones_sum(data) + initial
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header_sum(source: bytes, destination: bytes, protocol: int, length: int) -> int:
    """The sum of the pseudo-header that UDP and TCP checksums cover (RFC 768, RFC 9293)."""
    src = int.from_bytes(source, "big")
    dst = int.from_bytes(destination, "big")
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + protocol + length


# The header.


class Packet:
    """A received datagram (or fragment). `header` and `payload` are views into the received
    buffer: copy what must outlive the call that handed them over."""

    __slots__ = (
        "destination",
        "flags",
        "header",
        "ident",
        "payload",
        "protocol",
        "source",
        "tos",
        "ttl",
    )

    # Positional only: this runs for every packet, and keyword arguments cost twice as much.
    def __init__(
        self,
        source: bytes,
        destination: bytes,
        protocol: int,
        payload: memoryview,
        header: memoryview,
        ttl: int,
        tos: int,
        ident: int,
        flags: int,
        /,
    ) -> None:
        self.source = source
        self.destination = destination
        self.protocol = protocol
        self.payload = payload
        self.header = header
        self.ttl = ttl
        self.tos = tos
        self.ident = ident
        self.flags = flags  # the header's flags and fragment offset field, as received

    @property
    def dont_fragment(self) -> bool:
        return bool(self.flags & _DONT_FRAGMENT)

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags & _MORE_FRAGMENTS)

    @property
    def offset(self) -> int:
        """The fragment's offset in bytes."""
        return (self.flags & _OFFSET_MASK) << 3

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags & (_MORE_FRAGMENTS | _OFFSET_MASK))


def parse(data: Buffer) -> Packet:
    """Validate and split a datagram; bytes past its total length (Ethernet padding) are cut."""
    if len(data) < HEADER_LEN:
        raise Malformed("truncated")
    view = memoryview(data)
    (version_ihl, tos, total_length, ident, flags, ttl, protocol, _, source, destination) = (
        _HEADER.unpack_from(view)
    )
    if version_ihl >> 4 != 4:
        raise Malformed("version")
    header_len = (version_ihl & 0x0F) * 4
    if header_len < HEADER_LEN:
        raise Malformed("header-length")
    if total_length < header_len:
        raise Malformed("total-length")
    if total_length > len(view):
        raise Malformed("truncated")
    if header_len == HEADER_LEN:
        if not plain_header_checks(view):
            raise Malformed("checksum")
    elif checksum(view[:header_len]):
        raise Malformed("checksum")
    if is_group(source):
        raise Malformed("source")
    return Packet(
        source,
        destination,
        protocol,
        view[header_len:total_length],
        view[:header_len],
        ttl,
        tos,
        ident,
        flags,
    )


def plain_header_checks(data: Buffer, offset: int = 0) -> bool:
    """Whether the 20-byte header without options at `offset` has a right checksum: summing
    its ten words is quicker than the general checksum, and a right one sums to a nonzero
    multiple of 0xFFFF (one's complement's -0)."""
    total = sum(_WORDS.unpack_from(data, offset))
    return bool(total) and not total % 0xFFFF


def build_header(
    source: bytes,
    destination: bytes,
    protocol: int,
    payload_length: int,
    ident: int,
    *,
    ttl: int = DEFAULT_TTL,
    tos: int = 0,
    dont_fragment: bool = False,
    more_fragments: bool = False,
    offset: int = 0,
) -> bytes:
    """A 20-byte header (no options) for a payload of `payload_length` bytes."""
    total_length = HEADER_LEN + payload_length
    if total_length > MAX_LENGTH:
        raise ValueError(f"an IPv4 datagram holds at most {MAX_LENGTH} bytes, not {total_length}")
    if offset & 7:
        raise ValueError(f"fragment offsets are multiples of 8, not {offset}")
    flags = (
        (_DONT_FRAGMENT if dont_fragment else 0)
        | (_MORE_FRAGMENTS if more_fragments else 0)
        | offset >> 3
    )
    # Packed twice, the second time with the checksum of the first: one sum in C is cheaper
    # than adding the fields up in Python.
    header = _HEADER.pack(
        0x45, tos, total_length, ident, flags, ttl, protocol, 0, source, destination
    )
    return _HEADER.pack(
        0x45,
        tos,
        total_length,
        ident,
        flags,
        ttl,
        protocol,
        ~ones_sum(header) & 0xFFFF,
        source,
        destination,
    )


def build(
    source: bytes,
    destination: bytes,
    protocol: int,
    payload: Buffer,
    ident: int,
    *,
    ttl: int = DEFAULT_TTL,
    dont_fragment: bool = False,
) -> bytes:
    header = build_header(
        source, destination, protocol, len(payload), ident, ttl=ttl, dont_fragment=dont_fragment
    )
    return b"".join((header, payload))


def fragment(
    source: bytes,
    destination: bytes,
    protocol: int,
    payload: Buffer,
    ident: int,
    mtu: int,
    *,
    ttl: int = DEFAULT_TTL,
) -> list[bytes]:
    """The datagram as packets of at most `mtu` bytes (one, if it fits)."""
    step = (mtu - HEADER_LEN) & ~7
    if step <= 0:
        raise ValueError(f"an MTU of {mtu} leaves no room for fragments")
    view = memoryview(payload)
    size = len(view)
    if size + HEADER_LEN > MAX_LENGTH:
        raise ValueError(f"an IPv4 datagram holds at most {MAX_LENGTH} bytes")
    packets = []
    for start in range(0, max(size, 1), step):
        chunk = view[start : start + step]
        header = build_header(
            source,
            destination,
            protocol,
            len(chunk),
            ident,
            ttl=ttl,
            more_fragments=start + step < size,
            offset=start,
        )
        packets.append(b"".join((header, chunk)))
    return packets
