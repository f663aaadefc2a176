"""packet: an AF_PACKET socket on a raw Ethernet interface as the netif, inside the image.

In the VM the kernel owns the NIC's driver (virtio-net, xen-netfront) but configures no
address on it: every frame it receives is ours, and we transmit whole frames. The stack
takes the interface's own MAC, as the NIC is ours alone.

    netif = PacketNetif("eth0")

Needs CAP_NET_RAW (and CAP_NET_ADMIN to bring a link up that is down). The image kernel may
have no INET and no UNIX sockets, so every ioctl goes through the packet socket itself.
Binding takes the interface of the caller's network namespace.

Offloads. A NIC with checksum and segmentation offloads (virtio-net over a TAP device with
vnet_hdr=on, a veth) hands the kernel packets whose TCP/UDP checksum is only partial and GSO
super-packets of up to 64 KiB; a kernel with INET coalesces small ones the same way (GRO). A
packet socket passes them on as they are, so by default (`offloads=True`) it asks for the
virtio-net header (PACKET_VNET_HDR) that says which is which, and undoes it as offloads.py
says (receive buffers then hold 64 KiB packets). Frames we send carry a header too: "nothing
to do", or a TSO super-packet's for the stack's SuperFrames.
"""

from __future__ import annotations

import _socket  # not `socket`, which imports enum: too heavy for the image
import errno
import fcntl
import struct

from unikernel.drivers import Netif, ifreq, write_frames
from unikernel.drivers.offloads import MAX_GSO_FRAME, VNET_HDR_LEN, ReceivedOffloads, header_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from unikernel.core.console import Console

    Buffer = bytes | bytearray | memoryview

# From <linux/if_ether.h>, <linux/if_packet.h> and <linux/socket.h>; Python 3.11's _socket
# lacks them.
_ETH_P_ALL = 0x0003
_SOL_PACKET = 263
_PACKET_VNET_HDR = 15
_PACKET_IGNORE_OUTGOING = 23  # Linux 4.20 and later
_SO_RCVBUFFORCE = 33  # SO_RCVBUF past net.core.rmem_max, with CAP_NET_ADMIN

# The socket's receive queue, in the kernel's accounting (each packet's buffer, overhead
# included): room for a few TCP windows, arriving as 64 KiB super-packets or as frames,
# while Python is busy. The default (rmem_default, 208 KiB) holds less than one 256 KiB window.
_RECEIVE_QUEUE = 4 << 20

# Send errors that lose one frame, as a NIC drops frames, rather than break the driver:
# ENETDOWN while the link is down, EINVAL/EMSGSIZE for a frame the device will not take.
_DROPPING_ERRNOS = (errno.ENETDOWN, errno.ENXIO, errno.EINVAL, errno.EMSGSIZE, errno.ENOBUFS)


