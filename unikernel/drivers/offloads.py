"""The virtio-net header: what a Linux device and we hand each other half-done.

A TAP device opened with IFF_VNET_HDR, a packet socket with PACKET_VNET_HDR and QEMU's
virtio-net all put struct virtio_net_hdr before every frame. Received, it says what Linux left
for the NIC (us) to finish; sent, what we leave for Linux to finish:

- a partial checksum (NEEDS_CSUM): the TCP or UDP checksum field holds only the pseudo-header's
  sum, and whoever takes the frame sums the rest (Linux's CHECKSUM_PARTIAL);
- a super-packet (gso_type, gso_size): one IPv4 datagram over the MTU holding one TCP segment
  that the link cuts into segments of gso_size bytes (TSO), or UDP datagrams sent at once.

On receipt, a partial TCP checksum from the local kernel is vouched for (the driver's
vouched() bit; TCP then skips it, as Linux takes CHECKSUM_PARTIAL as checked), and any other
partial checksum is finished here. A TCP super-packet goes up whole (the stack and TCP take it
like any other segment: splitting it would only multiply the per-segment work). A UDP one is
cut back into its datagrams. On sending, a `SuperFrame` the stack made goes out as one TSO
super-packet.
"""

from __future__ import annotations

import struct

from unikernel.drivers import ifreq
from unikernel.net import ethernet, ipv4, udp
from unikernel.net.malformed import Malformed
from unikernel.net.segmentation import SuperFrame

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview

# struct virtio_net_hdr (<linux/virtio_net.h>), in the host's byte order (little-endian here):
# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset. Offsets count from the start
# of the Ethernet frame.
VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10
NEEDS_CSUM = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM: finish the checksum at csum_start + csum_offset
DATA_VALID = 2  # VIRTIO_NET_HDR_F_DATA_VALID: the NIC checked the checksum: nothing to do
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4  # IPv6: the stack drops it by its ethertype, whole or not
GSO_UDP_L4 = 5  # UDP datagrams of gso_size bytes each, sent at once (UDP_SEGMENT)
GSO_ECN = 0x80  # a flag on TCP's types: the segments carry CWR
NO_OFFLOAD = bytes(VNET_HDR_LEN)
_TCP_CHECKSUM_OFFSET = 16  # of the checksum field in the TCP header
_IPV4_TYPE = ethernet.IPV4.to_bytes(2, "big")
_IP_PROTOCOL_AT = ethernet.HEADER_LEN + 9
_CHECKSUM = struct.Struct("!H")
_PORTS = struct.Struct("!HH")

# The largest frame a super-packet makes: a whole IPv4 datagram, Ethernet header and VLAN tag.
MAX_GSO_FRAME = 0xFFFF + ifreq.FRAME_OVERHEAD


class ReceivedOffloads:
    """Undoes what received virtio-net headers say, and counts it. A partial TCP checksum is
    not finished but vouched for (see add()): Stack.receive() is told so, and TCP skips it."""

    __slots__ = ("drops", "partial_checksums", "super_packets", "vouched", "vouched_segments")

    def __init__(self) -> None:
        self.partial_checksums = 0  # UDP checksums finished here (NEEDS_CSUM)
        self.vouched_segments = 0  # TCP segments whose partial checksum was taken as checked
        self.super_packets = 0  # GSO super-packets received (UDP ones cut into datagrams)
        self.drops = 0  # packets described wrongly
        # Of the frames being gathered: bit i set when frame i's TCP checksum is vouched for.
        self.vouched = 0

    def counts(self) -> dict[str, int]:
        return {
            "rx_super_packets": self.super_packets,
            "rx_partial_checksums": self.partial_checksums,
            "rx_vouched_segments": self.vouched_segments,
            "rx_header_drops": self.drops,
        }

    def add(self, frames: list[Buffer], view: memoryview, header_len: int, end: int) -> None:
        """Append the frame read into view[:end] (behind a virtio-net header of `header_len`
        bytes, 0 if none) to `frames`, with what its header asks of it done."""
        frame = view[header_len:end]
        if not header_len or not (view[0] or view[1]):  # no flags, no gso_type: as it is
            frames.append(frame)
        elif _partial_tcp(view, frame):
            # A TCP segment (a super-packet, often) from the local kernel, which never crossed
            # a wire: Linux takes CHECKSUM_PARTIAL as checked, and so do we, sparing two passes
            # over up to 64 KiB (finishing it here, checking it in TCP).
            self.vouched |= 1 << len(frames)
            self.vouched_segments += 1
            self.super_packets += view[1] != GSO_NONE
            frames.append(frame)
        else:
            frames += self.undo(view, frame)

    def undo(self, header: memoryview, frame: memoryview) -> list[Buffer]:
        """What `header` asks of `frame`: the frame, finished in place; or the datagrams a UDP
        super-packet holds; nothing if it must be dropped (counted)."""
        flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(header)
        if gso_type != GSO_NONE:
            self.super_packets += 1
            if gso_type & ~GSO_ECN == GSO_UDP_L4:
                # Each datagram gets its own checksum: the partial one has no use.
                datagrams = split_udp(frame, gso_size)
                if datagrams is None:
                    self.drops += 1
                    return []
                return list(datagrams)
        if flags & NEEDS_CSUM:
            if not complete_checksum(frame, csum_start, csum_offset):
                self.drops += 1
                return []
            self.partial_checksums += 1
        return [frame]


