"""TCP segments on the wire: the header (RFC 9293 3.1), its options, and the checksum.

parse_segment() turns received bytes into a Segment, or None for a segment to drop (too short,
a bad data offset, a bad checksum): it never raises, whatever the bytes. build_segment() does
the reverse, checksum included. Sequence and acknowledgment numbers here are the 32-bit wire
values; connection.py unwraps them.
"""

from __future__ import annotations

from struct import Struct

from unikernel.net.ipv4 import mod_ffff
from unikernel.net.segmentation import LargeSegment, partial_checksum

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview

# Control bits (RFC 9293 3.1).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20

HEADER_LEN = 20
MAX_HEADER_LEN = 60
PROTOCOL = 6  # IPv4 protocol number of TCP

# source port, destination port, seq, ack, data offset << 4, flags, window, checksum, urgent
_HEADER = Struct("!HHIIBBHHH")
_TIMESTAMPS = Struct("!BBBBII")  # NOP, NOP, kind 8, length 10, TSval, TSecr
# The header with the timestamp option alone, as every segment carries once they are on (RFC
# 7323 appendix A), read or written at once: NOP, NOP, kind and length as one word.
HEADER_TS = Struct("!HHIIBBHHHIII")
TS_PREFIX = 0x0101080A
TS_HEADER_LEN = 32  # HEADER_TS's size: the header with the timestamps option alone
TS_OFFSET = TS_HEADER_LEN // 4 << 4  # its data offset field: 8 words
_U16 = Struct("!H")
_CHECKSUM = Struct("<H")  # at offset 16, little-endian as residue() sums: see seal()
_CHECKSUM_OFFSET = 16
SEQ_FIELD = Struct("!I")  # where a header made once is reused (Sender's runs): at SEQ_OFFSET
SEQ_OFFSET = 4
FLAGS_OFFSET = 13
_U32 = Struct("!I")

# Option kinds (RFC 9293 3.2, RFC 7323, RFC 2018).
_EOL = 0
_NOP = 1
_MSS = 2
_WSCALE = 3
_SACK_PERMITTED = 4
_SACK = 5
_TIMESTAMP = 8

MAX_WSCALE = 14  # RFC 7323 2.3: larger shifts are read as 14


