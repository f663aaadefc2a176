"""Cooperative threads over one epoll loop: the unikernel's only event loop.

Threads are `async def` coroutines rather than generators: `await` marks every point where a
thread can be suspended, and the scheduler can tell them from ordinary iterators. There is no
asyncio here; the one thing a thread ever yields to the scheduler is `_PARK`.

A thread is in one of four states:
- runnable: in the run queue, holding the value (or exception) it will resume with;
- running;
- parked: registered with whatever will wake it (a timer, an fd, a join, a sync primitive), its
  `_disarm` undoing that registration should it be interrupted instead;
- done, holding its result or exception until someone joins it.

Interruptions (Thread.cancel(), a cancel scope cancelled or timing out) are delivered at wait
points: a parked thread is disarmed and resumed with the exception at once; a runnable or
running thread gets it when it next waits. A wake-up once given is never taken back: a thread
woken with a queue item returns that item, and meets its cancellation at its next wait.
"""

from __future__ import annotations

import time

from unikernel.core.clock import Clock, MonotonicClock
from unikernel.core.generics import Generic, TypeVar
from unikernel.core.poller import Poller
from unikernel.core.timers import TimerHeap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator
    from types import TracebackType
    from typing import Any, Self, TypeVarTuple

    Ts = TypeVarTuple("Ts")

T = TypeVar("T")


class Cancelled(BaseException):
    """Raised at a thread's wait point when it is cancelled.

    A BaseException, so that `except Exception` does not swallow it: catch it only to clean up,
    then let it go on.
    """


class Deadlock(RuntimeError):
    """Every thread is waiting and nothing (no timer, no file descriptor) can wake any of them."""


class BusyError(RuntimeError):
    """Another thread already waits for the same direction of the same file descriptor."""


class _ScopeCancelled(Cancelled):
    """How a cancelled CancelScope interrupts the waits inside it; the scope catches it on the way
    out. A nursery also cancels its children with its scope's, to know them again."""

    def __init__(self, scope: CancelScope) -> None:
        super().__init__(scope._reason)
        self.scope = scope


class _Park:
    """The awaitable that suspends the current thread.

    Whoever awaits it has first arranged for something to wake the thread, and set its
    `_disarm` (see Thread._park()).
    """

    __slots__ = ()

    def __await__(self) -> Generator[_Park, Any, Any]:
        return (yield self)


_PARK = _Park()


class Thread(Generic[T]):
    """A cooperative thread, made by spawn()."""

    __slots__ = (
        "_cancel_pending",
        "_coro",
        "_disarm",
        "_done",
        "_error",
        "_joiners",
        "_observed",
        "_on_done",
        "_result",
        "_sched",
        "_scope",
        "_throw",
        "_value",
    )
    _result: T
    _error: BaseException | None

    def __init__(self, sched: _Scheduler, coro: Coroutine[Any, Any, T]) -> None:
        self._sched = sched
        self._coro = coro
        self._value: object = None
        self._throw: BaseException | None = None
        self._disarm: Callable[[], object] | None = None
        self._cancel_pending: Cancelled | None = None
        self._scope: CancelScope | None = None  # the innermost one the thread is in
        self._joiners: dict[Thread[Any], None] | None = None
        self._on_done: Callable[[Thread[Any]], object] | None = None  # a nursery's, say
        self._done = False
        self._error = None

    def __repr__(self) -> str:
        name = getattr(self._coro, "__qualname__", "?")
        return f"<Thread {name} at {id(self):#x}>"

    @property
    def done(self) -> bool:
        return self._done

    async def join(self) -> T:
        """Wait for the thread to finish; return its result or raise its exception."""
        if not self._done:
            me = _enter_wait()
            if me is self:
                raise RuntimeError(f"{self!r} cannot join itself")
            joiners = self._joiners
            if joiners is None:
                joiners = self._joiners = {}
            joiners[me] = None
            await me._park(lambda: joiners.pop(me))
        self._observed = True
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> None:
        """Raise Cancelled in the thread at its current wait point (or its next one, if it is
        not waiting now); a thread that has not started yet gets it at its first. No-op once
        the thread is done."""
        self._cancel_with(Cancelled())

    # Used by the scheduler, sync.py and nursery.py.

    def _cancel_with(self, exc: Cancelled) -> None:
        if not self._done:
            self._cancel_pending = exc
            self._interrupt()

    def _park(self, disarm: Callable[[], object]) -> _Park:
        self._disarm = disarm
        return _PARK

    def _resume(self, value: object) -> None:
        self._disarm = None
        self._value = value
        self._sched._runq.append(self)

    def _wake(self) -> None:
        self._resume(None)

    def _interrupt(self) -> None:
        """Deliver a pending interruption now, if the thread is parked."""
        if self._disarm is not None:
            exc = self._take_interruption()
            if exc is not None:
                self._throw_in(exc)

    def _throw_in(self, exc: BaseException) -> None:
        """Resume the parked thread with `exc` instead of what it waits for."""
        disarm = self._disarm
        assert disarm is not None
        self._disarm = None
        disarm()
        self._throw = exc
        self._sched._runq.append(self)

    def _raise_interruption(self) -> None:
        if self._cancel_pending or self._scope is not None:  # an exception is true
            exc = self._take_interruption()
            if exc is not None:
                raise exc

    def _take_interruption(self) -> BaseException | None:
        """The exception the thread should get at a wait point, if any.

        Cancellation is delivered once. Cancelled scopes keep interrupting every wait inside
        them, the outermost first, until the thread leaves them.
        """
        exc = self._cancel_pending
        if exc is not None:
            self._cancel_pending = None
            return exc
        cancelled = None
        scope = self._scope
        while scope is not None:
            if scope._cancelled:
                cancelled = scope
            scope = scope._outer
        return None if cancelled is None else _ScopeCancelled(cancelled)


