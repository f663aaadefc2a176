"""The few system calls PID 1 needs that Python's os module lacks: mount(2) and reboot(2).

Through ctypes, loaded only by the boot layer (ctypes costs a few milliseconds to import and a
few hundred KB of image: worth it only where no file interface exists).
"""

from __future__ import annotations

import os

RB_POWER_OFF = 0x4321FEDC


TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes


def _libc() -> ctypes.CDLL:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    import ctypes

    libc = _libc()
    os.makedirs(target, exist_ok=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {fstype} on {target}: {os.strerror(errno)}")


def power_off() -> None:
    """Asks the kernel to power the machine off now; returns only if it refused."""
    import ctypes

    os.sync()
    if _libc().reboot(RB_POWER_OFF) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"reboot(POWER_OFF): {os.strerror(errno)}")