class PacketNetif(Netif):
    def __init__(self, name: str, *, offloads: bool = True) -> None:
        """Bind interface `name`, bringing its link up if it is down. `offloads`: take
        packets with partial checksums and GSO packets (see the module's docstring); if the
        kernel refuses the header, `self.offloads` says False."""
        self.name = name
        sock, self.mac, self.mtu, self.offloads = open_unbound(name, offloads)
        try:
            self.segmentation = self.offloads and ifreq.segments_tcp(sock.fileno(), name)
            _grow_receive_queue(sock)
            self.filters_outgoing = bind_up(sock, name)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.write_errors = 0  # frames lost to _DROPPING_ERRNOS
        self.oversize_drops = 0  # frames over our buffer (MTU or GSO size), dropped whole
        self.received = ReceivedOffloads()  # what the virtio-net headers asked, and drops
        frame = self.mtu + ifreq.FRAME_OVERHEAD
        self._header = VNET_HDR_LEN if offloads else 0
        self._largest = self._header + (max(MAX_GSO_FRAME, frame) if offloads else frame)
        self._typical = self._header + frame
        # One receive buffer that every read_batch() reuses: frames are packed in it one
        # after the other, and a batch ends when a largest packet might no longer fit.
        self._arena = memoryview(bytearray(0))

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_batch(self, limit: int) -> list[Buffer]:
        """Up to `limit` frames, but for the datagrams a UDP super-packet is cut into, which
        may take the batch past it."""
        arena, largest = self._arena, self._largest
        if len(arena) < largest + limit * self._typical:
            # Room for `limit` frames of the MTU, or fewer up to a GSO packet's 64 KiB.
            arena = self._arena = memoryview(bytearray(largest + limit * self._typical))
        last_start = len(arena) - largest
        frames: list[Buffer] = []
        self.received.vouched = 0
        sock, header = self._sock, self._header
        # MSG_TRUNC makes a packet socket return a frame's real length, so that one larger
        # than our buffer is dropped whole instead of handed on truncated.
        trunc = _socket.MSG_TRUNC
        outgoing = _socket.PACKET_OUTGOING
        start = 0
        while len(frames) < limit and start <= last_start:
            view = arena[start:]
            try:
                if self.filters_outgoing:
                    n, address = sock.recvfrom_into(view, largest, trunc)
                    if address[2] == outgoing:  # our own transmission, echoed to taps
                        continue
                else:
                    n = sock.recv_into(view, largest, trunc)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.EINVAL and header:
                    # The kernel has no virtio-net header for the packet (a GSO kind with no
                    # virtio-net type: UDP's before Linux 6.2) and dropped it.
                    self.received.drops += 1
                    continue
                # The link went down (or came back): reported once, then cleared. Carry on,
                # as a NIC's driver does; send() drops frames while it is down.
                if error.errno != errno.ENETDOWN:
                    raise
                continue
            if n > largest:
                self.oversize_drops += 1
                continue
            self.received.add(frames, view, header, n)
            start += n
        return frames

    def vouched(self) -> int:
        return self.received.vouched

    def counts(self) -> dict[str, int]:
        return {
            "write_errors": self.write_errors,
            "oversize_drops": self.oversize_drops,
            **self.received.counts(),
        }

    def write_batch(self, frames: Sequence[Buffer]) -> int:
        send = self._sock.send
        if self._header:
            sendmsg = self._sock.sendmsg  # the header and the frame, gathered: no copy
            taken, lost = write_frames(
                lambda f: sendmsg((header_for(f), f)), frames, _DROPPING_ERRNOS
            )
        else:
            taken, lost = write_frames(send, frames, _DROPPING_ERRNOS)
        self.write_errors += lost
        return taken

    def close(self) -> None:
        """Let go of the socket; the interface stays as it is (up)."""
        self._sock.close()

    def __repr__(self) -> str:
        mac = ":".join(f"{b:02x}" for b in self.mac)
        offloads = " offloads" if self.offloads else ""
        return f"<PacketNetif {self.name} mac {mac} mtu {self.mtu}{offloads}>"


def open_unbound(name: str, offloads: bool) -> tuple[_socket.socket, bytes, int, bool]:
    """A packet socket for Ethernet interface `name`, not bound yet (bind_up() does it):
    (socket, the interface's MAC, its MTU, offloads). With `offloads`, the virtio-net header
    is asked for (before any PACKET_MMAP ring, which the kernel lays out by it); False if
    the kernel refused it."""
    raw = name.encode()
    if not raw or len(raw) >= ifreq.IFNAMSIZ:
        raise ValueError(f"interface names are 1 to {ifreq.IFNAMSIZ - 1} bytes: {name!r}")
    sock = _open_socket()
    try:
        fd = sock.fileno()
        try:
            mac = _hardware_address(fd, name)
        except OSError as error:
            raise _explain(error, name) from None
        mtu = ifreq.mtu(fd, name)
        if offloads:
            try:
                sock.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
            except OSError:
                offloads = False
    except BaseException:
        sock.close()
        raise
    return sock, mac, mtu, offloads


