"""Ctrl-C and SIGTERM: both become an exception in the main thread, so that clean-up runs; and
both are held back while a child is spawned or stopped, so that they never land half-way
through, leaving a child that nobody will stop.

Holding back is done in our handler, not with the signal mask: the kernel may deliver a signal
to any thread (the console readers, the watchdog) that does not block it, and Python then runs
the handler in the main thread all the same. So the handler itself looks whether the main thread
is inside a held-back block, and if so notes the signal for the block's end.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that clean-up runs as it does for Ctrl-C."""


class _HeldBack:
    """The main thread's state: how deep in held-back blocks it is, and what arrived there."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: list[int] = []


_held = _HeldBack()


def _interruption(signum: int) -> KeyboardInterrupt:
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return Interrupted(f"signal {signum}")


def _handler(signum: int, frame: FrameType | None) -> None:
    if _held.depth > 0:
        _held.pending.append(signum)
        return
    raise _interruption(signum)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """For the block, SIGTERM raises Interrupted and Ctrl-C KeyboardInterrupt, except inside
    signals_deferred() blocks, at whose end they are raised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        number: signal.signal(number, _handler) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Holds Ctrl-C and SIGTERM back for the block; the first to come is raised as it ends.
    Only the main thread, where Python runs signal handlers, holds anything back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held.depth += 1
    try:
        yield
    finally:
        _held.depth -= 1
        if _held.depth == 0 and _held.pending:
            first = _held.pending[0]
            _held.pending.clear()
            raise _interruption(first)
