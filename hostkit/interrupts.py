"""Ctrl-C and SIGTERM: both become an exception in the main thread, so that clean-up runs; and
both are held back while a child is spawned or stopped, so that they never land half-way
through, leaving a child that nobody will stop.

Holding back is done in our handler, not with the signal mask: the kernel may deliver a signal
to any thread (the console readers, the watchdog) that does not block it, and Python then runs
the handler in the main thread all the same; and a child spawned with signals masked would
inherit the mask. So the handler itself looks whether the main thread is inside a held-back
block, and if so notes the signal for the block's end.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOPPING = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that clean-up runs as it does for Ctrl-C."""


class _HeldBack:
    """The main thread's state: how deep in held-back blocks it is, what arrived there, and,
    for a run that stops at the first signal, whether one has been raised already."""

    def __init__(self) -> None:
        self.depth = 0
        self.strict_depth = 0
        self.pending: list[int] = []
        self.once = False
        self.raised = False


_held = _HeldBack()


def signal_of(interruption: KeyboardInterrupt) -> int:
    """The signal an interruption came from."""
    return signal.SIGTERM if isinstance(interruption, Interrupted) else signal.SIGINT


def _interrupt(signum: int) -> None:
    if _held.once and _held.raised:
        return  # the run is already stopping: let the clean-up it started finish
    _held.raised = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(f"signal {signum}")


def _handler(signum: int, frame: FrameType | None) -> None:
    if _held.depth > 0:
        _held.pending.append(signum)
        return
    _interrupt(signum)


@contextlib.contextmanager
def terminate_as_interrupt(once: bool = False) -> Iterator[None]:
    """For the block, SIGTERM raises Interrupted and Ctrl-C KeyboardInterrupt, except inside
    signals_deferred() blocks, at whose end they are raised. `once`: only the first is raised;
    later ones are ignored, so they cannot cut short the clean-up it started. A signal we were
    started ignoring stays ignored: a shell ignores SIGINT for its background jobs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        number: signal.signal(number, _handler)
        for number in STOPPING
        if signal.getsignal(number) is not signal.SIG_IGN
    }
    _held.once, _held.raised = once, False
    try:
        yield
    finally:
        _held.once, _held.raised = False, False
        for number, handler in previous.items():
            signal.signal(number, handler)


def holding() -> bool:
    """Whether the main thread is inside a strict signals_deferred() block: where nothing else
    may interrupt it either (the runner's watchdog asks)."""
    return _held.strict_depth > 0


@contextlib.contextmanager
def signals_deferred(strict: bool = True) -> Iterator[None]:
    """Holds Ctrl-C and SIGTERM back for the block; the first to come is raised as it ends.
    Only the main thread, where Python runs signal handlers, holds anything back. A block that
    is not `strict` may wait on something that hangs: holding() says False there, so that a
    watchdog may still interrupt it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held.depth += 1
    _held.strict_depth += strict
    try:
        yield
    finally:
        _held.depth -= 1
        _held.strict_depth -= strict
        if _held.depth == 0 and _held.pending:
            first = _held.pending[0]
            _held.pending.clear()
            _interrupt(first)
