"""Linux's Xen device files: opening them, and their ioctl numbers.

Every Xen ioctl is `_IOC(_IOC_NONE, type, nr, size)`: no direction bits, so the number is just
`(size << 16) | (type << 8) | nr` (asm-generic/ioctl.h). Spelling the sizes out, rather than
copying the hex numbers, lets the tests check each number against its struct's layout.
"""

from __future__ import annotations

import errno
import os


def io_none(kind: str, nr: int, size: int) -> int:
    """_IOC(_IOC_NONE, kind, nr, size): `kind` is the one-letter ioctl type ('E', 'G')."""
    if not (len(kind) == 1 and 0 <= nr < 1 << 8 and 0 <= size < 1 << 14):
        raise ValueError(f"not an ioctl number: type {kind!r}, nr {nr}, size {size}")
    return size << 16 | ord(kind) << 8 | nr


def open_device(path: str, needs: str, *, blocking: bool = False) -> int:
    """The device file at `path`, read-write; a missing one is explained: `needs` names the
    kernel option it comes from."""
    flags = os.O_RDWR | os.O_CLOEXEC | (0 if blocking else os.O_NONBLOCK)
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT,
            f"{path} is missing: not a Xen guest, a kernel without {needs}, or /dev not"
            " devtmpfs (PID 1 must mount devtmpfs on /dev itself: DEVTMPFS_MOUNT does not"
            " apply to an initramfs)",
        ) from None
    except PermissionError:
        raise PermissionError(errno.EACCES, f"cannot open {path}: run as root") from None
