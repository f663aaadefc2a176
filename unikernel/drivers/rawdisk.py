"""The block driver for a disk the kernel gives us as a file: a host file when hosted, the raw
virtio-blk device under QEMU (/dev/vdX), the raw xen-blkfront device under Xen (/dev/xvdX).

Opened with O_DIRECT, so requests go to the device rather than the kernel's page cache (the
seed's comparison is against Linux direct I/O). Requests never block the scheduler: they go to
an I/O engine (Linux AIO, or a few OS threads) whose completions signal an eventfd, and one
reaper thread of ours wakes each requester with its own result.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

from unikernel.block.interface import BlockDevice, BlockError
from unikernel.core.scheduler import spawn, wait_readable
from unikernel.core.sync import Event, Semaphore
from unikernel.drivers.io_threads import IoThreads
from unikernel.drivers.linux_aio import FSYNC, READ, WRITE, AioContext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    from unikernel.core.scheduler import Thread

    Engine = Literal["aio", "threads"]

BLKSSZGET = 0x1268  # the device's logical sector size
BLKGETSIZE64 = 0x80081272  # its size in bytes
DEFAULT_DEPTH = 64
IO_THREADS = 4


class RawDisk(BlockDevice):
    def __init__(
        self,
        path: str,
        read_only: bool,
        direct: bool = True,
        engine: Engine | None = None,
        depth: int = DEFAULT_DEPTH,
    ) -> None:
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        if direct:
            flags |= os.O_DIRECT
        self.path = path
        self.read_only = read_only
        self.direct = direct
        self._fd = os.open(path, flags)
        try:
            self.sector_size, self.capacity = _geometry(self._fd)
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except BaseException:
            os.close(self._fd)
            raise
        # AIO is asynchronous only with O_DIRECT; on a buffered file io_submit itself waits.
        self.engine: Engine = engine or ("aio" if direct else "threads")
        if self.engine == "aio":
            self._io: AioContext | IoThreads = AioContext(depth, self._eventfd)
        else:
            self._io = IoThreads(IO_THREADS, self._eventfd)
        self._slots = Semaphore(depth)
        self._next_token = 0
        self._waiting: dict[int, Event] = {}
        self._results: dict[int, int] = {}
        self._reaper: Thread[None] | None = None

    async def read(self, offset: int, buffer: memoryview) -> None:
        self.check(offset, buffer, writing=False)
        await self._request(READ, buffer, offset)

    async def write(self, offset: int, buffer: memoryview) -> None:
        self.check(offset, buffer, writing=True)
        await self._request(WRITE, buffer, offset)

    async def flush(self) -> None:
        if not self.read_only:
            await self._request(FSYNC, None, 0)

    def close(self) -> None:
        if self._fd >= 0:
            self._io.close()
            os.close(self._eventfd)
            os.close(self._fd)
            self._fd = -1

    async def _request(self, opcode: int, buffer: memoryview | None, offset: int) -> None:
        if self._fd < 0:
            raise BlockError(f"{self.path}: the device is closed")
        async with self._slots:
            token = self._next_token = self._next_token + 1
            done = self._waiting[token] = Event()
            try:
                self._io.submit(token, opcode, self._fd, buffer, offset)
            except OSError as error:
                del self._waiting[token]
                raise BlockError(error.errno, f"{self.path}: {error.strerror}") from None
            if self._reaper is None:
                self._reaper = spawn(self._reap)
            try:
                await done.wait()
            finally:
                self._waiting.pop(token, None)  # interrupted: the reaper drops its result
            result = self._results.pop(token)
        expected = 0 if buffer is None else buffer.nbytes
        if result < 0:
            raise BlockError(-result, f"{self.path} at {offset}: {os.strerror(-result)}")
        if result != expected:
            raise BlockError(f"{self.path} at {offset}: {result} of {expected} bytes moved")

    async def _reap(self) -> None:
        try:
            while self._waiting:
                await wait_readable(self._eventfd)
                try:
                    os.eventfd_read(self._eventfd)
                except BlockingIOError:
                    continue
                for token, result in self._io.completed():
                    done = self._waiting.pop(token, None)
                    if done is not None:
                        self._results[token] = result
                        done.set()
        finally:
            self._reaper = None


def _geometry(fd: int) -> tuple[int, int]:
    """(sector size, capacity) of a block device, or of a regular file (512-byte sectors)."""
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        (sector,) = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))
        (size,) = struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))
        return sector, size
    return 512, os.lseek(fd, 0, os.SEEK_END)