class _Scheduler:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._runq: list[Thread[Any]] = []
        self._timers = TimerHeap()
        self._poller = Poller()
        self._readers: dict[int, Thread[Any]] = {}
        self._writers: dict[int, Thread[Any]] = {}
        # Every thread in spawn order, finished ones swept out now and then: appending to a
        # list costs less than adding to and removing from a set.
        self._threads: list[Thread[Any]] = []
        self._sweep_at = 1024
        self._live = 0
        self._failed: list[Thread[Any]] = []
        self._current: Thread[Any] | None = None
        self._main: Thread[Any] | None = None
        self._deadlock_delivered = False

    def _live_threads(self) -> list[Thread[Any]]:
        return [thread for thread in self._threads if not thread._done]

    def run(self, main: Thread[Any]) -> None:
        """Run until every thread has finished."""
        self._main = main
        while True:
            batch = self._runq
            if batch:
                # Threads woken while this batch runs go to the next one: the loop polls for
                # I/O and timers between batches, so busy threads cannot starve the others.
                self._runq = []
                self._run_batch(batch)
            if not self._live:
                return
            self._wait_for_events()

    def _run_batch(self, batch: list[Thread[Any]]) -> None:
        # The hottest loop of the unikernel: one iteration per thread switch.
        for thread in batch:
            self._current = thread
            try:
                exc = thread._throw
                if exc is None:
                    yielded = thread._coro.send(thread._value)
                else:
                    thread._throw = None
                    yielded = thread._coro.throw(exc)
            except StopIteration as stop:
                thread._done = True
                thread._result = stop.value
                self._live -= 1
                if thread._joiners or thread._on_done is not None or thread is self._main:
                    self._finished(thread)
            except BaseException as error:
                self._failed_with(thread, error)
            else:
                if yielded is not _PARK:
                    # Someone else's awaitable (asyncio's, say): we cannot serve it.
                    thread._throw = TypeError(f"{thread!r} awaited {yielded!r}, not ours")
                    self._runq.append(thread)

    def _failed_with(self, thread: Thread[Any], error: BaseException) -> None:
        thread._done = True
        thread._error = error
        thread._observed = False
        self._live -= 1
        if not isinstance(error, Cancelled):
            self._failed.append(thread)
        self._finished(thread)

    def _finished(self, thread: Thread[Any]) -> None:
        """Wake whoever waits for `thread`, which has just finished."""
        joiners = thread._joiners
        if joiners:
            thread._joiners = None
            for joiner in joiners:
                joiner._wake()
        on_done = thread._on_done
        if on_done is not None:
            on_done(thread)
        if thread is self._main:
            # The application is over: the others unwind through their finally blocks.
            for other in self._live_threads():
                other.cancel()

    def _wait_for_events(self) -> None:
        """Block until I/O is ready or the next timer is due (not at all if threads are
        runnable), then wake the threads concerned."""
        timeout: float | None
        deadline = None
        if self._runq:
            timeout = 0.0
        else:
            deadline = self._timers.next_deadline()
            if deadline is not None:
                timeout = self.clock.block_for(deadline)
            elif self._poller:
                timeout = None
            else:
                self._deadlocked()
                return
        ready: list[tuple[int, bool, bool]] = []
        if self._poller:
            ready = self._poller.poll(timeout)
        elif timeout:
            time.sleep(timeout)  # finer than epoll, which counts whole milliseconds
        for fd, readable, writable in ready:
            if readable and (thread := self._readers.pop(fd, None)) is not None:
                thread._wake()
            if writable and (thread := self._writers.pop(fd, None)) is not None:
                thread._wake()
            self._update_interest(fd)
        if deadline is not None and not ready:
            self.clock.skip_to(deadline)
        self._timers.fire_due(self.clock.now())

    def _deadlocked(self) -> None:
        main = self._main
        assert main is not None
        stuck = self._live_threads()
        if not main._done and not self._deadlock_delivered:
            # Raise it where main waits: its traceback then shows what it was waiting for.
            self._deadlock_delivered = True
            names = ", ".join(repr(thread) for thread in stuck[:5])
            more = f" and {len(stuck) - 5} more" if len(stuck) > 5 else ""
            main._throw_in(Deadlock(f"every thread waits forever: {names}{more}"))
            return
        # Still stuck: close the threads, which runs their finally blocks, and give up.
        for thread in stuck:
            thread._disarm = None
        for thread in stuck:
            try:
                thread._coro.close()
            except BaseException as error:
                self._failed_with(thread, error)
            else:
                self._failed_with(thread, Deadlock(f"{thread!r} waited forever"))
        self._runq = []

    def watch_fd(self, fd: int, thread: Thread[Any], waiters: dict[int, Thread[Any]]) -> None:
        if fd in waiters:
            raise BusyError(f"{waiters[fd]!r} already waits on fd {fd}")
        waiters[fd] = thread
        try:
            self._update_interest(fd)
        except BaseException:
            del waiters[fd]
            raise

    def unwatch_fd(self, fd: int, waiters: dict[int, Thread[Any]]) -> None:
        del waiters[fd]
        self._update_interest(fd)

    def _update_interest(self, fd: int) -> None:
        self._poller.watch(fd, fd in self._readers, fd in self._writers)

    def outcome(self, main: Thread[T]) -> T:
        """main's result or exception, once run() is over; failures nobody joined are never
        dropped: notes on main's exception, or else an exception group of their own."""
        errors = [
            t._error
            for t in self._failed
            if t._error is not None and not t._observed and t is not main
        ]
        if main._error is not None:
            for error in errors:
                main._error.add_note(f"a thread nobody joined also failed: {error!r}")
            raise main._error
        if errors:
            raise BaseExceptionGroup("threads failed and nobody joined them", errors)
        result: T = main._result
        return result

    def close(self) -> None:
        self._poller.close()


