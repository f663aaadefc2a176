"""The timer heap and the clocks."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.core.clock import FakeClock, MonotonicClock
from unikernel.core.timers import TimerHeap


def test_timers_fire_in_deadline_order_and_ties_in_insertion_order() -> None:
    heap = TimerHeap()
    fired: list[str] = []
    for name, deadline in [("c", 3.0), ("a1", 1.0), ("b", 2.0), ("a2", 1.0), ("a3", 1.0)]:
        heap.add(deadline, partial(fired.append, name))
    heap.fire_due(10.0)
    assert fired == ["a1", "a2", "a3", "b", "c"]
    assert len(heap) == 0


def test_fire_due_leaves_timers_that_are_not_due() -> None:
    heap = TimerHeap()
    fired: list[float] = []
    for deadline in (1.0, 2.0, 3.0):
        heap.add(deadline, partial(fired.append, deadline))
    heap.fire_due(2.0)
    assert fired == [1.0, 2.0]
    assert heap.next_deadline() == 3.0
    assert len(heap) == 1


def test_cancelled_timer_does_not_fire_and_cancel_is_idempotent() -> None:
    heap = TimerHeap()
    fired: list[str] = []
    first = heap.add(1.0, lambda: fired.append("first"))
    heap.add(2.0, lambda: fired.append("second"))
    first.cancel()
    first.cancel()
    assert not first.pending
    assert len(heap) == 1
    assert heap.next_deadline() == 2.0
    heap.fire_due(5.0)
    assert fired == ["second"]


def test_cancel_after_firing_is_a_no_op() -> None:
    heap = TimerHeap()
    timer = heap.add(1.0, lambda: None)
    heap.fire_due(1.0)
    timer.cancel()
    assert len(heap) == 0
    assert heap.next_deadline() is None


def test_many_cancellations_do_not_grow_the_heap() -> None:
    heap = TimerHeap()
    keep = heap.add(1e9, lambda: None)
    for i in range(100_000):
        heap.add(float(i), lambda: None).cancel()
    assert len(heap) == 1
    assert len(heap._heap) <= 2 * len(heap) + 1  # compacted, not 100 001 entries
    assert keep.pending


def test_a_callback_may_cancel_timers_while_timers_fire() -> None:
    heap = TimerHeap()
    fired: list[int] = []
    later = [heap.add(2.0 + i, partial(fired.append, i)) for i in range(10)]

    def cancel_all() -> None:
        for timer in later:
            timer.cancel()  # compacts the heap under fire_due's feet

    heap.add(1.0, cancel_all)
    heap.fire_due(100.0)
    assert fired == []
    assert len(heap) == 0


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.booleans()),  # (deadline, cancel it?)
        max_size=200,
    )
)
def test_heap_matches_a_sorted_model(entries: list[tuple[int, bool]]) -> None:
    heap = TimerHeap()
    fired: list[int] = []
    timers = [heap.add(float(d), partial(fired.append, i)) for i, (d, _) in enumerate(entries)]
    for timer, (_, cancel) in zip(timers, entries, strict=True):
        if cancel:
            timer.cancel()
    expected = sorted(
        (i for i, (_, cancel) in enumerate(entries) if not cancel), key=lambda i: (entries[i][0], i)
    )
    assert len(heap) == len(expected)
    heap.fire_due(25.0)
    heap.fire_due(50.0)
    assert fired == expected


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=5.0)
    assert clock.now() == 5.0
    clock.advance(2.5)
    assert clock.now() == 7.5
    with pytest.raises(ValueError):
        clock.advance(-1.0)


def test_fake_clock_lets_no_time_pass_while_blocked_and_skips_only_forward() -> None:
    clock = FakeClock(start=10.0)
    assert clock.block_for(25.0) == 0.0
    assert clock.now() == 10.0
    clock.skip_to(25.0)
    assert clock.now() == 25.0
    clock.skip_to(3.0)
    assert clock.now() == 25.0


def test_monotonic_clock_sanity() -> None:
    clock = MonotonicClock()
    first = clock.now()
    assert clock.now() >= first
    assert clock.block_for(first - 1.0) == 0.0
    assert 0.0 < clock.block_for(clock.now() + 60.0) <= 60.0
    clock.skip_to(clock.now() + 60.0)
    assert clock.now() - first < 30.0  # skipping does not move real time
