"""Block I/O on a few OS threads: each does preadv/pwritev/fsync, which release the GIL while
the kernel works, and posts its completion to an eventfd the scheduler waits on. The other
engine to Linux AIO (drivers/linux_aio.py): it also works where AIO would block, on files
opened without O_DIRECT."""

from __future__ import annotations

import _thread
import os
from collections import deque
from queue import SimpleQueue

from unikernel.drivers.linux_aio import FSYNC, READ, WRITE

Request = tuple[int, int, int, "memoryview | None", int]  # token, opcode, fd, buffer, offset


class IoThreads:
    """`count` worker threads serving requests in order of submission."""

    def __init__(self, count: int, eventfd: int) -> None:
        self.eventfd = eventfd
        self._requests: SimpleQueue[Request | None] = SimpleQueue()
        self._done: deque[tuple[int, int]] = deque()
        self._count = count
        self._closed = False
        # One lock per worker, held while it runs: close() takes each to wait for its end.
        self._running: list[_thread.LockType] = []
        for _ in range(count):
            running = _thread.allocate_lock()
            running.acquire()
            self._running.append(running)
            _thread.start_new_thread(self._work, (running,))

    def submit(
        self, token: int, opcode: int, fd: int, buffer: memoryview | None, offset: int
    ) -> None:
        self._requests.put((token, opcode, fd, buffer, offset))

    def completed(self) -> list[tuple[int, int]]:
        done = self._done
        return [done.popleft() for _ in range(len(done))]

    def close(self) -> None:
        """Stop the workers: the requests not started yet are dropped, and this waits for the
        ones in progress, so that no worker uses the file descriptor or the eventfd (which the
        caller closes next, and whose numbers the kernel then reuses) after it returns."""
        if self._closed:
            return
        self._closed = True
        for _ in range(self._count):
            self._requests.put(None)
        for running in self._running:
            running.acquire()

    def _work(self, running: _thread.LockType) -> None:
        requests, done, eventfd = self._requests, self._done, self.eventfd
        try:
            while (request := requests.get()) is not None:
                if self._closed:
                    continue
                token, opcode, fd, buffer, offset = request
                try:
                    if opcode == READ:
                        assert buffer is not None
                        result = os.preadv(fd, [buffer], offset)
                    elif opcode == WRITE:
                        assert buffer is not None
                        result = os.pwritev(fd, [buffer], offset)
                    else:
                        assert opcode == FSYNC
                        os.fsync(fd)
                        result = 0
                except OSError as error:
                    result = -(error.errno or 5)
                done.append((token, result))
                os.eventfd_write(eventfd, 1)
        finally:
            running.release()