_running: _Scheduler | None = None


def run(main: Callable[[*Ts], Coroutine[Any, Any, T]], *args: *Ts, clock: Clock | None = None) -> T:
    """Run `main(*args)` as the first thread until every thread has finished; return its result
    or raise its exception. When main finishes, the threads still running are cancelled."""
    global _running
    if _running is not None:
        raise RuntimeError("run() is already running")
    sched = _running = _Scheduler(clock if clock is not None else MonotonicClock())
    try:
        thread = spawn(main, *args)
        sched.run(thread)
    finally:
        _running = None
        sched.close()
    return sched.outcome(thread)


def _scheduler() -> _Scheduler:
    sched = _running
    if sched is None:
        raise RuntimeError("only threads inside run() can do this")
    return sched


def current_thread() -> Thread[Any]:
    thread = _scheduler()._current
    assert thread is not None
    return thread


def _enter_wait() -> Thread[Any]:
    """The current thread, about to wait: first, raise any interruption it has pending."""
    thread = current_thread()
    thread._raise_interruption()
    return thread


def spawn(fn: Callable[[*Ts], Coroutine[Any, Any, T]], *args: *Ts) -> Thread[T]:
    """Start `fn(*args)` as a new thread; it runs after the threads already runnable."""
    sched = _running
    if sched is None:
        raise RuntimeError("only threads inside run() can spawn")
    thread = Thread(sched, fn(*args))
    threads = sched._threads
    if len(threads) >= sched._sweep_at:
        threads[:] = sched._live_threads()
        sched._sweep_at = 2 * len(threads) + 1024
    threads.append(thread)
    sched._live += 1
    sched._runq.append(thread)
    return thread


def now() -> float:
    """The scheduler's clock, in seconds."""
    return _scheduler().clock.now()


async def yield_() -> None:
    """Let every other runnable thread run once."""
    thread = current_thread()
    thread._sched._runq.append(thread)
    await _PARK
    thread._raise_interruption()  # a cancel that came meanwhile: this was a wait point too


async def sleep(seconds: float) -> None:
    await sleep_until(_scheduler().clock.now() + seconds)


