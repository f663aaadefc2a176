"""packet_ring: PacketNetif's AF_PACKET socket, with PACKET_MMAP rings in place of a system
call per frame.

    netif = PacketRingNetif("eth0")

Two rings of fixed-size slots (TPACKET_V2) are shared with the kernel through one mmap(). The
kernel copies each received frame into the next free RX slot while it delivers it (in the
sender's softirq, on a veth), and we read the slots as memory: a read_batch() costs no system
call. We fill TX slots and mark them for sending; one send() per batch has the kernel take
them all, and it hands each slot back once the device has let go of the frame.

A slot holds: struct tpacket2_hdr (status, lengths, where the frame starts), a sockaddr_ll
(received: the packet type), and the frame. With offloads, the virtio-net header sits right
before a received frame (at tp_mac - 10) and at the start of a sent one's data (tp_len
counting it), as PACKET_VNET_HDR has it on this kernel; it must be asked for before the rings
are made. TPACKET_V3, whose RX blocks pack frames of any size, would waste less on small
frames, but this kernel refuses a V3 TX ring and a socket has one version: it would take a
second socket.

Memory (the rings are pinned kernel pages, mapped once):

- offloads on: 68 KiB slots (a 64 KiB GSO packet, its headers and the slot's), 15 to a 1 MiB
  block; RX 4 MiB (60 slots), TX 4 MiB (60 slots) if the NIC cuts TCP super-frames, else
  1 MiB of MTU-sized slots. Every frame takes a whole slot: where the kernel does not
  coalesce (no GRO), 60 MTU-sized frames fill the RX ring;
- offloads off: slots of the MTU (1616 bytes for 1500), RX 4 MiB (2592 slots), TX 1 MiB.

A packet larger than its slot arrives truncated: it is dropped whole and counted. The slots
a read_batch() returned views into go back to the kernel at the next read_batch().
"""

from __future__ import annotations

import _socket
import errno
import mmap
import struct

from unikernel.drivers import Netif, ifreq
from unikernel.drivers.offloads import MAX_GSO_FRAME, VNET_HDR_LEN, ReceivedOffloads, header_for
from unikernel.drivers.packet import bind_up, open_unbound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    Buffer = bytes | bytearray | memoryview

# <linux/if_packet.h>, which Python 3.11's _socket lacks.
_SOL_PACKET = 263
_PACKET_RX_RING = 5
_PACKET_STATISTICS = 6
_PACKET_VERSION = 10
_PACKET_TX_RING = 13
_PACKET_LOSS = 14
_TPACKET_V2 = 1
_SO_SNDBUFFORCE = 32  # <asm-generic/socket.h>: SO_SNDBUF past wmem_max, with CAP_NET_ADMIN

_TP_STATUS_KERNEL = 0  # RX: the kernel's to fill
_TP_STATUS_USER = 1  # RX: a frame for us
_TP_STATUS_AVAILABLE = 0  # TX: ours to fill
_TP_STATUS_SEND_REQUEST = 1  # TX: for the kernel to send
_TP_STATUS_WRONG_FORMAT = 4  # TX: refused (only without PACKET_LOSS)

# struct tpacket2_hdr: tp_status, tp_len, tp_snaplen, tp_mac (then tp_net, times, VLAN).
_SLOT_HEADER = struct.Struct("=IIIH")
_STATUS = struct.Struct("=I")
_SLL_PKTTYPE = 32 + 10  # sockaddr_ll's sll_pkttype, after the aligned tpacket2_hdr
_TX_DATA = 32  # where a TX slot's data starts (TPACKET2_HDRLEN - sizeof(sockaddr_ll))
# Where the kernel puts a received frame: the aligned header and sockaddr_ll with room for a
# 16-byte MAC header (80), plus the virtio-net header; rounded up for safety.
_RX_DATA = 96
_ALIGN = 16  # TPACKET_ALIGNMENT
_BLOCK = 1 << 20
_RX_RING = 4 << 20
_TX_RING_SUPER = 4 << 20  # for TSO super-frames of up to 64 KiB
_TX_RING = 1 << 20
_MIN_FRAME = 14  # an Ethernet header: the kernel refuses less

