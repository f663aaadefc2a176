"""The console: lines of text written straight to a file descriptor, unbuffered.

Writes are synchronous on purpose: the console is where the unikernel reports trouble, so it has
to work even when the scheduler is stuck or not running yet.
"""

from __future__ import annotations

import os
import select


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data`, across partial writes, and across EAGAIN when `fd` is
    non-blocking (EINTR Python retries by itself)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll()
            continue
        view = view[written:]


class Console:
    def __init__(self, fd: int = 1) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        write_all(self.fd, data)

    def line(self, text: str) -> None:
        """Write `text` and a newline; characters UTF-8 cannot encode become '?'."""
        write_all(self.fd, (text + "\n").encode("utf-8", "replace"))
