"""tap: a Linux TAP device as the netif, for the hosted target.

The kernel sees a TAP device as an Ethernet interface (with its own MAC, and the address the
host gives it); the process holding /dev/net/tun sees the other end of that cable: every
frame the kernel sends on the interface is one read(), every write() one frame received.
The unikernel is a separate host on that cable, so it takes a MAC of its own.

    netif = TapNetif("tap0", existing=True)   # a persistent device: ip tuntap add mode tap
    netif = TapNetif()                        # a new one, named by the kernel, gone on close()

With `offloads=True` the device is a virtio-net NIC to Linux, as QEMU makes it: each frame
carries a virtio-net header (IFF_VNET_HDR), and we tell Linux that we take partial checksums
and TCP super-packets (TUNSETOFFLOAD), so its TCP sends us up to 64 KiB a read; we send it
TSO super-packets (the stack's SuperFrames) that it cuts into segments. offloads.py undoes
and makes the headers. `self.segmentation` says whether Linux agreed.

Needs CAP_NET_ADMIN (or a persistent device created for our user). Opening binds the device
of the caller's network namespace: open it inside the namespace that should own it.
"""

from __future__ import annotations

import _socket  # not `socket`, which imports enum: too heavy for the image
import errno
import fcntl
import os
import struct

from unikernel.core.entropy import random_bytes
from unikernel.drivers import Netif, ifreq, write_frames
from unikernel.drivers.offloads import MAX_GSO_FRAME, VNET_HDR_LEN, ReceivedOffloads, header_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    Buffer = bytes | bytearray | memoryview

TUN_PATH = "/dev/net/tun"

# From <linux/if_tun.h>.
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000  # frames only, no 4-byte packet-information header before them
_IFF_VNET_HDR = 0x4000  # a virtio-net header before every frame, both ways
_TUNSETOFFLOAD = 0x400454D0  # what we take from Linux: TUN_F_* bits
_TUN_F_CSUM = 0x01  # partial checksums
_TUN_F_TSO4 = 0x02  # TCP over IPv4 super-packets (needs _TUN_F_CSUM)

# Write errors that lose one frame, as a NIC drops frames, rather than break the driver:
# EIO while the kernel's side is down, EINVAL for a runt frame.
_DROPPING_ERRNOS = (errno.EIO, errno.EINVAL, errno.ENETDOWN, errno.EMSGSIZE, errno.ENOBUFS)


