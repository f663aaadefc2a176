"""Watching a workload's console: every line it prints, stamped with the host time it arrived.

A target hands the watcher a blocking source of byte chunks (a pipe, the Docker attach stream, a
serial port); one reader thread drains it, so the launch call itself may block meanwhile and the
marker's arrival time is still taken when the bytes arrive, not when the launch call returns.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

ChunkSource = Iterator[bytes]
MAX_LINE = 64 * 1024
TAIL_LINES = 40


def read_pipe(fd: int) -> ChunkSource:
    """A pipe's bytes as they come, until every writer has closed it."""
    while chunk := os.read(fd, 65536):
        yield chunk


class ConsoleWatcher:
    def __init__(
        self, chunks: ChunkSource, name: str, clock: Callable[[], float] = time.perf_counter
    ):
        self.name = name
        self._chunks = chunks
        self._clock = clock
        self._lines: list[tuple[float, str]] = []
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = b""
        self._changed = threading.Condition()
        self._closed = False
        self._error: str | None = None
        self._thread = threading.Thread(target=self._drain, name=f"console-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _drain(self) -> None:
        try:
            for chunk in self._chunks:
                self.feed(chunk)
        except Exception as exc:  # the source died with its workload; say so, don't crash
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self.close()

    def feed(self, chunk: bytes) -> None:
        now = self._clock()
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_LINE:  # a workload that never prints a newline
            complete.append(self._partial)
            self._partial = b""
        with self._changed:
            for raw in complete:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                self._lines.append((now, line))
                self._tail.append(line)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            if self._partial:
                line = self._partial.decode("utf-8", "replace")
                self._lines.append((self._clock(), line))
                self._tail.append(line)
                self._partial = b""
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, marker: str, deadline: float) -> tuple[float, str]:
        """The arrival time and text of the first line containing marker; raises if it never
        comes."""
        seen = 0
        with self._changed:
            while True:
                for arrived, line in self._lines[seen:]:
                    if marker in line:
                        return arrived, line
                seen = len(self._lines)
                if self._closed:
                    raise ConsoleClosed(
                        f"{self.name} console closed before {marker!r} appeared"
                        f"{' (' + self._error + ')' if self._error else ''}; {self.describe_tail()}"
                    )
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise TimeoutError(f"{marker!r} did not appear in time; {self.describe_tail()}")
                self._changed.wait(remaining)

    @property
    def closed(self) -> bool:
        """Whether the console has ended: the workload is gone (or its source broke)."""
        return self._closed

    def lines(self) -> list[tuple[float, str]]:
        with self._changed:
            return list(self._lines)

    def describe_tail(self, count: int = 5) -> str:
        with self._changed:
            tail = list(self._tail)[-count:]
        if not tail:
            return "the console printed nothing"
        return "last console lines: " + " | ".join(tail)

    def join(self, timeout: float) -> None:
        if self._thread.ident is not None:  # one never started has nothing to wait for
            self._thread.join(timeout)


class ConsoleClosed(Exception):
    pass