_DROPPING_ERRNOS = (errno.ENXIO, errno.EINVAL, errno.EMSGSIZE, errno.ENOBUFS)


class PacketRingNetif(Netif):
    def __init__(self, name: str, *, offloads: bool = True) -> None:
        """Bind interface `name` with an RX and a TX ring, bringing its link up if it is
        down. `offloads` as PacketNetif's; if the kernel refuses the virtio-net header,
        `self.offloads` says False."""
        self.name = name
        sock, self.mac, self.mtu, offloads = open_unbound(name, offloads)
        self.offloads = offloads
        ring: mmap.mmap | None = None
        try:
            fd = sock.fileno()
            self.segmentation = offloads and ifreq.segments_tcp(fd, name)
            sock.setsockopt(_SOL_PACKET, _PACKET_VERSION, _TPACKET_V2)
            # A frame the kernel cannot send is skipped rather than left in place: the kernel
            # would stop at it for good, as it sends the slots strictly in order.
            sock.setsockopt(_SOL_PACKET, _PACKET_LOSS, 1)
            frame = self.mtu + ifreq.FRAME_OVERHEAD
            self._header = header = VNET_HDR_LEN if offloads else 0
            rx_largest = max(MAX_GSO_FRAME, frame) if offloads else frame
            tx_largest = max(MAX_GSO_FRAME, frame) if self.segmentation else frame
            rx_slot = _align(_RX_DATA + rx_largest)
            tx_slot = _align(_TX_DATA + header + tx_largest)
            rx_ring = _RX_RING
            tx_ring = _TX_RING_SUPER if self.segmentation else _TX_RING
            rx_request = _ring_request(rx_slot, rx_ring)
            tx_request = _ring_request(tx_slot, tx_ring)
            # Frames the device still holds count against the send buffer: room for the
            # whole TX ring (the kernel doubles the figure), or a send() would stop short.
            try:
                sock.setsockopt(_socket.SOL_SOCKET, _SO_SNDBUFFORCE, tx_ring)
            except OSError:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, tx_ring)  # capped
            sock.setsockopt(_SOL_PACKET, _PACKET_RX_RING, rx_request)
            sock.setsockopt(_SOL_PACKET, _PACKET_TX_RING, tx_request)
            # One mapping: the RX ring's blocks, then the TX ring's.
            ring = mmap.mmap(fd, rx_ring + tx_ring)
            self.filters_outgoing = bind_up(sock, name)  # then skipped in read_batch()
        except BaseException:
            if ring is not None:
                ring.close()
            sock.close()
            raise
        self._sock = sock
        self._mmap: mmap.mmap | None = ring
        self._ring = memoryview(ring)
        self._rx_slots = _slot_offsets(rx_slot, rx_ring, 0)
        self._tx_slots = _slot_offsets(tx_slot, tx_ring, rx_ring)
        self.rx_slot_size, self.tx_slot_size = rx_slot, tx_slot
        self._rx_next = 0  # the next slot the kernel fills
        self._rx_held = 0  # slots before _rx_next still lent out to the last batch's frames
        self._tx_next = 0  # the next slot we fill, always the kernel's next one to send
        self._tx_room = tx_slot - _TX_DATA - header  # the largest frame a TX slot takes
        self._tx_unsent = False  # slots marked for sending that no send() has taken yet
        self._tx_queued = 0  # their frames' bytes, to tell from send() what the kernel refused
        self._link_down = False
        self.write_errors = 0  # frames lost: over a slot, or refused on sending
        self.oversize_drops = 0  # received packets over a slot, dropped whole
        self.kernel_packets = 0  # PACKET_STATISTICS, summed (the kernel resets it as read)
        self.kernel_drops = 0  # packets the kernel found no free RX slot for
        self.kicks = 0  # send() calls
        self.received = ReceivedOffloads()
        self.lingering = False  # whether close() left the mapping to frames still held

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_batch(self, limit: int) -> list[Buffer]:
        """Up to `limit` frames (more for a UDP super-packet's datagrams), as views into the
        RX ring, valid until the next read_batch()."""
        ring, slots = self._ring, self._rx_slots
        count = len(slots)
        index = self._rx_next
        self._release(index)
        if self._tx_unsent:
            self._kick()
        frames: list[Buffer] = []
        received = self.received
        received.vouched = 0
        header = self._header
        unpack_from = _SLOT_HEADER.unpack_from
        held = 0
        filters_outgoing = self.filters_outgoing
        while len(frames) < limit and held < count:
            at = slots[index]
            status, length, snaplen, mac = unpack_from(ring, at)
            if not status & _TP_STATUS_USER:
                break
            held += 1
            index = index + 1 if index + 1 < count else 0
            if snaplen < length:
                self.oversize_drops += 1  # cut to the slot: never hand a part on
                continue
            if filters_outgoing and ring[at + _SLL_PKTTYPE] == _socket.PACKET_OUTGOING:
                continue
            start = at + mac
            if header and (ring[start - header] or ring[start - header + 1]):
                # Flags or a GSO type: what the header asks is done (or vouched for) first.
                view = ring[start - header : start + snaplen]
                received.add(frames, view, header, header + snaplen)
            else:
                frames.append(ring[start : start + snaplen])
        self._rx_next = index
        self._rx_held = held
        return frames

    def _release(self, end: int) -> None:
        """Hand the slots the last batch held (those before `end`) back to the kernel."""
        held = self._rx_held
        if not held:
            return
        ring, slots = self._ring, self._rx_slots
        pack_into = _STATUS.pack_into
        index = end - held
        for _ in range(held):
            pack_into(ring, slots[index], _TP_STATUS_KERNEL)  # negative index: wrapped
            index += 1
        self._rx_held = 0

    def vouched(self) -> int:
        return self.received.vouched

    def write_batch(self, frames: Sequence[Buffer]) -> int:
        """Puts frames in free TX slots and has the kernel send them with one send(); how
        many were taken, fewer when the ring is full. A frame too large for a slot is lost
        and counted, but taken."""
        if self._link_down:
            self._kick()
            if self._link_down:
                # Frames wait in the ring for the link; the rest are lost, as a NIC's are,
                # so that nobody waits for room that only a send() would make.
                self.write_errors += len(frames)
                return len(frames)
        ring, slots = self._ring, self._tx_slots
        count = len(slots)
        index = self._tx_next
        header = self._header
        room = self._tx_room
        unpack_from, pack_into = _STATUS.unpack_from, _STATUS.pack_into
        taken = 0
        for frame in frames:
            at = slots[index]
            status = unpack_from(ring, at)[0]
            if status != _TP_STATUS_AVAILABLE and self._tx_unsent:
                # Full: what the kernel sends now may free slots for the rest.
                self._kick()
                status = unpack_from(ring, at)[0]
            if status != _TP_STATUS_AVAILABLE:
                if status != _TP_STATUS_WRONG_FORMAT:
                    break  # full: sent, but not yet let go of by the device
                self.write_errors += 1  # left from a kernel without PACKET_LOSS
            length = len(frame)
            if not _MIN_FRAME <= length <= room:
                self.write_errors += 1
                taken += 1
                continue
            data = at + _TX_DATA
            if header:
                ring[data : data + header] = header_for(frame)
            ring[data + header : data + header + length] = frame
            pack_into(ring, at + 4, header + length)  # tp_len
            # The status last: the kernel may take the slot as soon as it reads it.
            pack_into(ring, at, _TP_STATUS_SEND_REQUEST)
            index = index + 1 if index + 1 < count else 0
            taken += 1
            self._tx_unsent = True
            self._tx_queued += length
        self._tx_next = index
        if self._tx_unsent:
            self._kick()
        return taken

    def _kick(self) -> None:
        """Have the kernel send every slot marked for sending, without waiting."""
        for _ in range(len(self._tx_slots) + 1):  # each round but the last drops a frame
            self.kicks += 1
            failed = False
            try:
                sent = self._sock.send(b"", _socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0  # our send buffer is spent: what is left waits for the next kick
            except OSError as error:
                if error.errno == errno.ENETDOWN:
                    self._link_down = True
                    return
                if error.errno not in _DROPPING_ERRNOS:
                    raise
                sent, failed = 0, True
            self._link_down = False
            first, waiting, waiting_bytes = self._unsent()
            if not failed and sent < self._tx_queued - waiting_bytes:
                # PACKET_LOSS skipped a frame the kernel would not send (one at least:
                # which and how many, it does not say).
                self.write_errors += 1
            self._tx_queued = waiting_bytes
            self._tx_unsent = waiting > 0
            if not failed or not waiting:
                return
            # The device refused the frame at the kernel's head, and the kernel would offer
            # it again and again, stopping the ring there: drop it, as a NIC would, by making
            # it a frame the kernel skips (shorter than an Ethernet header).
            at = self._tx_slots[first]
            self._tx_queued -= _STATUS.unpack_from(self._ring, at + 4)[0] - self._header
            _STATUS.pack_into(self._ring, at + 4, self._header + 1)
            self.write_errors += 1

    def _unsent(self) -> tuple[int, int, int]:
        """The slots still marked for sending, which end where we fill next: the first's
        index, how many, their frames' bytes."""
        ring, slots = self._ring, self._tx_slots
        unpack_from = _SLOT_HEADER.unpack_from
        index = self._tx_next
        count = total = 0
        while count < len(slots):
            status, length = unpack_from(ring, slots[index - 1])[:2]
            if status != _TP_STATUS_SEND_REQUEST:
                break
            index = index - 1 if index else len(slots) - 1
            count += 1
            total += length - self._header
        return index % len(slots), count, total

    def counts(self) -> dict[str, int]:
        if self._mmap is not None:
            packets, drops = struct.unpack(
                "II", self._sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
            )
            self.kernel_packets += packets
            self.kernel_drops += drops
        return {
            "write_errors": self.write_errors,
            "oversize_drops": self.oversize_drops,
            "kernel_packets": self.kernel_packets,
            "kernel_drops": self.kernel_drops,
            "tx_kicks": self.kicks,
            **self.received.counts(),
        }

    def close(self) -> None:
        """Unmap the rings and close the socket; the interface stays up. Harmless twice.
        Frames still referenced from the last batch keep the mapping alive until they go:
        mmap refuses to close under exported views, so it is then left to the last one."""
        ring = self._mmap
        if ring is None:
            return
        self._mmap = None
        self._ring.release()
        try:
            ring.close()
        except BufferError:
            # A frame view outlives us: unmapped when the last one is collected.
            self.lingering = True
        self._sock.close()

    def __repr__(self) -> str:
        mac = ":".join(f"{b:02x}" for b in self.mac)
        offloads = " offloads" if self.offloads else ""
        return (
            f"<PacketRingNetif {self.name} mac {mac} mtu {self.mtu}{offloads} "
            f"rx {len(self._rx_slots)}x{self.rx_slot_size} "
            f"tx {len(self._tx_slots)}x{self.tx_slot_size}>"
        )


def _align(size: int) -> int:
    return (size + _ALIGN - 1) & ~(_ALIGN - 1)


def _ring_request(slot: int, size: int) -> bytes:
    """struct tpacket_req for a ring of `size` bytes in blocks of _BLOCK: block size and
    count, slot size and count. Slots never straddle blocks."""
    blocks = size // _BLOCK
    return struct.pack("IIII", _BLOCK, blocks, slot, blocks * (_BLOCK // slot))


def _slot_offsets(slot: int, size: int, base: int) -> list[int]:
    """Where each slot of a ring starts in the mapping, in the kernel's order."""
    per_block = _BLOCK // slot
    return [
        base + block * _BLOCK + i * slot
        for block in range(size // _BLOCK)
        for i in range(per_block)
    ]