class Segment:
    """A parsed segment. Absent options read as -1 (mss, wscale) or False (has_ts, sack_ok).

    `payload` may be a view into the caller's buffer: copy what must outlive the call.
    """

    __slots__ = (
        "ack",
        "dst_port",
        "flags",
        "has_ts",
        "mss",
        "payload",
        "sack",
        "sack_ok",
        "seq",
        "src_port",
        "tsecr",
        "tsval",
        "window",
        "wscale",
    )

    def __init__(
        self,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: Buffer,
    ) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.mss = -1
        self.wscale = -1
        self.sack_ok = False
        self.has_ts = False
        self.tsval = 0
        self.tsecr = 0
        self.sack: list[tuple[int, int]] | None = None

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: its data, plus one each for SYN and FIN."""
        return len(self.payload) + (self.flags & SYN) // SYN + (self.flags & FIN)

    def __repr__(self) -> str:
        names = "".join(
            c for bit, c in zip((SYN, FIN, RST, PSH, ACK), "SFRPA", strict=True) if self.flags & bit
        )
        return (
            f"<Segment {self.src_port}->{self.dst_port} [{names}] seq={self.seq} "
            f"ack={self.ack} win={self.window} len={len(self.payload)}>"
        )


# The Internet checksum over the IPv4 pseudo-header (RFC 9293 3.1; RFC 1071).
#
# Summed as ipv4.ones_sum() sums, the segment read as one little-endian number (twice as fast
# as big-endian): that reads every 16-bit word with its bytes swapped, which is the word times
# 256 modulo 0xFFFF, so the whole sum is the big-endian one times 256. The pseudo-header's
# words are read the same way, the length multiplied by 256 to match, and the checksum field
# is written little-endian, which makes the big-endian field RFC 9293 asks for.


def pseudo_sum(src_ip: Buffer, dst_ip: Buffer) -> int:
    """What every segment between these addresses has in its pseudo-header, the addresses and
    the protocol, summed for residue() (which adds the length): a connection keeps it."""
    return int.from_bytes(src_ip, "little") + int.from_bytes(dst_ip, "little") + (PROTOCOL << 8)


def residue(segment: Buffer, pseudo: int) -> int:
    """The sum of `segment` and its pseudo-header (`pseudo` from pseudo_sum()) modulo 0xFFFF: 0
    for a segment that carries its right checksum. (The one's complement sum is then 0xFFFF,
    negative zero; never +0, which only all-zero words make, as the protocol word is not.)"""
    # The small terms after the large one is reduced: adding to it first would copy it.
    return (mod_ffff(int.from_bytes(segment, "little")) + pseudo + (len(segment) << 8)) % 0xFFFF


def seal(segment: bytearray, pseudo: int) -> None:
    """Fill in the checksum field of `segment`, which reads zero, for `pseudo` (pseudo_sum())."""
    _CHECKSUM.pack_into(segment, _CHECKSUM_OFFSET, -residue(segment, pseudo) % 0xFFFF)


def checksum(src_ip: Buffer, dst_ip: Buffer, segment: Buffer) -> int:
    """The value for the checksum field of `segment`, whose own checksum field reads zero
    (0 if it reads the right value already)."""
    field = -residue(segment, pseudo_sum(src_ip, dst_ip)) % 0xFFFF  # as seal() writes it
    return (field >> 8) | (field & 0xFF) << 8


# Parsing.


def parse_segment(
    src_ip: Buffer, dst_ip: Buffer, data: Buffer, vouched: bool = False
) -> Segment | None:
    """The segment in `data` (TCP header and payload), or None if it must be dropped.
    `vouched`: the link vouched for its checksum (see Stack.receive), or the caller checks it
    (residue()): not checked here."""
    size = len(data)
    if size >= TS_HEADER_LEN:
        # Read as if it had the timestamps alone (most have): one call for all the fields.
        src_port, dst_port, seq, ack, offset, flags, window, _, _, prefix, tsval, tsecr = (
            HEADER_TS.unpack_from(data)
        )
    elif size >= HEADER_LEN:
        src_port, dst_port, seq, ack, offset, flags, window, _, _ = _HEADER.unpack_from(data)
        prefix = tsval = tsecr = 0
    else:
        return None
    header_len = (offset >> 4) * 4
    if header_len < HEADER_LEN or header_len > size:
        return None
    if not vouched and residue(data, pseudo_sum(src_ip, dst_ip)):
        return None
    seg = Segment(src_port, dst_port, seq, ack, flags, window, data[header_len:])
    if header_len == TS_HEADER_LEN and prefix == TS_PREFIX:
        seg.tsval = tsval
        seg.tsecr = tsecr
        seg.has_ts = True
    elif header_len > HEADER_LEN:
        _parse_options(seg, bytes(data[HEADER_LEN:header_len]))
    return seg


def _parse_options(seg: Segment, options: bytes) -> None:
    """Read the options we know; a malformed list stops the reading, not the segment
    (RFC 9293 3.1: be robust to any option, including an illegal length)."""
    i = 0
    end = len(options)
    while i < end:
        kind = options[i]
        if kind == _EOL:
            return
        if kind == _NOP:
            i += 1
            continue
        if i + 1 >= end:
            return
        length = options[i + 1]
        if length < 2 or i + length > end:
            return
        if kind == _MSS and length == 4:
            seg.mss = _U16.unpack_from(options, i + 2)[0]
        elif kind == _WSCALE and length == 3:
            seg.wscale = min(options[i + 2], MAX_WSCALE)
        elif kind == _SACK_PERMITTED and length == 2:
            seg.sack_ok = True
        elif kind == _TIMESTAMP and length == 10:
            seg.tsval = _U32.unpack_from(options, i + 2)[0]
            seg.tsecr = _U32.unpack_from(options, i + 6)[0]
            seg.has_ts = True
        elif kind == _SACK and length >= 10 and (length - 2) % 8 == 0:
            seg.sack = [
                (_U32.unpack_from(options, j)[0], _U32.unpack_from(options, j + 4)[0])
                for j in range(i + 2, i + length, 8)
            ]
        i += length


# Building.


def build_segment(
    src_ip: Buffer,
    dst_ip: Buffer,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes = b"",
    payload: Buffer = b"",
) -> bytearray:
    """A segment ready for IPv4, checksum filled in. `options` must be padded to 4 bytes."""
    segment = build_header(src_port, dst_port, seq, ack, flags, window, options)
    segment += payload
    seal(segment, pseudo_sum(src_ip, dst_ip))  # in one pass: one big-number conversion
    return segment


def build_header(
    src_port: int, dst_port: int, seq: int, ack: int, flags: int, window: int, options: bytes
) -> bytearray:
    """A segment's header, its checksum field zero (seal() fills it in once the payload is
    appended). `options` must be padded to 4 bytes."""
    offset = ((HEADER_LEN + len(options)) >> 2) << 4  # in words, in the top 4 bits
    segment = bytearray(_HEADER.pack(src_port, dst_port, seq, ack, offset, flags, window, 0, 0))
    segment += options
    return segment


def build_ts_segment(
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    tsval: int,
    tsecr: int,
    payload: Buffer,
    pseudo: int,
) -> bytes:
    """build_segment() for the options timestamp_option(tsval, tsecr) alone, as most segments
    have them, `pseudo` from pseudo_sum(): made in fewer steps. The header is packed once,
    its checksum included, summed from its fields rather than read back from its bytes."""
    # The header's 16-bit words, modulo 0xFFFF (a 32-bit field is the sum of its two), times
    # 256 to join the little-endian sum of the rest, as residue() makes it.
    words = src_port + dst_port + seq + ack + (TS_OFFSET << 8 | flags) + window
    total = pseudo + ((words + TS_PREFIX + tsval + tsecr + TS_HEADER_LEN + len(payload)) << 8)
    if payload:
        total += mod_ffff(int.from_bytes(payload, "little"))
    field = -total % 0xFFFF  # as seal() would write it, little-endian; packed big-endian here
    check = (field >> 8) | (field & 0xFF) << 8
    header = HEADER_TS.pack(
        src_port, dst_port, seq, ack, TS_OFFSET, flags, window, check, 0, TS_PREFIX, tsval, tsecr
    )
    return header + payload


def build_large_segment(
    src_ip: bytes,
    dst_ip: bytes,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes,
    payload: Buffer,
    segment_size: int,
) -> LargeSegment:
    """A segment for the link to cut into segments of `segment_size` bytes of data (TSO): its
    checksum field holds only the pseudo-header's sum, and nothing here reads the payload."""
    header = build_header(src_port, dst_port, seq, ack, flags, window, options)
    return large_segment(src_ip, dst_ip, header, payload, segment_size)


