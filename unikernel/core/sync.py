"""Synchronisation between cooperative threads: Event, Queue, Semaphore and Lock.

Nothing here waits unless it has to, and waiting threads are served first come, first served.
Waiters that take turns sit in an OrderedDict: taking the first one and dropping one that was
interrupted are both O(1) (a plain dict degrades to O(n) per removal from its front).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from unikernel.core.generics import Generic, TypeVar
from unikernel.core.scheduler import _enter_wait

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

    from unikernel.core.scheduler import Thread

T = TypeVar("T")


class Event:
    """Set once; wait() returns as soon as it is set."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: dict[Thread[Any], None] = {}

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if not self._is_set:
            self._is_set = True
            waiters, self._waiters = self._waiters, {}
            for thread in waiters:
                thread._wake()

    async def wait(self) -> None:
        if not self._is_set:
            thread = _enter_wait()
            waiters = self._waiters
            waiters[thread] = None
            await thread._park(lambda: waiters.pop(thread))


class Queue(Generic[T]):
    """A FIFO channel between threads; `maxsize` 0 means unbounded.

    get() waits while the queue is empty and put() while it is full, which is how a slow
    consumer holds back a fast producer.
    """

    __slots__ = ("_getters", "_items", "_maxsize", "_putters")

    def __init__(self, maxsize: int = 0) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be 0 (unbounded) or more, not {maxsize}")
        self._maxsize = maxsize
        self._items: deque[T] = deque()
        self._getters: OrderedDict[Thread[Any], None] = OrderedDict()
        self._putters: OrderedDict[Thread[Any], T] = OrderedDict()  # and the items they bring

    def __len__(self) -> int:
        return len(self._items)

    def try_put(self, item: T) -> bool:
        """Put `item` without waiting; False if the queue is full."""
        if self._getters:
            getter, _ = self._getters.popitem(last=False)
            getter._resume(item)
        elif self._maxsize and len(self._items) >= self._maxsize:
            return False
        else:
            self._items.append(item)
        return True

    async def put(self, item: T) -> None:
        if not self.try_put(item):
            thread = _enter_wait()
            putters = self._putters
            putters[thread] = item
            await thread._park(lambda: putters.pop(thread))

    async def get(self) -> T:
        if self._items:
            item = self._items.popleft()
            if self._putters:
                putter, waiting_item = self._putters.popitem(last=False)
                self._items.append(waiting_item)
                putter._wake()
            return item
        thread = _enter_wait()
        getters = self._getters
        getters[thread] = None
        received: T = await thread._park(lambda: getters.pop(thread))
        return received


class Semaphore:
    """`value` permits; acquire() waits while there are none. Use as `async with sem:`."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"a semaphore cannot start below 0, not at {value}")
        self._value = value
        self._waiters: OrderedDict[Thread[Any], None] = OrderedDict()

    @property
    def value(self) -> int:
        """Permits available now."""
        return self._value

    async def acquire(self) -> None:
        if self._value:
            self._value -= 1
        else:
            thread = _enter_wait()
            waiters = self._waiters
            waiters[thread] = None
            await thread._park(lambda: waiters.pop(thread))

    def release(self) -> None:
        if self._waiters:
            # The permit goes straight to the first waiter, so no newcomer can overtake it.
            waiter, _ = self._waiters.popitem(last=False)
            waiter._wake()
        else:
            self._value += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class Lock(Semaphore):
    """A semaphore with one permit; releasing it while it is not held is an error."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(1)

    def locked(self) -> bool:
        return self._value == 0

    def release(self) -> None:
        if self._value:
            raise RuntimeError("release of a lock that is not held")
        super().release()
