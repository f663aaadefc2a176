"""tap: a Linux TAP device as the netif, for the hosted target.

The kernel sees a TAP device as an Ethernet interface (with its own MAC, and the address the
host gives it); the process holding /dev/net/tun sees the other end of that cable: every
frame the kernel sends on the interface is one read(), every write() one frame received.
The unikernel is a separate host on that cable, so it takes a MAC of its own.

    netif = TapNetif("tap0", existing=True)   # a persistent device: ip tuntap add mode tap
    netif = TapNetif()                        # a new one, named by the kernel, gone on close()

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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    Buffer = bytes | bytearray | memoryview

TUN_PATH = "/dev/net/tun"

# From <linux/if_tun.h>.
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000  # frames only, no 4-byte packet-information header before them

# Write errors that lose one frame, as a NIC drops frames, rather than break the driver:
# EIO while the kernel's side is down, EINVAL for a runt frame.
_DROPPING_ERRNOS = (errno.EIO, errno.EINVAL, errno.ENETDOWN, errno.EMSGSIZE, errno.ENOBUFS)


class TapNetif(Netif):
    def __init__(self, name: str = "", *, existing: bool = False, mac: bytes | None = None) -> None:
        """Open TAP device `name` ("" lets the kernel pick tapN); `existing`: attach only to a
        device that is already there, never create one. `mac` is the unikernel's address
        (default: a random locally administered one, never the kernel side's)."""
        if len(name.encode()) >= ifreq.IFNAMSIZ:
            raise ValueError(f"interface names are shorter than {ifreq.IFNAMSIZ} bytes: {name!r}")
        if existing:
            _require_interface(name)
        self._fd = -1
        fd = _open_tun()
        try:
            flags = struct.pack(ifreq.IFREQ_FLAGS, name.encode(), _IFF_TAP | _IFF_NO_PI)
            try:
                answer = fcntl.ioctl(fd, _TUNSETIFF, flags)
            except OSError as error:
                raise _explain(error, name) from None
            self.name = struct.unpack(ifreq.IFREQ_FLAGS, answer)[0].rstrip(b"\0").decode()
            self.mtu, self.kernel_mac = _query_interface(self.name)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.mac = mac if mac is not None else _local_mac(avoid=self.kernel_mac)
        self.write_errors = 0  # frames lost to _DROPPING_ERRNOS
        self._buffer_size = self.mtu + ifreq.FRAME_OVERHEAD
        self._views: list[memoryview] = []  # receive buffers, reused by every read_batch()

    def fileno(self) -> int:
        return self._fd

    def read_batch(self, limit: int) -> list[Buffer]:
        views = self._views
        while len(views) < limit:
            views.append(memoryview(bytearray(self._buffer_size)))
        frames: list[Buffer] = []
        readv, fd = os.readv, self._fd
        for view in views[:limit]:
            try:
                # One frame per read: the TAP API. A frame over our MTU comes truncated, and
                # the stack drops it as malformed.
                n = readv(fd, (view,))
            except BlockingIOError:
                break
            frames.append(view[:n])
        return frames

    def write_batch(self, frames: Sequence[Buffer]) -> int:
        fd = self._fd
        taken, lost = write_frames(lambda frame: os.write(fd, frame), frames, _DROPPING_ERRNOS)
        self.write_errors += lost
        return taken

    def close(self) -> None:
        """Let go of the device; the kernel removes it unless it is persistent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TapNetif:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mac = ":".join(f"{b:02x}" for b in self.mac)
        return f"<TapNetif {self.name or '?'} mac {mac} mtu {self.mtu}>"


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


TAP_VARIABLE = "UNIKERNEL_TAP"  # the TAP device a hosted unikernel's launcher made for it


def launch_tap() -> TapNetif:
    """The TAP device whoever launched us made for this process (it must exist, in the network
    namespace we run in): the hosted target's network."""
    name = os.environ.get(TAP_VARIABLE)
    if not name:
        raise FileNotFoundError(
            f"a hosted unikernel attaches to a TAP device: set {TAP_VARIABLE} to one that exists"
            " (ip tuntap add dev NAME mode tap) in our network namespace; bench and"
            " `unikernel run` make one"
        )
    return TapNetif(name, existing=True)