async def sleep_until(deadline: float) -> None:
    thread = _enter_wait()
    timer = thread._sched._timers.add(deadline, thread._wake)
    await thread._park(timer.cancel)


async def wait_readable(fd: int) -> None:
    """Wait until reading `fd` would not block (or would report an error or end of file)."""
    thread = _enter_wait()
    sched = thread._sched
    sched.watch_fd(fd, thread, sched._readers)
    await thread._park(lambda: sched.unwatch_fd(fd, sched._readers))


async def wait_writable(fd: int) -> None:
    """Wait until writing `fd` would not block (or would report an error)."""
    thread = _enter_wait()
    sched = thread._sched
    sched.watch_fd(fd, thread, sched._writers)
    await thread._park(lambda: sched.unwatch_fd(fd, sched._writers))


class CancelScope:
    """A `with` block whose waits are interrupted once cancel() has been called.

    From then on every wait inside the block raises Cancelled, until the thread leaves it; the
    scope catches its own on the way out, and the thread goes on after the block. Scopes nest:
    the outermost cancelled one interrupts first. A scope belongs to the thread that enters it;
    any thread may cancel it. TimeoutScope cancels itself at a deadline, and a nursery cancels
    the body of its `async with` with one.
    """

    __slots__ = ("_cancelled", "_outer", "_thread", "cancelled_caught")
    _reason = "cancelled"  # the message of the Cancelled it raises

    def __init__(self) -> None:
        self._cancelled = False
        self._thread: Thread[Any] | None = None  # while the thread is inside the block
        self._outer: CancelScope | None = None
        self.cancelled_caught = False  # whether the cancellation cut the block short

    @property
    def cancel_called(self) -> bool:
        return self._cancelled

    def __enter__(self) -> Self:
        thread = current_thread()
        self._thread = thread
        self._outer = thread._scope
        thread._scope = self
        return self

    def cancel(self) -> None:
        """Interrupt the block's waits from now on (at once, if the thread waits in it)."""
        if not self._cancelled:
            self._cancelled = True
            if self._thread is not None:
                self._thread._interrupt()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        thread = self._thread
        assert thread is not None
        thread._scope = self._outer
        self._thread = None  # cancelled later, the scope interrupts nothing
        if isinstance(exc, _ScopeCancelled) and exc.scope is self:
            self.cancelled_caught = True
            return True
        return False


class TimeoutScope(CancelScope):
    """A cancel scope that cancels itself once its deadline has passed.

    Made by move_on_after() and fail_after().
    """

    __slots__ = ("_fail", "_seconds", "_timer")
    _reason = "timed out"

    # These methods do CancelScope's work themselves rather than call it: every socket call
    # with a timeout makes one of these scopes, and the calls would cost it a third more.

    def __init__(self, seconds: float, fail: bool) -> None:
        self._cancelled = False
        self._thread = None
        self._outer = None
        self.cancelled_caught = False
        self._seconds = seconds
        self._fail = fail

    @property
    def timed_out(self) -> bool:
        """Whether the deadline (or a cancel()) cut the block short."""
        return self.cancelled_caught

    def __enter__(self) -> Self:
        thread = current_thread()
        self._thread = thread
        self._outer = thread._scope
        thread._scope = self
        sched = thread._sched
        self._timer = sched._timers.add(sched.clock.now() + self._seconds, self.cancel)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        self._timer.cancel()
        thread = self._thread
        assert thread is not None
        thread._scope = self._outer
        self._thread = None
        if not (isinstance(exc, _ScopeCancelled) and exc.scope is self):
            return False
        self.cancelled_caught = True
        if self._fail:
            raise TimeoutError(f"timed out after {self._seconds} s")
        return True


def move_on_after(seconds: float) -> TimeoutScope:
    """`with move_on_after(s) as scope:` stops the block's waiting after s seconds and goes on
    after the block; `scope.timed_out` tells whether it did."""
    return TimeoutScope(seconds, fail=False)


def fail_after(seconds: float) -> TimeoutScope:
    """`with fail_after(s):` raises TimeoutError if the block is still waiting after s seconds."""
    return TimeoutScope(seconds, fail=True)


class _NoTimeout:
    """The scope of a call without a timeout."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


_NO_TIMEOUT = _NoTimeout()


def fail_after_or_never(seconds: float | None) -> TimeoutScope | _NoTimeout:
    """fail_after(seconds), or a scope that never times out for None: for calls that take an
    optional timeout."""
    return _NO_TIMEOUT if seconds is None else TimeoutScope(seconds, fail=True)
