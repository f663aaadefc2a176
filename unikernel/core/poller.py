"""Readiness of file descriptors, for the scheduler: epoll, or poll(2) where epoll is missing.

A descriptor is armed only while some thread waits on it, with the directions waited for, and
each report disarms it (EPOLLONESHOT): the caller says again what it still waits for. A
thread woken to read a device usually waits on it again before the next poll, and re-arming a
disarmed descriptor is one system call, where removing it and adding it back are two.
"""

from __future__ import annotations

import select


class Poller:
    def __init__(self, use_epoll: bool = hasattr(select, "epoll")) -> None:
        self._interest: dict[int, int] = {}  # fd -> events armed
        # Registered with epoll but disarmed by a report: inert until re-armed. A descriptor
        # closed meanwhile leaves the kernel's registry by itself.
        self._disarmed: set[int] = set()
        self._impl: select.epoll | select.poll
        if use_epoll:
            self._impl = select.epoll()
            self._timeout_unit = 1.0  # epoll counts seconds
            self._in, self._out = select.EPOLLIN, select.EPOLLOUT
            self._oneshot = select.EPOLLONESHOT
            errors = select.EPOLLERR | select.EPOLLHUP
        else:
            self._impl = select.poll()
            self._timeout_unit = 1000.0  # poll counts milliseconds
            self._in, self._out = select.POLLIN, select.POLLOUT
            self._oneshot = 0  # poll(2) keeps its set in our memory: disarming is dropping
            errors = select.POLLERR | select.POLLHUP
        # An error or hang-up wakes both directions: the read or write then reports it.
        self._readable = self._in | errors
        self._writable = self._out | errors

    def __bool__(self) -> bool:
        """Whether any descriptor is armed."""
        return bool(self._interest)

    def watch(self, fd: int, readable: bool, writable: bool) -> None:
        """Wait for exactly these directions on `fd` (neither: forget it)."""
        events = (self._in if readable else 0) | (self._out if writable else 0)
        armed = self._interest.get(fd, 0)
        if events == armed:
            return
        if not events:
            del self._interest[fd]
            try:  # noqa: SIM105 (contextlib takes 10 ms to import)
                self._impl.unregister(fd)
            except OSError:
                pass  # closed while waited on: the kernel has dropped it already
            return
        if armed:
            self._impl.modify(fd, events | self._oneshot)
        elif fd in self._disarmed:
            self._disarmed.discard(fd)
            try:
                self._impl.modify(fd, events | self._oneshot)
            except FileNotFoundError:  # closed since, and the number taken by a new file
                self._impl.register(fd, events | self._oneshot)
        else:
            self._impl.register(fd, events | self._oneshot)
        self._interest[fd] = events

    def poll(self, timeout: float | None) -> list[tuple[int, bool, bool]]:
        """Block up to `timeout` seconds (None: until an event) and return (fd, readable,
        writable) for each ready descriptor, each now disarmed. Both system calls round the
        timeout up to whole milliseconds."""
        if timeout is not None:
            timeout *= self._timeout_unit
        readable, writable = self._readable, self._writable
        ready = self._impl.poll(timeout)
        interest = self._interest
        for fd, _ in ready:
            interest.pop(fd, None)
            if self._oneshot:
                self._disarmed.add(fd)
            else:
                self._impl.unregister(fd)
        return [(fd, bool(events & readable), bool(events & writable)) for fd, events in ready]

    def close(self) -> None:
        if isinstance(self._impl, select.epoll):
            self._impl.close()
        self._interest.clear()
        self._disarmed.clear()
