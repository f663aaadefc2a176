"""Ctrl-C and SIGTERM are held back inside signals_deferred() blocks, whichever thread the kernel
delivers them to, and raised as the block ends."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from hostkit import namespaces
from hostkit.interrupts import Interrupted, holding, signals_deferred, terminate_as_interrupt
from hostkit.namespaces import NetworkNamespace, entered
from tests.support.netns import require


@pytest.fixture(autouse=True)
def interruptible() -> Iterator[None]:
    """SIGINT as a terminal's foreground process has it, even where the tests run as a background
    job (whose shell made them ignore it: then it would stay ignored, by design)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def deliver(signum: int, to_thread: threading.Thread | None) -> None:
    if to_thread is None:
        os.kill(os.getpid(), signum)
    else:
        assert to_thread.ident is not None
        signal.pthread_kill(to_thread.ident, signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("via_other_thread", [False, True])
def test_a_signal_inside_a_held_block_is_raised_at_its_end(
    signum: int, via_other_thread: bool
) -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    reached_the_end = False
    try:
        with (
            terminate_as_interrupt(),
            pytest.raises(KeyboardInterrupt) as caught,
            signals_deferred(),
        ):
            deliver(signum, other if via_other_thread else None)
            time.sleep(0.2)  # Python runs the handler between these bytecodes
            with signals_deferred():  # nested: still held
                time.sleep(0.05)
            reached_the_end = True
    finally:
        stop.set()
    assert reached_the_end
    assert isinstance(caught.value, Interrupted) == (signum == signal.SIGTERM)


def test_outside_a_held_block_the_signal_interrupts_at_once() -> None:
    with terminate_as_interrupt(), pytest.raises(Interrupted):
        deliver(signal.SIGTERM, None)
        time.sleep(5)
        pytest.fail("not interrupted")


def test_the_handlers_are_restored_after_the_run() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with terminate_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_once_raises_the_first_signal_and_ignores_the_rest() -> None:
    with terminate_as_interrupt(once=True), pytest.raises(Interrupted):
        try:
            deliver(signal.SIGTERM, None)
            time.sleep(5)
        finally:  # the clean-up a first signal started: a second must not cut it short
            deliver(signal.SIGINT, None)
            time.sleep(0.2)
            cleaned = True
    assert cleaned


def test_a_signal_we_were_started_ignoring_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a shell's background job
    try:
        with terminate_as_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            deliver(signal.SIGINT, None)
            time.sleep(0.2)  # nothing raised
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_inside_a_namespace_is_raised_back_home(signum: int) -> None:
    """Raised in the namespace, it would leave the main thread there for good."""
    require()
    namespace = NetworkNamespace()
    try:
        home = os.readlink("/proc/thread-self/ns/net")
        body_done = False
        with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
            with entered(namespace.name):
                inside = os.readlink("/proc/thread-self/ns/net")
                deliver(signum, None)
                time.sleep(0.05)  # the handler runs here, and must hold it back
                body_done = True
            raise AssertionError("the signal should be raised as the block ends")
        assert body_done and inside != home
        assert os.readlink("/proc/thread-self/ns/net") == home
    finally:
        namespace.close()


@pytest.mark.parametrize("during", ["add", "set"])
def test_a_namespace_whose_making_is_interrupted_is_not_left(
    during: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while `ip` makes the namespace, or sets it up: the caller never gets an object to
    close, so the constructor must delete what `ip` made."""
    require()
    real_ip = namespaces._ip

    def ip_then_interrupted(*args: str) -> str:
        output = real_ip(*args)
        if during in args:
            deliver(signal.SIGINT, None)
            time.sleep(0.2)  # the handler runs here, or is held back to the block's end
        return output

    monkeypatch.setattr(namespaces, "_ip", ip_then_interrupted)
    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt):
        NetworkNamespace()
    assert namespaces.held() == []


def test_only_a_strict_block_refuses_the_watchdog() -> None:
    assert not holding()
    with signals_deferred(strict=False):
        assert not holding()  # waits on what may hang: the watchdog may interrupt it
        with signals_deferred():
            assert holding()
        assert not holding()
    assert not holding()