class TapNetif(Netif):
    def __init__(
        self,
        name: str = "",
        *,
        existing: bool = False,
        mac: bytes | None = None,
        offloads: bool = False,
    ) -> None:
        """Open TAP device `name` ("" lets the kernel pick tapN); `existing`: attach only to a
        device that is already there, never create one. `mac` is the unikernel's address
        (default: a random locally administered one, never the kernel side's). `offloads`:
        virtio-net headers, partial checksums and TCP super-packets both ways."""
        if len(name.encode()) >= ifreq.IFNAMSIZ:
            raise ValueError(f"interface names are shorter than {ifreq.IFNAMSIZ} bytes: {name!r}")
        if existing:
            _require_interface(name)
        self._fd = -1
        fd = _open_tun()
        try:
            mode = _IFF_TAP | _IFF_NO_PI | (_IFF_VNET_HDR if offloads else 0)
            flags = struct.pack(ifreq.IFREQ_FLAGS, name.encode(), mode)
            try:
                answer = fcntl.ioctl(fd, _TUNSETIFF, flags)
            except OSError as error:
                raise _explain(error, name) from None
            self.name = struct.unpack(ifreq.IFREQ_FLAGS, answer)[0].rstrip(b"\0").decode()
            self.mtu, self.kernel_mac = _query_interface(self.name)
            self.segmentation = offloads and _take_offloads(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.mac = mac if mac is not None else _local_mac(avoid=self.kernel_mac)
        self.write_errors = 0  # frames lost to _DROPPING_ERRNOS
        self.oversize_drops = 0  # frames over our buffer, dropped whole
        self.received = ReceivedOffloads()  # what the virtio-net headers asked, and drops
        self._header = VNET_HDR_LEN if offloads else 0
        frame = self.mtu + ifreq.FRAME_OVERHEAD
        self._largest = self._header + (MAX_GSO_FRAME if self.segmentation else frame)
        self._typical = self._header + frame
        # One receive buffer that every read_batch() reuses: frames are packed in it one
        # after the other, and a batch ends when a largest packet might no longer fit.
        self._arena = memoryview(bytearray(0))

    def fileno(self) -> int:
        return self._fd

    def read_batch(self, limit: int) -> list[Buffer]:
        arena, largest, header = self._arena, self._largest, self._header
        if len(arena) < largest + limit * self._typical:
            arena = self._arena = memoryview(bytearray(largest + limit * self._typical))
        last_start = len(arena) - largest
        frames: list[Buffer] = []
        self.received.vouched = 0
        readv, fd = os.readv, self._fd
        start = 0
        while len(frames) < limit and start <= last_start:
            view = arena[start : start + largest + 1]
            try:
                # One frame per read: the TAP API. One byte more than the largest we take
                # tells a frame too long for us, which the kernel would have truncated.
                n = readv(fd, (view,))
            except BlockingIOError:
                break
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
        fd = self._fd
        if self._header:
            writev = os.writev  # the header and the frame, gathered: no copy
            write: Callable[[Buffer], object] = lambda f: writev(fd, (header_for(f), f))  # noqa: E731
        else:
            write = lambda f: os.write(fd, f)  # noqa: E731
        taken, lost = write_frames(write, frames, _DROPPING_ERRNOS)
        self.write_errors += lost
        return taken

    def close(self) -> None:
        """Let go of the device; the kernel removes it unless it is persistent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __repr__(self) -> str:
        mac = ":".join(f"{b:02x}" for b in self.mac)
        return f"<TapNetif {self.name or '?'} mac {mac} mtu {self.mtu}>"


def _take_offloads(fd: int) -> bool:
    """Tell Linux we finish partial checksums and take TCP super-packets; whether it agreed."""
    try:
        fcntl.ioctl(fd, _TUNSETOFFLOAD, _TUN_F_CSUM | _TUN_F_TSO4)
    except OSError:
        return False
    return True


def _open_tun() -> int:
    try:
        return os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(
            errno.ENOENT,
            f"{TUN_PATH} is missing: load the tun module (modprobe tun), or in a container "
            "pass the device in (--device /dev/net/tun)",
        ) from None
    except PermissionError:
        raise PermissionError(
            errno.EACCES, f"cannot open {TUN_PATH}: run as root or grant CAP_NET_ADMIN"
        ) from None


def _explain(error: OSError, name: str) -> OSError:
    """TUNSETIFF's errors, with what to do about them."""
    device = f"TAP device {name!r}" if name else "a TAP device"
    if error.errno == errno.EPERM:
        hint = "run as root or grant CAP_NET_ADMIN (or create it persistent for this user)"
        return PermissionError(errno.EPERM, f"cannot attach {device}: {hint}")
    if error.errno == errno.EBUSY:
        return OSError(errno.EBUSY, f"{device} is already attached by another process")
    if error.errno == errno.EINVAL:
        return OSError(errno.EINVAL, f"cannot attach {device}: is it a TUN device, not TAP?")
    return OSError(error.errno, f"cannot attach {device}: {error.strerror}")


def _require_interface(name: str) -> None:
    try:
        _socket.if_nametoindex(name)
    except OSError:
        raise OSError(
            errno.ENODEV,
            f"no interface {name!r} in this network namespace "
            f"(create it with: ip tuntap add dev {name or 'NAME'} mode tap)",
        ) from None


def _query_interface(name: str) -> tuple[int, bytes]:
    """The kernel side's MTU (1500 if it will not say) and MAC."""
    control = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        mtu = ifreq.mtu(control.fileno(), name)
        kernel_mac = ifreq.hardware_address(control.fileno(), name)[1]
    finally:
        control.close()
    return mtu, kernel_mac


def _local_mac(avoid: bytes) -> bytes:
    """A random unicast (bit 0 clear), locally administered (bit 1 set) MAC."""
    while True:
        first, *rest = random_bytes(6)
        mac = bytes(((first & 0xFC) | 0x02, *rest))
        if mac != avoid:
            return mac
