"""evtchn: event channels through Linux's /dev/xen/evtchn (drivers/xen/evtchn.c).

An event channel is Xen's doorbell between two domains. Through this device a process binds
ports, rings the other end (`notify`, the EVTCHNOP_send hypercall), and learns which of its
ports rang: the fd is readable then, and `pending()` reads their numbers.

The kernel disables a port when it queues it for us, so each port fires once until we
`unmask()` it (a write of its number, which sends nothing). Events meanwhile are not lost:
they fire again once it is unmasked. So a consumer reads pending ports, drains the rings they
guard, then unmasks them, then looks at the rings once more.

Closing the device unbinds every port it bound.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from unikernel.drivers.xen.device_files import io_none, open_device

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

EVTCHN_PATH = "/dev/xen/evtchn"

# <xen/evtchn.h>: each argument is a struct of u32s, named after the ioctl.
_U32 = struct.Struct("=I")
_TWO_U32 = struct.Struct("=II")
IOCTL_EVTCHN_BIND_VIRQ = io_none("E", 0, _U32.size)  # {virq}
IOCTL_EVTCHN_BIND_INTERDOMAIN = io_none("E", 1, _TWO_U32.size)  # {remote_domain, remote_port}
IOCTL_EVTCHN_BIND_UNBOUND_PORT = io_none("E", 2, _U32.size)  # {remote_domain}
IOCTL_EVTCHN_UNBIND = io_none("E", 3, _U32.size)  # {port}
IOCTL_EVTCHN_NOTIFY = io_none("E", 4, _U32.size)  # {port}
IOCTL_EVTCHN_RESET = io_none("E", 5, 0)

_READ_LIMIT = 4096  # the device hands out at most a page of port numbers a read


def pack_bind_virq(virq: int) -> bytearray:
    return bytearray(_U32.pack(virq))


def pack_bind_interdomain(remote_domain: int, remote_port: int) -> bytearray:
    return bytearray(_TWO_U32.pack(remote_domain, remote_port))


def pack_bind_unbound(remote_domain: int) -> bytearray:
    return bytearray(_U32.pack(remote_domain))


def pack_port(port: int) -> bytearray:
    """The argument of UNBIND and NOTIFY."""
    return bytearray(_U32.pack(port))


def decode_ports(data: bytes | bytearray | memoryview) -> list[int]:
    """Port numbers as read from the device: native u32s."""
    if len(data) % _U32.size:
        raise ValueError(f"port numbers are 4 bytes each: {len(data)} bytes is not a list of them")
    return [port for (port,) in _U32.iter_unpack(data)]


def encode_ports(ports: Iterable[int]) -> bytes:
    """Port numbers as written to the device to unmask them."""
    return b"".join(_U32.pack(port) for port in ports)


class EventChannels:
    """The ports bound through one open of /dev/xen/evtchn (non-blocking)."""

    def __init__(self, path: str = EVTCHN_PATH) -> None:
        self._fd = open_device(path, "CONFIG_XEN_DEV_EVTCHN")
        self._bound: dict[int, None] = {}  # in the order bound
        self.overflows = 0  # times the device's queue of fired ports overflowed

    @property
    def bound(self) -> list[int]:
        return list(self._bound)

    def fileno(self) -> int:
        """Readable when some port has fired."""
        return self._fd

    def bind_unbound(self, remote_domain: int) -> int:
        """A new port that `remote_domain` may bind to: a front-end's way (it writes the port
        in xenstore for the back-end)."""
        return self._bind(IOCTL_EVTCHN_BIND_UNBOUND_PORT, pack_bind_unbound(remote_domain))

    def bind_interdomain(self, remote_domain: int, remote_port: int) -> int:
        """A local port joined to `remote_port`, which `remote_domain` allocated for us."""
        argument = pack_bind_interdomain(remote_domain, remote_port)
        return self._bind(IOCTL_EVTCHN_BIND_INTERDOMAIN, argument)

    def bind_virq(self, virq: int) -> int:
        return self._bind(IOCTL_EVTCHN_BIND_VIRQ, pack_bind_virq(virq))

    def notify(self, port: int) -> None:
        """Ring the other end of `port`. A hypercall, so also a full memory barrier."""
        fcntl.ioctl(self._fd, IOCTL_EVTCHN_NOTIFY, pack_port(port))

    def unbind(self, port: int) -> None:
        fcntl.ioctl(self._fd, IOCTL_EVTCHN_UNBIND, pack_port(port))
        self._bound.pop(port, None)

    def pending(self) -> list[int]:
        """The ports that fired since last asked ([] when none did), each now masked."""
        try:
            data = os.read(self._fd, _READ_LIMIT)
        except BlockingIOError:
            return []
        except OSError as error:
            if error.errno != errno.EFBIG:
                raise
            # The queue of fired ports overflowed, and which ports it lost is unknown; each of
            # them stays masked until written back. So report every port: a spurious event
            # costs its consumer one look at its ring, a lost one a stalled device.
            self.overflows += 1
            self.reset()
            return self.bound
        return decode_ports(data)

    def unmask(self, port: int) -> None:
        """Let `port` fire again; if it was signalled while masked, it fires at once."""
        os.write(self._fd, _U32.pack(port))

    def unmask_all(self, ports: Iterable[int]) -> None:
        data = encode_ports(ports)
        if data:
            os.write(self._fd, data)

    def reset(self) -> None:
        """Empty the device's queue of fired ports and clear its overflow."""
        fcntl.ioctl(self._fd, IOCTL_EVTCHN_RESET, 0)

    def close(self) -> None:
        """Unbinds every port too."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._bound.clear()

    def __enter__(self) -> EventChannels:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _bind(self, request: int, argument: bytearray) -> int:
        # A mutable argument makes fcntl.ioctl return the C result, which is the new port;
        # with bytes it would return the copied-back buffer and lose it.
        port = int(fcntl.ioctl(self._fd, request, argument))
        self._bound[port] = None
        return port
