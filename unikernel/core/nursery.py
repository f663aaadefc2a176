"""Nurseries: threads owned by a block of code, as trio has them.

    async with open_nursery() as nursery:
        nursery.spawn(accept_clients, listener)
        nursery.spawn(log_every, 1.0)
        await serve_until_told_to_stop()

The `async with` block ends only once every thread spawned into the nursery (its children) has
finished, so no thread outlives the code that started it.

If a child or the body fails, the nursery cancels the body's waits and every other child, waits
for them to finish, then raises the first error; any later ones are added to it as notes (as
run() does with failures nobody joined), so none is lost silently. A child that ends in
Cancelled has not failed: it was told to stop.

nursery.cancel() does the same without an error: the body's waits raise Cancelled, which the
block catches on its way out, and every child is cancelled, including any spawned afterwards.
A cancellation from outside (Thread.cancel() of the thread in the block, a TimeoutScope around
it expiring) cancels the children too, and goes on once they have finished.

Children are cancelled as threads are, at their next wait, and once: a child that catches
Cancelled and waits again (a graceful close in a finally block, say) is waited for.
"""

from __future__ import annotations

from unikernel.core.generics import TypeVar
from unikernel.core.scheduler import (
    Cancelled,
    CancelScope,
    Deadlock,
    _enter_wait,
    _ScopeCancelled,
    current_thread,
    spawn,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType
    from typing import Any, TypeVarTuple

    from unikernel.core.scheduler import Thread

    Ts = TypeVarTuple("Ts")

T = TypeVar("T")


class Nursery:
    """Made by open_nursery(); see the module's docstring."""

    __slots__ = ("_body", "_children", "_errors", "_open", "_parent", "_waiter")

    def __init__(self) -> None:
        self._body = CancelScope()  # around the `async with` block's own waits
        self._children: dict[Thread[Any], None] = {}
        self._errors: list[BaseException] = []
        self._open = False
        self._parent: Thread[Any] | None = None  # the thread in the `async with` block
        self._waiter: Thread[Any] | None = None  # the parent, while it waits for a child

    async def __aenter__(self) -> Nursery:
        if self._parent is not None:
            raise RuntimeError("a nursery opens only once")
        self._parent = current_thread()
        self._body.__enter__()
        self._open = True
        return self

    def spawn(self, fn: Callable[[*Ts], Coroutine[Any, Any, T]], *args: *Ts) -> Thread[T]:
        """Start `fn(*args)` as a child, as scheduler.spawn() does. The nursery must be open:
        inside its `async with` block, or still waiting there for its children."""
        if not self._open:
            raise RuntimeError("spawn into a nursery inside its `async with` block")
        thread = spawn(fn, *args)
        thread._on_done = self._child_finished
        self._children[thread] = None
        if self._body.cancel_called:
            thread._cancel_with(_ScopeCancelled(self._body))
        return thread

    def cancel(self) -> None:
        """Cancel the body's waits and every child (and any child spawned from now on)."""
        body = self._body
        if body.cancel_called:
            return  # each child is cancelled once
        body.cancel()
        for child in list(self._children):
            child._cancel_with(_ScopeCancelled(body))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        # Leave the body's scope first: once cancelled, it would interrupt every wait below.
        ours = self._body.__exit__(exc_type, exc, traceback)
        if isinstance(exc, GeneratorExit):
            self.cancel()  # the thread is being closed (a deadlock, say): it cannot wait now
            return False
        interruption: BaseException | None = None
        if exc is not None and not ours:
            if isinstance(exc, Cancelled):
                interruption = exc  # from outside: it goes on once the children have gone
                self.cancel()
            else:
                self._fail(exc)
        interruption = await self._wait_for_children(interruption)
        self._open = False
        if self._errors:
            first, *others = self._errors
            for other in others:
                first.add_note(f"also failed in the same nursery: {other!r}")
            if first is exc:
                return False
            # Raised here, it would be chained to the body's Cancelled, which tells nothing.
            context = first.__context__
            try:
                raise first
            finally:
                first.__context__ = context
        if interruption is not None and interruption is not exc:
            raise interruption
        return ours

    def _fail(self, error: BaseException) -> None:
        if error not in self._errors:  # the body may raise again a child's error it joined
            self._errors.append(error)
        self.cancel()

    def _child_finished(self, child: Thread[Any]) -> None:
        """The scheduler calls this as soon as a child has finished."""
        del self._children[child]
        error = child._error
        if error is not None:
            child._observed = True  # the nursery raises it: run() must not report it again
            if not isinstance(error, Cancelled):
                self._fail(error)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter._wake()

    async def _wait_for_children(self, interruption: BaseException | None) -> BaseException | None:
        """Wait until every child has finished.

        An interruption (the thread cancelled, a scope around the nursery expiring, Deadlock)
        cancels the children, and the wait goes on without outer scopes, as an expired one would
        interrupt every wait. Returns the interruption to raise once the children have gone:
        `interruption`, the one the body brought, or else one that came meanwhile.
        """
        parent = self._parent
        assert parent is not None
        scopes = parent._scope
        if interruption is not None:
            parent._scope = None
        try:
            while self._children:
                try:
                    await self._wait_for_a_child()
                except (Cancelled, Deadlock) as late:
                    self.cancel()
                    parent._scope = None
                    # A scope's interruption is caught on its way up, a thread's cancellation
                    # must reach the top: when both came, the latter goes on.
                    if interruption is None or isinstance(interruption, _ScopeCancelled):
                        interruption = late
        finally:
            parent._scope = scopes
        return interruption

    async def _wait_for_a_child(self) -> None:
        parent = _enter_wait()
        self._waiter = parent
        await parent._park(self._stop_waiting)

    def _stop_waiting(self) -> None:
        self._waiter = None


def open_nursery() -> Nursery:
    """`async with open_nursery() as nursery:` a block that owns the threads it spawns with
    nursery.spawn(); see the module's docstring."""
    return Nursery()
