"""Event, Queue, Semaphore and Lock between cooperative threads."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from unikernel.core.clock import FakeClock
from unikernel.core.scheduler import Cancelled, now, run, sleep, spawn, yield_
from unikernel.core.sync import Event, Lock, Queue, Semaphore


def fake_run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run(main, clock=FakeClock())


def test_event_wakes_every_waiter_in_the_order_they_came() -> None:
    woke: list[int] = []

    async def waiter(event: Event, index: int) -> None:
        await event.wait()
        woke.append(index)

    async def main() -> None:
        event = Event()
        threads = [spawn(waiter, event, i) for i in range(5)]
        await sleep(1.0)
        assert woke == [] and not event.is_set()
        event.set()
        assert event.is_set()
        for thread in threads:
            await thread.join()

    fake_run(main)
    assert woke == [0, 1, 2, 3, 4]


def test_waiting_on_a_set_event_returns_at_once() -> None:
    async def main() -> float:
        event = Event()
        event.set()
        event.set()
        await event.wait()
        return now()

    assert fake_run(main) == 0.0


def test_queue_is_fifo_and_get_waits_while_it_is_empty() -> None:
    async def producer(queue: Queue[int]) -> None:
        for i in range(5):
            await sleep(1.0)
            await queue.put(i)

    async def main() -> list[tuple[float, int]]:
        queue: Queue[int] = Queue()
        spawn(producer, queue)
        received = []
        for _ in range(5):
            item = await queue.get()
            received.append((now(), item))
        return received

    assert fake_run(main) == [(1.0, 0), (2.0, 1), (3.0, 2), (4.0, 3), (5.0, 4)]


def test_waiting_getters_are_served_first_come_first_served() -> None:
    async def main() -> list[str]:
        queue: Queue[str] = Queue()
        getters = [spawn(queue.get) for _ in range(3)]
        await yield_()
        for item in "abc":
            await queue.put(item)
        return [await getter.join() for getter in getters]

    assert fake_run(main) == ["a", "b", "c"]


def test_a_bounded_queue_holds_back_a_fast_producer() -> None:
    log: list[tuple[float, str, int]] = []

    async def producer(queue: Queue[int]) -> None:
        for i in range(6):
            await queue.put(i)
            log.append((now(), "put", i))
            assert len(queue) <= 2

    async def main() -> list[int]:
        queue: Queue[int] = Queue(maxsize=2)
        spawn(producer, queue)
        received = []
        for _ in range(6):
            await sleep(1.0)  # a slow consumer
            received.append(await queue.get())
        return received

    assert fake_run(main) == [0, 1, 2, 3, 4, 5]
    # Two items fit at once; after that each put completes only when the consumer takes one.
    assert [t for t, _, _ in log] == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]


def test_try_put_refuses_when_full() -> None:
    async def main() -> tuple[bool, bool, int]:
        queue: Queue[str] = Queue(maxsize=1)
        first = queue.try_put("a")
        second = queue.try_put("b")
        return first, second, len(queue)

    assert fake_run(main) == (True, False, 1)


def test_a_cancelled_put_leaves_its_item_out() -> None:
    async def main() -> list[str]:
        queue: Queue[str] = Queue(maxsize=1)
        await queue.put("kept")
        putter = spawn(queue.put, "dropped")
        await yield_()
        putter.cancel()
        with pytest.raises(Cancelled):
            await putter.join()
        first = await queue.get()
        await queue.put("after")
        return [first, await queue.get()]

    assert fake_run(main) == ["kept", "after"]


def test_queue_rejects_a_negative_size() -> None:
    with pytest.raises(ValueError):
        Queue(maxsize=-1)


def test_semaphore_bounds_concurrency() -> None:
    running = 0
    peak = 0

    async def worker(semaphore: Semaphore) -> None:
        nonlocal running, peak
        async with semaphore:
            running += 1
            peak = max(peak, running)
            await sleep(1.0)
            running -= 1

    async def main() -> float:
        semaphore = Semaphore(3)
        threads = [spawn(worker, semaphore) for _ in range(10)]
        for thread in threads:
            await thread.join()
        assert semaphore.value == 3
        return now()

    assert fake_run(main) == 4.0  # ten one-second jobs, three at a time
    assert peak == 3


def test_a_released_permit_goes_to_the_first_waiter_not_a_newcomer() -> None:
    order: list[str] = []

    async def take(semaphore: Semaphore, name: str) -> None:
        await semaphore.acquire()
        order.append(name)

    async def main() -> None:
        semaphore = Semaphore(0)
        waiter = spawn(take, semaphore, "waiter")
        await yield_()
        semaphore.release()
        newcomer = spawn(take, semaphore, "newcomer")
        await yield_()
        semaphore.release()
        await waiter.join()
        await newcomer.join()

    fake_run(main)
    assert order == ["waiter", "newcomer"]


def test_lock_excludes_and_rejects_a_release_when_unlocked() -> None:
    log: list[str] = []

    async def critical(lock: Lock, name: str) -> None:
        async with lock:
            log.append(f"{name} in")
            await sleep(1.0)
            log.append(f"{name} out")

    async def main() -> None:
        lock = Lock()
        threads = [spawn(critical, lock, name) for name in "ab"]
        await yield_()
        assert lock.locked()
        for thread in threads:
            await thread.join()
        assert not lock.locked()
        with pytest.raises(RuntimeError):
            lock.release()

    fake_run(main)
    assert log == ["a in", "a out", "b in", "b out"]


def test_semaphore_rejects_a_negative_start() -> None:
    with pytest.raises(ValueError):
        Semaphore(-1)
