"""Timers: callbacks due at a deadline, kept in a binary heap.

Heap entries are (deadline, sequence number, timer) tuples, so heapq compares them in C and equal
deadlines fire in the order they were added. Cancelling only marks a timer; the heap drops marked
entries when they reach the top, and is rebuilt without them once they are more than half of it,
so that many cancellations (timeouts that did not expire) cannot make it grow without bound.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Timer:
    """A pending call; `cancel()` it if it is no longer wanted."""

    __slots__ = ("_callback", "_heap", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], object], heap: TimerHeap) -> None:
        self.deadline = deadline
        self._callback: Callable[[], object] | None = callback
        self._heap = heap

    @property
    def pending(self) -> bool:
        return self._callback is not None

    def cancel(self) -> None:
        """Stop the timer from firing; a no-op once it has fired or been cancelled."""
        if self._callback is not None:
            self._callback = None
            self._heap._forget_one()


class TimerHeap:
    __slots__ = ("_cancelled", "_heap", "_sequence")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = 0
        self._cancelled = 0  # cancelled timers still in the heap

    def __len__(self) -> int:
        """The number of pending timers."""
        return len(self._heap) - self._cancelled

    def add(self, deadline: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(deadline, callback, self)
        heappush(self._heap, (deadline, self._sequence, timer))
        self._sequence += 1
        return timer

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2]._callback is None:
            heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def fire_due(self, now: float) -> None:
        """Call, in deadline order, every pending timer whose deadline is not after `now`."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            timer = heappop(heap)[2]
            callback = timer._callback
            if callback is None:
                self._cancelled -= 1
            else:
                timer._callback = None
                callback()

    def _forget_one(self) -> None:
        self._cancelled += 1
        if self._cancelled > len(self._heap) // 2:
            # In place: fire_due() may be iterating over this very list.
            self._heap[:] = [entry for entry in self._heap if entry[2]._callback is not None]
            heapify(self._heap)
            self._cancelled = 0
