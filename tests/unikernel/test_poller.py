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
        assert poller.poll(1.0) == [(left.fileno(), True, True)]
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
        poller.watch(write_end, readable=False, writable=False)
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


def test_epoll_is_the_default_here() -> None:
    poller = Poller()
    try:
        assert isinstance(poller._impl, select.epoll)
    finally:
        poller.close()
