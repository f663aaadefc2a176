"""Where the scheduler's time comes from: the monotonic clock, or a fake one for tests.

Time is float seconds everywhere, the unit of sleep() and of time.monotonic().
"""

import time


class Clock:
    """What the scheduler needs from a clock.

    When nothing can run before the next timer's deadline, the scheduler blocks in the poller
    for block_for(deadline) seconds; if no I/O woke it, it calls skip_to(deadline).
    """

    def now(self) -> float:
        raise NotImplementedError

    def block_for(self, deadline: float) -> float:
        raise NotImplementedError

    def skip_to(self, deadline: float) -> None:
        raise NotImplementedError


class MonotonicClock(Clock):
    """Real time, immune to the wall clock being set."""

    def now(self) -> float:
        return time.monotonic()

    def block_for(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    def skip_to(self, deadline: float) -> None:
        pass  # blocking took the time


class FakeClock(Clock):
    """Time that moves only when told to, or when the scheduler has nothing else to do.

    Then it jumps straight to the next deadline: a test that sleeps for hours finishes at
    once, and always in the same order. I/O that is ready comes first, as it would in real time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time cannot go backwards ({seconds} s)")
        self._now += seconds

    def block_for(self, deadline: float) -> float:
        return 0.0  # fake time does not pass while we block

    def skip_to(self, deadline: float) -> None:
        self._now = max(self._now, deadline)
