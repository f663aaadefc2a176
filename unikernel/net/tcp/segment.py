"""TCP segments on the wire: the header (RFC 9293 3.1), its options, and the checksum.

parse_segment() turns received bytes into a Segment, or None for a segment to drop (too short,
a bad data offset, a bad checksum): it never raises, whatever the bytes. build_segment() does
the reverse, checksum included. Sequence and acknowledgment numbers here are the 32-bit wire
values; connection.py unwraps them.
"""

from __future__ import annotations

from struct import Struct

from unikernel.net.ipv4 import checksum as internet_checksum
from unikernel.net.ipv4 import pseudo_header_sum
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
_TS_PREFIX = b"\x01\x01\x08\x0a"
_U16 = Struct("!H")
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


# The Internet checksum over the IPv4 pseudo-header (RFC 9293 3.1), computed as IPv4 and UDP do.


def checksum(src_ip: Buffer, dst_ip: Buffer, segment: Buffer) -> int:
    """The value for the checksum field of `segment`, whose own checksum field reads zero."""
    pseudo = pseudo_header_sum(bytes(src_ip), bytes(dst_ip), PROTOCOL, len(segment))
    return internet_checksum(segment, pseudo)


def checksum_ok(src_ip: Buffer, dst_ip: Buffer, segment: Buffer) -> bool:
    """Whether the segment, checksum field included, sums to negative zero as it must."""
    return checksum(src_ip, dst_ip, segment) == 0


# Parsing.


def parse_segment(
    src_ip: Buffer, dst_ip: Buffer, data: Buffer, vouched: bool = False
) -> Segment | None:
    """The segment in `data` (TCP header and payload), or None if it must be dropped.
    `vouched`: the link vouched for its checksum (see Stack.receive): not checked again."""
    size = len(data)
    if size < HEADER_LEN:
        return None
    src_port, dst_port, seq, ack, offset, flags, window, _, _ = _HEADER.unpack_from(data)
    header_len = (offset >> 4) * 4
    if header_len < HEADER_LEN or header_len > size:
        return None
    if not vouched and not checksum_ok(src_ip, dst_ip, data):
        return None
    seg = Segment(src_port, dst_port, seq, ack, flags, window, data[header_len:])
    if header_len > HEADER_LEN:
        options = bytes(data[HEADER_LEN:header_len])
        if header_len == 32 and options[:4] == _TS_PREFIX:
            # What every data segment carries once timestamps are on (RFC 7323 appendix A).
            _, _, _, _, seg.tsval, seg.tsecr = _TIMESTAMPS.unpack(options)
            seg.has_ts = True
        else:
            _parse_options(seg, options)
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
    header_len = HEADER_LEN + len(options)
    offset = (header_len >> 2) << 4
    # Built in place and summed in one pass: one big-number conversion, not three.
    segment = bytearray(_HEADER.pack(src_port, dst_port, seq, ack, offset, flags, window, 0, 0))
    segment += options
    segment += payload
    pseudo = pseudo_header_sum(bytes(src_ip), bytes(dst_ip), PROTOCOL, len(segment))
    _U16.pack_into(segment, 16, internet_checksum(segment, pseudo))
    return segment


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
    header_len = HEADER_LEN + len(options)
    offset = (header_len >> 2) << 4
    check = partial_checksum(src_ip, dst_ip, header_len + len(payload))
    header = _HEADER.pack(src_port, dst_port, seq, ack, offset, flags, window, check, 0)
    segment = LargeSegment(b"".join((header, options, payload)))
    segment.segment_size = segment_size
    return segment


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