def large_segment(
    src_ip: bytes, dst_ip: bytes, header: bytearray, payload: Buffer, segment_size: int
) -> LargeSegment:
    """build_large_segment() from a header that build_header() made. The payload is copied
    once, into the frame the link will get: pass a view of the send buffer, not a slice."""
    check = partial_checksum(src_ip, dst_ip, len(header) + len(payload))
    _U16.pack_into(header, _CHECKSUM_OFFSET, check)
    return LargeSegment.new(header, payload, segment_size)


def timestamp_option(tsval: int, tsecr: int) -> bytes:
    return _TIMESTAMPS.pack(_NOP, _NOP, _TIMESTAMP, 10, tsval, tsecr)


def sack_option(blocks: list[tuple[int, int]]) -> bytes:
    """NOP, NOP, then the SACK option with up to four (left, right) wire sequence numbers."""
    body = b"".join(_U32.pack(left) + _U32.pack(right) for left, right in blocks)
    return bytes((_NOP, _NOP, _SACK, 2 + len(body))) + body


def syn_options(mss: int, wscale: int, sack_ok: bool, ts: tuple[int, int] | None) -> bytes:
    """The options of a SYN or SYN-ACK: MSS always; window scale (-1: none), SACK-permitted and
    timestamps as negotiated. Laid out as Linux does, so each sits on its natural alignment."""
    options = bytes((_MSS, 4)) + _U16.pack(mss)
    if ts is not None:
        if sack_ok:
            options += bytes((_SACK_PERMITTED, 2, _TIMESTAMP, 10)) + _U32.pack(ts[0])
            options += _U32.pack(ts[1])
        else:
            options += timestamp_option(*ts)
    elif sack_ok:
        options += bytes((_NOP, _NOP, _SACK_PERMITTED, 2))
    if wscale >= 0:
        options += bytes((_NOP, _WSCALE, 3, wscale))
    return options