def _partial_tcp(header: memoryview, frame: memoryview) -> bool:
    """Whether the header says only this: a TCP over IPv4 checksum to finish (at offset 16)."""
    return (
        header[0] == NEEDS_CSUM
        and header[8] == _TCP_CHECKSUM_OFFSET
        and not header[9]
        and len(frame) > _IP_PROTOCOL_AT
        and frame[12:14] == _IPV4_TYPE
        and frame[_IP_PROTOCOL_AT] == ipv4.TCP
    )


def header_for(frame: Buffer) -> bytes:
    """The virtio-net header to send `frame` with: a TSO super-packet's for a SuperFrame,
    else "nothing to do" (we checksum every other frame ourselves)."""
    if type(frame) is not SuperFrame:
        return NO_OFFLOAD
    return VNET_HDR.pack(
        NEEDS_CSUM,
        GSO_TCPV4,
        frame.headers_len,
        frame.segment_size,
        frame.transport_start,
        _TCP_CHECKSUM_OFFSET,
    )


def complete_checksum(frame: memoryview, start: int, offset: int) -> bool:
    """Finish a partial checksum in place, as Linux's skb_checksum_help() does for a NIC that
    cannot: the field at `start + offset` holds the pseudo-header's sum, so the checksum of
    everything from `start` to the end (that field included) is the segment's own. Offsets
    count from the frame's start. False if they point outside the frame."""
    position = start + offset
    if position + 2 > len(frame):
        return False
    # 0 goes out as 0xFFFF, its other one's complement form: UDP reads 0 as "no checksum".
    _CHECKSUM.pack_into(frame, position, ipv4.checksum(frame[start:]) or 0xFFFF)
    return True


def split_udp(frame: memoryview, size: int) -> list[bytes] | None:
    """The datagrams of `size` bytes (the last one shorter) that a UDP super-packet in an
    IPv4 frame holds, each framed and checksummed as Linux's segmentation would have sent
    it; None if the frame is no such packet."""
    try:
        eth = ethernet.parse(frame)
        if size <= 0 or eth.ethertype != ethernet.IPV4:
            return None
        packet = ipv4.parse(eth.payload)
    except Malformed:
        return None
    payload = packet.payload
    if packet.protocol != ipv4.UDP or packet.is_fragment or len(payload) < udp.HEADER_LEN:
        return None
    source, destination = packet.source, packet.destination
    source_port, destination_port = _PORTS.unpack_from(payload)
    data = payload[udp.HEADER_LEN :]
    link = bytes(frame[: ethernet.HEADER_LEN])
    datagrams = []
    for index, offset in enumerate(range(0, len(data), size)):
        datagram = udp.build(
            source, destination, source_port, destination_port, data[offset : offset + size]
        )
        header = ipv4.build_header(
            source,
            destination,
            ipv4.UDP,
            len(datagram),
            (packet.ident + index) & 0xFFFF,  # as Linux numbers the segments
            ttl=packet.ttl,
            tos=packet.tos,
            dont_fragment=packet.dont_fragment,
        )
        datagrams.append(b"".join((link, header, datagram)))
    return datagrams
