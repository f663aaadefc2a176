"""Microbenchmarks of the scheduler's hot paths.

Run them with `pytest tests/unikernel/test_scheduler_bench.py --benchmark-enable`; by default
(--benchmark-disable) each body runs once, as a test.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

from unikernel.core.clock import FakeClock
from unikernel.core.scheduler import run, sleep_until, spawn, yield_
from unikernel.core.sync import Queue
from unikernel.core.timers import TimerHeap

ROUNDS = 1000


def _ping_pong_yield() -> int:
    switches = 0

    async def player() -> None:
        nonlocal switches
        for _ in range(ROUNDS):
            await yield_()
            switches += 1

    async def main() -> None:
        first, second = spawn(player), spawn(player)
        await first.join()
        await second.join()

    run(main, clock=FakeClock())
    return switches


def test_thread_switch_by_yield(benchmark: Any) -> None:
    assert benchmark(_ping_pong_yield) == 2 * ROUNDS


def _ping_pong_queues() -> int:
    async def echo(inbox: Queue[int], outbox: Queue[int]) -> None:
        for _ in range(ROUNDS):
            await outbox.put(await inbox.get())

    async def main() -> int:
        there: Queue[int] = Queue(maxsize=1)
        back: Queue[int] = Queue(maxsize=1)
        spawn(echo, there, back)
        total = 0
        for i in range(ROUNDS):
            await there.put(i)
            total += await back.get()
        return total

    result: int = run(main, clock=FakeClock())
    return result


def test_thread_switch_by_queue(benchmark: Any) -> None:
    assert benchmark(_ping_pong_queues) == sum(range(ROUNDS))


def _spawn_and_join() -> int:
    async def work(i: int) -> int:
        return i

    async def main() -> int:
        threads = [spawn(work, i) for i in range(ROUNDS)]
        return sum([await thread.join() for thread in threads])

    result: int = run(main, clock=FakeClock())
    return result


def test_spawn_and_join(benchmark: Any) -> None:
    assert benchmark(_spawn_and_join) == sum(range(ROUNDS))


DEADLINES = [random.Random(7).random() * 100 for _ in range(ROUNDS)]


def _insert_timers() -> TimerHeap:
    heap = TimerHeap()
    for deadline in DEADLINES:
        heap.add(deadline, int)
    return heap


def test_timer_insert(benchmark: Any) -> None:
    assert len(benchmark(_insert_timers)) == ROUNDS


def _insert_and_fire_timers() -> list[float]:
    heap = TimerHeap()
    fired: list[float] = []
    for deadline in DEADLINES:
        heap.add(deadline, partial(fired.append, deadline))
    heap.fire_due(100.0)
    return fired


def test_timer_insert_and_fire(benchmark: Any) -> None:
    assert benchmark(_insert_and_fire_timers) == sorted(DEADLINES)


def _sleepers() -> int:
    async def sleeper(deadline: float) -> float:
        await sleep_until(deadline)
        return deadline

    async def main() -> int:
        threads = [spawn(sleeper, deadline) for deadline in DEADLINES]
        return len([await thread.join() for thread in threads])

    result: int = run(main, clock=FakeClock())
    return result


def test_sleeping_threads_through_the_scheduler(benchmark: Any) -> None:
    assert benchmark(_sleepers) == ROUNDS
