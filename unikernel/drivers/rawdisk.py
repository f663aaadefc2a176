"""The block driver for a disk the kernel gives us as a file: a host file when hosted, the raw
virtio-blk device under QEMU (/dev/vdX), the raw xen-blkfront device under Xen (/dev/xvdX).

Opened with O_DIRECT, so requests go to the device rather than the kernel's page cache (the
seed's comparison is against Linux direct I/O). Requests never block the scheduler: they go to
an I/O engine (Linux AIO, or a few OS threads) whose completions signal an eventfd, and one
reaper thread of ours wakes each requester with its own result.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from unikernel.block.interface import BlockDevice, BlockError
from unikernel.core.scheduler import CancelScope, spawn, wait_readable
from unikernel.core.sync import Event, Semaphore
from unikernel.drivers.io_threads import IoThreads
from unikernel.drivers.linux_aio import FSYNC, READ, WRITE, AioContext, dio_offset_alignment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Literal

    from unikernel.core.scheduler import Thread

    Engine = Literal["aio", "threads"]

BLKSSZGET = 0x1268  # the device's logical sector size
BLKGETSIZE64 = 0x80081272  # its size in bytes
DEFAULT_DEPTH = 64
IO_THREADS = 4
ENGINES = ("aio", "threads")
_CLOSED = -errno.ECANCELED  # the result close() gives the requests still in flight


class RawDisk(BlockDevice):
    def __init__(
        self,
        path: str,
        read_only: bool,
        direct: bool = True,
        engine: Engine | None = None,
        depth: int = DEFAULT_DEPTH,
    ) -> None:
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"engine={engine!r}: say one of {', '.join(ENGINES)}")
        if depth < 1:
            raise ValueError(f"depth={depth}: at least one request must be able to be in flight")
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        if direct:
            flags |= os.O_DIRECT
        self.path = path
        self.read_only = read_only
        self.direct = direct
        # AIO is asynchronous only with O_DIRECT; on a buffered file io_submit itself waits.
        self.engine: Engine = engine or ("aio" if direct else "threads")
        self._fd = os.open(path, flags)
        self._eventfd = -1
        try:
            self.sector_size, self.capacity = _geometry(self._fd, direct)
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._io: AioContext | IoThreads = self._start_engine(depth, chosen=engine is not None)
        except BaseException:
            if self._eventfd >= 0:
                os.close(self._eventfd)
            os.close(self._fd)
            raise
        self._slots = Semaphore(depth)
        self._next_token = 0
        self._waiting: dict[int, Event] = {}
        self._results: dict[int, int] = {}
        # Requests whose requester was interrupted: still in the engine, holding their slot
        # (and their buffer) until the reaper sees them complete.
        self._abandoned: set[int] = set()
        self._reaper: Thread[None] | None = None  # reaps abandoned requests nobody waits for
        self._watching = False  # whether a thread watches the eventfd
        self._watch_scope: CancelScope | None = None

    def _start_engine(self, depth: int, chosen: bool) -> AioContext | IoThreads:
        if self.engine == "aio":
            try:
                return AioContext(depth, self._eventfd)
            except OSError as error:
                if chosen or error.errno != errno.ENOSYS:
                    raise
                self.engine = "threads"  # a kernel built without AIO
        return IoThreads(IO_THREADS, self._eventfd)

    def expect_random_reads(self) -> None:
        if not self.direct and self._fd >= 0:
            os.fsync(self._fd)  # the kernel drops only clean pages
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)

    async def read(self, offset: int, buffer: memoryview) -> None:
        self.check(offset, buffer, writing=False)
        await self._request(READ, buffer, offset)

    async def write(self, offset: int, buffer: memoryview) -> None:
        self.check(offset, buffer, writing=True)
        await self._request(WRITE, buffer, offset)

    async def flush(self) -> None:
        if self._fd < 0:
            raise BlockError(f"{self.path}: the device is closed")
        if not self.read_only:
            await self._request(FSYNC, None, 0)

    def close(self) -> None:
        """Close the device. Requests still in flight fail with BlockError; once this returns
        the engine touches neither the file nor the buffers again."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        self._io.close()  # waits for what the kernel or a worker is doing now
        waiting, self._waiting = self._waiting, {}
        for token, done in waiting.items():
            self._results[token] = _CLOSED
            done.set()
        self._abandoned.clear()
        # Now, while the eventfd is open: whoever watches it stops at once.
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
        os.close(self._eventfd)
        os.close(fd)

    async def _request(self, opcode: int, buffer: memoryview | None, offset: int) -> None:
        if self._fd < 0:
            raise BlockError(f"{self.path}: the device is closed")
        if self._abandoned and self._reaper is None and not self._watching:
            # Requests abandoned when a run() ended hold slots: reap them, or we could wait
            # for a slot forever.
            self._reaper = spawn(self._reap_abandoned)
        await self._slots.acquire()
        release = True  # the slot, unless the request stays in flight without us
        try:
            if self._fd < 0:  # closed while we waited for the slot
                raise BlockError(f"{self.path}: the device is closed")
            token = self._next_token = self._next_token + 1
            done = self._waiting[token] = Event()
            try:
                self._io.submit(token, opcode, self._fd, buffer, offset)
            except OSError as error:
                del self._waiting[token]
                raise BlockError(error.errno, f"{self.path}: {error.strerror}") from None
            try:
                result = await self._completion(token, done)
            except BaseException:
                if self._waiting.pop(token, None) is not None:
                    # Interrupted while the request is in flight: the kernel (or a worker)
                    # still owns its slot; whoever reaps its completion frees it.
                    self._abandoned.add(token)
                    release = False
                self._results.pop(token, None)
                self._hand_over()
                raise
        finally:
            if release:
                self._slots.release()
        expected = 0 if buffer is None else buffer.nbytes
        if result == _CLOSED and self._fd < 0:
            raise BlockError(
                errno.ECANCELED,
                f"{self.path} at {offset}: the device was closed while the request was in flight",
            )
        if result < 0:
            raise BlockError(-result, f"{self.path} at {offset}: {os.strerror(-result)}")
        if result != expected:
            raise BlockError(f"{self.path} at {offset}: {result} of {expected} bytes moved")

    # Completions signal the eventfd, and one thread at a time watches it: the first requester
    # to wait finds no one watching and watches itself, reaping for everyone; the others wait
    # for it to wake them with their results. Leaving, it hands the watch to a requester still
    # waiting. A lone requester thus wakes straight from the scheduler's poll, with no thread
    # in between: under an emulated CPU every scheduler round costs tens of microseconds.

    async def _completion(self, token: int, done: Event) -> int:
        results = self._results
        while token not in results:
            if self._watching:
                await done.wait()
                if token not in results and self._fd >= 0:
                    done = self._waiting[token] = Event()  # woken to take the watch over
            else:
                await self._watch(lambda: token in results)
                self._hand_over()
        return results.pop(token)

    async def _watch(self, until: Callable[[], bool]) -> None:
        """Reap completions for every requester until `until()` or the device closes."""
        self._watching = True
        try:
            with CancelScope() as scope:
                self._watch_scope = scope
                while not until() and self._fd >= 0:
                    await wait_readable(self._eventfd)
                    if self._fd >= 0:
                        self._reap()
        finally:
            self._watching = False
            self._watch_scope = None

    def _reap(self) -> None:
        try:
            os.eventfd_read(self._eventfd)
        except BlockingIOError:
            return
        for token, result in self._io.completed():
            done = self._waiting.pop(token, None)
            if done is not None:
                self._results[token] = result
                done.set()
            elif token in self._abandoned:
                self._abandoned.discard(token)
                self._slots.release()

    def _hand_over(self) -> None:
        """Give the watch to a requester still waiting, or to a reaper of abandoned requests."""
        if self._watching or self._fd < 0:
            return
        for done in self._waiting.values():
            if not done.is_set():
                done.set()  # woken without a result, it takes the watch over
                return
        if self._abandoned and self._reaper is None:
            self._reaper = spawn(self._reap_abandoned)

    async def _reap_abandoned(self) -> None:
        try:
            if not self._watching:
                await self._watch(lambda: not self._abandoned)
        finally:
            self._reaper = None
        self._hand_over()


def _geometry(fd: int, direct: bool) -> tuple[int, int]:
    """(sector size, capacity) of a block device, or of a regular file: 512-byte sectors, or
    whatever larger unit O_DIRECT needs there (a file on a disk of 4 KiB sectors); a partial
    sector at the file's end is not part of the device."""
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        (sector,) = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))
        (size,) = struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))
        return sector, size
    sector = 512
    if direct:
        sector = max(sector, dio_offset_alignment(fd) or 0)
    size = os.lseek(fd, 0, os.SEEK_END)
    return sector, size - size % sector
