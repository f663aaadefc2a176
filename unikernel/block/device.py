"""A declared disk, wired to its device: a file when hosted (its path in the environment, made
by whoever launched us), /dev/vdX under QEMU (virtio-blk), /dev/xvdX under Xen (Linux's
blkfront), or, in a Xen image built with drivers="python", our own blkfront, which connects
when the app first asks for the block device:

    disk = await devices.disk("data").block()
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from unikernel.block.interface import BlockDevice
    from unikernel.devices import Disk

DISK_VARIABLE = "UNIKERNEL_DISK_"  # + the disk's name in capitals: a hosted disk's file


def disk_variable(name: str) -> str:
    return DISK_VARIABLE + "".join(c if c.isalnum() else "_" for c in name.upper())


def hosted_disk_environment(paths: Mapping[str, str]) -> dict[str, str]:
    """What a launcher sets for a hosted unikernel's disks: name -> the host file."""
    return {disk_variable(name): path for name, path in paths.items()}


class DiskDevice:
    """A raw block device: where it is and how the app may open it. A disk our own blkfront
    drives has no path (no kernel block device): it is reached through block() only."""

    def __init__(
        self,
        declared: Disk,
        path: str | None = None,
        connect: Callable[[], Awaitable[BlockDevice]] | None = None,
    ) -> None:
        if (path is None) == (connect is None):
            raise ValueError(f"disk {declared.name}: give a device path or a driver, one")
        self.declared = declared
        self.name = declared.name
        self.path = path
        self.read_only = declared.read_only
        self._connect = connect

    @classmethod
    def hosted(cls, declared: Disk, environ: Mapping[str, str] | None = None) -> DiskDevice:
        """The disk as a host file, named in the environment by whoever launched us."""
        variable = disk_variable(declared.name)
        path = (os.environ if environ is None else environ).get(variable)
        if not path:
            raise FileNotFoundError(
                f"disk {declared.name}: a hosted unikernel reads its disk from a file; set "
                f"{variable} to its path (bench and `unikernel run` make one)"
            )
        return cls(declared, path)

    def size_bytes(self) -> int:
        """The device's capacity."""
        fd = os.open(self._kernel_path(), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    def open(self, direct: bool = True) -> int:
        """A file descriptor on the device, read-only if declared so; O_DIRECT unless asked
        otherwise, so reads reach the device rather than the kernel's page cache."""
        flags = os.O_RDONLY if self.read_only else os.O_RDWR
        if direct:
            flags |= os.O_DIRECT
        return os.open(self._kernel_path(), flags | os.O_CLOEXEC)

    async def block(self, direct: bool = True) -> BlockDevice:
        """The device behind the block interface (block/interface.py): through our own driver
        where the image has one (connected now), else the kernel's device, O_DIRECT unless
        asked otherwise, requests in flight on Linux AIO (or OS threads when buffered)."""
        if self._connect is not None:
            device = await self._connect()
            if self.read_only:
                device.read_only = True
            return device
        from unikernel.drivers.rawdisk import RawDisk

        return RawDisk(self._kernel_path(), read_only=self.read_only, direct=direct)

    def _kernel_path(self) -> str:
        if self.path is None:
            raise OSError(
                f"disk {self.name}: this image drives it with its own front-end, so the kernel "
                "has no device for it; use `await disk.block()`"
            )
        return self.path
