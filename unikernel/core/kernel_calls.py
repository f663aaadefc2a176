"""The few system calls PID 1 needs that Python's os module lacks: mount(2), reboot(2) and
finit_module(2).

Through ctypes, loaded only by the boot layer (ctypes costs a few milliseconds to import and a
few hundred KB of image: worth it only where no file interface exists).
"""

from __future__ import annotations

import os

RB_POWER_OFF = 0x4321FEDC
SYS_FINIT_MODULE = 313  # x86-64; glibc has no finit_module() wrapper


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


def load_module(path: str, parameters: str = "") -> None:
    """Loads the kernel module in file `path` (an uncompressed .ko) with finit_module(2).
    Raises OSError with the kernel's errno: EEXIST when the module is loaded already."""
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        args = (ctypes.c_long(fd), ctypes.c_char_p(parameters.encode()), ctypes.c_long(0))
        if _libc().syscall(ctypes.c_long(SYS_FINIT_MODULE), *args) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"finit_module {path}: {os.strerror(errno)}")
    finally:
        os.close(fd)
