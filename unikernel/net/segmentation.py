"""TCP segmentation offload (TSO): one segment of many MSS, cut into segments by the link.

Where the link segments (a TAP device or virtio-net with a virtio-net header), TCP builds one
`LargeSegment` where it would have built up to 44: one header, one copy of the data, and no
checksum over the data, since its checksum field holds only the pseudo-header's sum
(CHECKSUM_PARTIAL, as Linux's TCP leaves it for a NIC). It builds it in the frame the link will
get, `HEADROOM` bytes in (as Linux's skbs keep headroom): the stack writes the Ethernet and IPv4
headers there in place, and the driver sends it with a virtio-net header saying how to cut it.
The data is thus copied once on its way out, from TCP's send buffer into the frame.

Where it cannot go whole (the link does not segment, or ARP holds the packet), `segments()`
does what the link would: segments of `segment_size` bytes of data, each with its sequence
number and its own full checksum, PSH and FIN on the last one only, as Linux's GSO cuts them.
"""

from __future__ import annotations

from struct import Struct

from unikernel.net import ethernet, ipv4
from unikernel.net.ipv4 import TCP, checksum, ones_sum, pseudo_header_sum

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview

_TCP_SEQ = Struct("!I")  # at offset 4
_TCP_CHECKSUM = Struct("!H")  # at offset 16
_FLAGS_OFFSET = 13
_LAST_ONLY = 0x01 | 0x08  # FIN, PSH: the last segment's alone
# Where a super-frame's TCP segment starts: after the Ethernet and IPv4 (no options) headers.
HEADROOM = ethernet.HEADER_LEN + ipv4.HEADER_LEN


def partial_checksum(source: bytes, destination: bytes, length: int) -> int:
    """What a LargeSegment's checksum field holds: the pseudo-header's sum for a TCP segment of
    `length` bytes, folded to 16 bits and not complemented (Linux's ~tcp_v4_check())."""
    total = pseudo_header_sum(source, destination, TCP, length)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


class SuperFrame(bytearray):
    """A frame holding one large TCP segment in an IPv4 datagram over the MTU, for the link to
    cut into segments of `segment_size` bytes of data (each repeating the first `headers_len`
    bytes, with the IP length, ident, sequence number and checksum set for it).

    TCP makes it as a LargeSegment (see new()), its first HEADROOM bytes blank; the stack fills
    them in and sets `headers_len` and `transport_start`. Mutable for that alone: no one
    changes it once it is a frame."""

    segment_size: int
    headers_len: int  # the Ethernet, IP and TCP headers
    transport_start: int  # where the TCP header starts

    @classmethod
    def new(cls, header: Buffer, data: Buffer, segment_size: int) -> SuperFrame:
        """A large segment of TCP `header` and `data`, HEADROOM bytes in."""
        frame = cls(HEADROOM)
        frame += header
        frame += data  # the one copy of the data (growing a small buffer moves only it)
        frame.segment_size = segment_size
        return frame

    @property
    def segment(self) -> memoryview:
        """The TCP segment (header and data) it holds."""
        return memoryview(self)[HEADROOM:]

    def segments(self, source: bytes, destination: bytes) -> list[bytes]:
        """The segments the link would have made of it, each checksummed in full."""
        header_start = HEADROOM
        header_end = header_start + (self[header_start + 12] >> 4) * 4
        header = bytearray(self[header_start:header_end])
        first_seq = _TCP_SEQ.unpack_from(header, 4)[0]
        flags = header[_FLAGS_OFFSET]
        view = memoryview(self)
        end = len(self)
        pieces = []
        for start in range(header_end, end, self.segment_size):
            stop = min(start + self.segment_size, end)
            _TCP_SEQ.pack_into(header, 4, (first_seq + start - header_end) & 0xFFFFFFFF)
            header[_FLAGS_OFFSET] = flags if stop == end else flags & ~_LAST_ONLY
            _TCP_CHECKSUM.pack_into(header, 16, 0)
            data = view[start:stop]
            pseudo = pseudo_header_sum(source, destination, TCP, len(header) + len(data))
            _TCP_CHECKSUM.pack_into(header, 16, checksum(data, pseudo + ones_sum(header)))
            pieces.append(bytes(header) + data)
        return pieces


# What TCP hands the stack: a super-frame whose headroom the stack has yet to fill.
LargeSegment = SuperFrame
