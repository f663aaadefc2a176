"""The fd poller, with epoll and with the poll(2) fallback."""

from __future__ import annotations

import os
import select
import socket

import pytest

from unikernel.core.poller import Poller


@pytest.fixture(params=[True, False], ids=["epoll", "poll"])
def poller(request: pytest.FixtureRequest) -> Poller:
    return Poller(use_epoll=request.param)


def test_reports_a_pipe_readable_once_written(poller: Poller) -> None:
    read_end, write_end = os.pipe()
    try:
        poller.watch(read_end, readable=True, writable=False)
        assert poller
        assert poller.poll(0.0) == []
        os.write(write_end, b"x")
        assert poller.poll(1.0) == [(read_end, True, False)]
    finally:
        poller.close()
        os.close(read_end)
        os.close(write_end)


def test_watches_both_directions_and_forgets(poller: Poller) -> None:
    left, right = socket.socketpair()
    try:
        poller.watch(left.fileno(), readable=True, writable=True)
        assert poller.poll(1.0) == [(left.fileno(), False, True)]
        right.send(b"x")
        poller.watch(left.fileno(), readable=True, writable=True)  # a report disarms it
        assert poller.poll(1.0) == [(left.fileno(), True, True)]
        poller.watch(left.fileno(), readable=True, writable=True)
        poller.watch(left.fileno(), readable=False, writable=False)
        assert not poller
        assert poller.poll(0.0) == []
    finally:
        poller.close()
        left.close()
        right.close()


def test_hang_up_wakes_both_directions(poller: Poller) -> None:
    read_end, write_end = os.pipe()
    try:
        poller.watch(write_end, readable=False, writable=True)
        assert poller.poll(0.0) == [(write_end, False, True)]
        poller.watch(read_end, readable=True, writable=False)
        os.close(write_end)
        [(fd, readable, writable)] = poller.poll(1.0)
        assert (fd, readable, writable) == (read_end, True, True)
    finally:
        poller.close()
        os.close(read_end)


def test_forgetting_a_closed_fd_is_harmless(poller: Poller) -> None:
    read_end, write_end = os.pipe()
    poller.watch(read_end, readable=True, writable=False)
    os.close(read_end)
    os.close(write_end)
    poller.watch(read_end, readable=False, writable=False)
    assert not poller
    poller.close()


def test_a_report_disarms_until_watched_again(poller: Poller) -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"x")
        poller.watch(read_end, readable=True, writable=False)
        assert poller.poll(1.0) == [(read_end, True, False)]
        assert not poller  # nothing waits now, though the pipe is still readable
        assert poller.poll(0.0) == []
        poller.watch(read_end, readable=True, writable=False)
        assert poller.poll(1.0) == [(read_end, True, False)]
    finally:
        poller.close()
        os.close(read_end)
        os.close(write_end)


class CountingEpoll:
    """An epoll that counts its epoll_ctl calls."""

    def __init__(self, real: select.epoll) -> None:
        self.real = real
        self.calls: list[str] = []

    def register(self, fd: int, events: int) -> None:
        self.calls.append("register")
        self.real.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.calls.append("modify")
        self.real.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self.calls.append("unregister")
        self.real.unregister(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return self.real.poll(timeout)

    def close(self) -> None:
        self.real.close()


def test_waiting_again_after_a_wake_up_is_one_system_call() -> None:
    poller = Poller(use_epoll=True)
    spy = CountingEpoll(poller._impl)  # type: ignore[arg-type]
    poller._impl = spy  # type: ignore[assignment]
    read_end, write_end = os.pipe()
    try:
        poller.watch(read_end, readable=True, writable=False)
        for _ in range(3):  # as a device's reader: woken, reads, waits again
            os.write(write_end, b"x")
            assert poller.poll(1.0) == [(read_end, True, False)]
            poller.watch(read_end, readable=False, writable=False)  # the scheduler, waking it
            os.read(read_end, 1)
            poller.watch(read_end, readable=True, writable=False)
        assert spy.calls == ["register", "modify", "modify", "modify"]
    finally:
        poller.close()
        os.close(read_end)
        os.close(write_end)


def test_a_disarmed_number_taken_by_a_new_file_reports_the_new_file() -> None:
    poller = Poller(use_epoll=True)
    old_read, old_write = os.pipe()
    kept = os.dup(old_read)  # the old file lives on under another number
    try:
        poller.watch(old_read, readable=True, writable=False)
        os.write(old_write, b"x")
        assert poller.poll(1.0) == [(old_read, True, False)]
        os.close(old_read)
        new_read, new_write = os.pipe()
        try:
            assert new_read == old_read  # the lowest free number: the one just closed
            poller.watch(new_read, readable=True, writable=False)
            assert poller.poll(0.0) == []  # the old file is still readable, but not watched
            os.write(new_write, b"y")
            assert poller.poll(1.0) == [(new_read, True, False)]
        finally:
            os.close(new_read)
            os.close(new_write)
    finally:
        poller.close()
        os.close(kept)
        os.close(old_write)


def test_epoll_is_the_default_here() -> None:
    poller = Poller()
    try:
        assert isinstance(poller._impl, select.epoll)
    finally:
        poller.close()
