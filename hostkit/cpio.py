"""A writer of cpio archives in the "newc" format, the one the Linux kernel unpacks as an
initramfs. Deterministic: entries carry no times or owners, so one input makes one archive."""

from __future__ import annotations

import stat
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class CpioWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._inode = 0
        self._names: set[str] = set()
        self.written = 0

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        name = name.strip("/")
        if name in self._names:
            raise ValueError(f"{name} is in the archive twice")
        self._names.add(name)
        self._inode += 1
        encoded = name.encode() + b"\0"
        fields = (
            self._inode,  # ino
            mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(mode) else 1,  # nlink
            0,  # mtime
            len(data),
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check
        )
        header = MAGIC + b"".join(b"%08X" % field for field in fields)
        chunk = header + encoded + _pad(len(header) + len(encoded)) + data + _pad(len(data))
        self._out.write(chunk)
        self.written += len(chunk)

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def close(self) -> None:
        self._entry(TRAILER, 0)
        tail = -self.written % 512  # the kernel does not care; cpio(1) readers like whole blocks
        self._out.write(b"\0" * tail)
        self.written += tail

    def has(self, name: str) -> bool:
        return name.strip("/") in self._names