def bind_up(sock: _socket.socket, name: str) -> bool:
    """Bring `name` up and bind `sock` to every frame it carries: whether the caller must
    drop our own transmissions, echoed back (an older kernel, without PACKET_IGNORE_OUTGOING)."""
    # Up before bind(): binding a down interface leaves ENETDOWN pending on the socket.
    _bring_up(sock.fileno(), name)
    try:
        # Protocol 0 at creation receives nothing; bind() then asks for every ethertype on
        # this interface only, so no other interface's frame slips in.
        sock.bind((name, _ETH_P_ALL))
    except OSError as error:
        raise _explain(error, name) from None
    try:
        sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
        return False  # the kernel drops our echoes for us
    except OSError:
        return True


def bring_up(name: str) -> None:
    """Brings the interface `name` up, as the boot layer does for every NIC before the app runs."""
    sock = _open_socket()
    try:
        _bring_up(sock.fileno(), name)
    finally:
        sock.close()


def bring_up_all(names: Sequence[str], console: Console) -> None:
    """Up every NIC the app declared, before it runs. A missing one is said, not fatal: the app
    fails with the reason if it opens that network (a VM launched without the NIC)."""
    for name in names:
        try:
            bring_up(name)
        except OSError as error:
            console.line(f"boot: {name} is not usable: {error}")


def _grow_receive_queue(sock: _socket.socket) -> None:
    # The kernel doubles what it is asked for, to cover its overhead.
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RECEIVE_QUEUE // 2)
    except OSError:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, _RECEIVE_QUEUE // 2)  # capped


def _open_socket() -> _socket.socket:
    flags = _socket.SOCK_RAW | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC
    try:
        return _socket.socket(_socket.AF_PACKET, flags, 0)
    except PermissionError:
        raise PermissionError(
            errno.EPERM, "cannot open a packet socket: run as root or grant CAP_NET_RAW"
        ) from None
    except OSError as error:
        if error.errno in (errno.EAFNOSUPPORT, errno.EINVAL):
            raise OSError(
                error.errno, "this kernel has no AF_PACKET sockets (CONFIG_PACKET)"
            ) from None
        raise


def _explain(error: OSError, name: str) -> OSError:
    """The first ioctl's or bind()'s errors, with what they mean."""
    if error.errno == errno.ENODEV:
        return OSError(errno.ENODEV, f"no interface {name!r} in this network namespace")
    if error.errno in (errno.EPERM, errno.EACCES):
        return PermissionError(error.errno, f"cannot bind {name!r}: run as root")
    return OSError(error.errno, f"cannot bind interface {name!r}: {error.strerror}")


def _hardware_address(fd: int, name: str) -> bytes:
    family, mac = ifreq.hardware_address(fd, name)
    if family != ifreq.ARPHRD_ETHER:
        # Our stack speaks Ethernet only: loopback, TUN or IP tunnels frame differently.
        raise OSError(errno.EINVAL, f"{name!r} is not an Ethernet interface (type {family})")
    return mac


def _bring_up(fd: int, name: str) -> None:
    """Set IFF_UP unless it is set: in the VM nobody else configures the interface."""
    raw = name.encode()
    answer = fcntl.ioctl(fd, ifreq.SIOCGIFFLAGS, struct.pack(ifreq.IFREQ_FLAGS, raw, 0))
    flags: int = struct.unpack(ifreq.IFREQ_FLAGS, answer)[1]
    if flags & ifreq.IFF_UP:
        return
    try:
        fcntl.ioctl(
            fd, ifreq.SIOCSIFFLAGS, struct.pack(ifreq.IFREQ_FLAGS, raw, flags | ifreq.IFF_UP)
        )
    except PermissionError:
        raise PermissionError(
            errno.EPERM, f"{name!r} is down and bringing it up needs CAP_NET_ADMIN"
        ) from None
