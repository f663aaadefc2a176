"""Nurseries: the block waits for its threads, failures and cancellations reach them all.

Timing goes through FakeClock, as in test_scheduler.py: every test is deterministic, and the
times it asserts are exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from unikernel.core import scheduler
from unikernel.core.clock import FakeClock
from unikernel.core.nursery import Nursery, open_nursery
from unikernel.core.scheduler import (
    Cancelled,
    Deadlock,
    fail_after,
    move_on_after,
    now,
    run,
    sleep,
    spawn,
    yield_,
)
from unikernel.core.sync import Event


def fake_run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run(main, clock=FakeClock())


def live_threads() -> int:
    return len(scheduler._scheduler()._live_threads())


async def sleeper(seconds: float, log: list[str], name: str) -> str:
    """Sleep, logging how it ended: "done", "cancelled" or "failed"."""
    try:
        await sleep(seconds)
    except Cancelled:
        log.append(f"{name} cancelled at {now()}")
        raise
    log.append(f"{name} done at {now()}")
    return name


async def fail_at(seconds: float, error: BaseException) -> None:
    await sleep(seconds)
    raise error


# Waiting


def test_the_block_ends_when_the_last_child_has_finished() -> None:
    log: list[str] = []

    async def main() -> tuple[float, list[str]]:
        async with open_nursery() as nursery:
            threads = [nursery.spawn(sleeper, s, log, f"t{s:g}") for s in (3.0, 1.0, 2.0)]
            log.append(f"body done at {now()}")
        return now(), [await thread.join() for thread in threads]

    assert fake_run(main) == (3.0, ["t3", "t1", "t2"])
    assert log == ["body done at 0.0", "t1 done at 1.0", "t2 done at 2.0", "t3 done at 3.0"]


def test_a_body_that_outlasts_its_children_ends_when_it_does() -> None:
    async def main() -> float:
        async with open_nursery() as nursery:
            nursery.spawn(sleep, 1.0)
            await sleep(5.0)
        return now()

    assert fake_run(main) == 5.0


def test_children_may_spawn_siblings_while_the_parent_waits_in_the_exit() -> None:
    log: list[str] = []

    async def main() -> float:
        async def spawner(nursery: Nursery) -> None:
            await sleep(1.0)
            nursery.spawn(sleeper, 4.0, log, "late")

        async with open_nursery() as nursery:
            nursery.spawn(spawner, nursery)
        return now()

    assert fake_run(main) == 5.0
    assert log == ["late done at 5.0"]


# Failures


def test_a_failing_child_cancels_its_siblings_and_the_body_and_its_error_propagates() -> None:
    log: list[str] = []
    error = ValueError("boom")

    async def main() -> None:
        try:
            async with open_nursery() as nursery:
                nursery.spawn(sleeper, 10.0, log, "sibling")
                nursery.spawn(fail_at, 1.0, error)
                await sleeper(100.0, log, "body")
        finally:
            log.append(f"after the block at {now()}")

    with pytest.raises(ValueError) as caught:
        fake_run(main)
    assert caught.value is error
    assert not getattr(error, "__notes__", None)  # the cancelled ones are no failures
    assert log == ["body cancelled at 1.0", "sibling cancelled at 1.0", "after the block at 1.0"]


def test_an_error_the_nursery_raised_is_not_reported_again_by_run() -> None:
    async def main() -> str:
        with pytest.raises(KeyError):
            async with open_nursery() as nursery:
                nursery.spawn(fail_at, 1.0, KeyError("child"))
        await sleep(1.0)
        return "handled"

    assert fake_run(main) == "handled"  # no ExceptionGroup of unjoined failures


def test_later_failures_are_noted_on_the_first() -> None:
    async def fails_when_cancelled() -> None:
        try:
            await sleep(10.0)
        except Cancelled:
            raise OSError("second") from None

    async def main() -> None:
        async with open_nursery() as nursery:
            nursery.spawn(fails_when_cancelled)
            nursery.spawn(fail_at, 1.0, ValueError("first"))

    with pytest.raises(ValueError, match="first") as caught:
        fake_run(main)
    assert caught.value.__notes__ == ["also failed in the same nursery: OSError('second')"]


def test_a_failing_body_cancels_the_children_and_its_error_propagates() -> None:
    log: list[str] = []

    async def main() -> None:
        async with open_nursery() as nursery:
            nursery.spawn(sleeper, 10.0, log, "a")
            nursery.spawn(sleeper, 20.0, log, "b")
            await sleep(1.0)
            raise KeyError("body")

    with pytest.raises(KeyError, match="body"):
        fake_run(main)
    assert log == ["a cancelled at 1.0", "b cancelled at 1.0"]


def test_a_child_cleaning_up_after_cancellation_is_waited_for() -> None:
    log: list[str] = []

    async def graceful() -> None:
        try:
            await sleep(100.0)
        finally:
            await sleep(5.0)  # a graceful close, say
            log.append(f"closed at {now()}")

    async def main() -> None:
        async with open_nursery() as nursery:
            nursery.spawn(graceful)
            await sleep(1.0)
            raise KeyError("body")

    with pytest.raises(KeyError):
        fake_run(main)
    assert log == ["closed at 6.0"]


# Cancellation


def test_cancel_ends_the_block_quietly_and_cancels_every_child() -> None:
    log: list[str] = []

    async def main() -> tuple[str, float]:
        async with open_nursery() as nursery:
            nursery.spawn(sleeper, 10.0, log, "a")

            async def canceller() -> None:
                await sleep(2.0)
                nursery.cancel()

            nursery.spawn(canceller)
            await sleeper(100.0, log, "body")
            log.append("the body went on")  # it must not
        return "after the block", now()

    assert fake_run(main) == ("after the block", 2.0)
    assert log == ["body cancelled at 2.0", "a cancelled at 2.0"]


def test_a_child_spawned_into_a_cancelled_nursery_is_cancelled_at_its_first_wait() -> None:
    log: list[str] = []

    async def main() -> float:
        async with open_nursery() as nursery:
            nursery.cancel()
            late = nursery.spawn(sleeper, 10.0, log, "late")
        assert late.done
        return now()

    assert fake_run(main) == 0.0
    assert log == ["late cancelled at 0.0"]


def test_the_body_may_join_a_child_the_nursery_cancelled() -> None:
    async def main() -> tuple[str, bool]:
        async with open_nursery() as nursery:
            child = nursery.spawn(sleep, 10.0)
            await yield_()  # the child waits now
            nursery.cancel()
            with contextlib.suppress(Cancelled):  # cleaning up, say
                await yield_()  # the child ends, cancelled; then this wait is interrupted
            finished = child.done
            await child.join()  # raises the child's Cancelled: the nursery knows it for its own
        return "quiet", finished

    assert fake_run(main) == ("quiet", True)


def test_an_outer_timeout_cancels_the_children_and_moves_on() -> None:
    log: list[str] = []

    async def main() -> tuple[bool, float]:
        with move_on_after(2.0) as scope:
            async with open_nursery() as nursery:
                nursery.spawn(sleeper, 10.0, log, "child")
                await sleeper(100.0, log, "body")
        return scope.timed_out, now()

    assert fake_run(main) == (True, 2.0)
    assert log == ["body cancelled at 2.0", "child cancelled at 2.0"]


def test_an_outer_timeout_reaches_a_parent_waiting_in_the_exit() -> None:
    log: list[str] = []

    async def main() -> float:
        with pytest.raises(TimeoutError), fail_after(3.0):
            async with open_nursery() as nursery:
                nursery.spawn(sleeper, 10.0, log, "child")
        return now()

    assert fake_run(main) == 3.0
    assert log == ["child cancelled at 3.0"]


def test_an_expired_outer_scope_does_not_cut_the_childrens_cleanup_short() -> None:
    log: list[str] = []

    async def graceful() -> None:
        try:
            await sleep(100.0)
        finally:
            await sleep(5.0)
            log.append(f"closed at {now()}")

    async def main() -> float:
        with move_on_after(1.0):
            async with open_nursery() as nursery:
                nursery.spawn(graceful)
        return now()

    assert fake_run(main) == 6.0
    assert log == ["closed at 6.0"]


def test_cancelling_the_parent_thread_cancels_the_children_and_propagates() -> None:
    log: list[str] = []

    async def parent() -> None:
        async with open_nursery() as nursery:
            nursery.spawn(sleeper, 10.0, log, "child")
            await sleeper(100.0, log, "body")

    async def main() -> float:
        thread = spawn(parent)
        await sleep(1.0)
        thread.cancel()
        with pytest.raises(Cancelled):
            await thread.join()
        return now()

    assert fake_run(main) == 1.0
    assert log == ["body cancelled at 1.0", "child cancelled at 1.0"]


def test_a_thread_cancelled_while_an_outer_timeout_unwinds_its_nursery_stays_cancelled() -> None:
    async def slow_to_stop() -> None:
        try:
            await sleep(100.0)
        finally:
            await sleep(5.0)

    async def parent() -> str:
        with move_on_after(1.0):
            async with open_nursery() as nursery:
                nursery.spawn(slow_to_stop)
        return "the timeout swallowed the cancellation"

    async def main() -> None:
        thread = spawn(parent)
        await sleep(2.0)  # the timeout has expired: the nursery waits for slow_to_stop
        thread.cancel()
        await thread.join()

    with pytest.raises(Cancelled):
        fake_run(main)


# Nesting


def test_an_inner_failure_cancels_the_outer_nursery_too() -> None:
    log: list[str] = []

    async def main() -> None:
        async with open_nursery() as outer:
            outer.spawn(sleeper, 10.0, log, "outer child")
            async with open_nursery() as inner:
                inner.spawn(sleeper, 10.0, log, "inner child")
                inner.spawn(fail_at, 1.0, ValueError("inner"))

    with pytest.raises(ValueError, match="inner"):
        fake_run(main)
    assert sorted(log) == ["inner child cancelled at 1.0", "outer child cancelled at 1.0"]


def test_cancelling_the_outer_nursery_reaches_the_inner_ones_children() -> None:
    log: list[str] = []

    async def main() -> float:
        async with open_nursery() as outer:

            async def canceller() -> None:
                await sleep(1.0)
                outer.cancel()

            outer.spawn(canceller)
            async with open_nursery() as inner:
                inner.spawn(sleeper, 10.0, log, "inner child")
                await sleeper(100.0, log, "inner body")
            log.append("after the inner block")  # must not run: the outer body is cancelled
        return now()

    assert fake_run(main) == 1.0
    assert log == ["inner body cancelled at 1.0", "inner child cancelled at 1.0"]


def test_a_nursery_in_a_child_fails_through_its_parent_nursery() -> None:
    async def worker() -> None:
        async with open_nursery() as nursery:
            nursery.spawn(fail_at, 2.0, OSError("deep"))

    async def main() -> float:
        try:
            async with open_nursery() as nursery:
                nursery.spawn(worker)
        except OSError:
            return now()
        return -1.0

    assert fake_run(main) == 2.0


# Misuse and leaks


def test_spawning_outside_the_block_raises() -> None:
    async def main() -> None:
        nursery = open_nursery()
        with pytest.raises(RuntimeError, match="inside its `async with`"):
            nursery.spawn(sleep, 1.0)
        async with nursery:
            pass
        with pytest.raises(RuntimeError, match="inside its `async with`"):
            nursery.spawn(sleep, 1.0)
        with pytest.raises(RuntimeError, match="only once"):
            async with nursery:
                pass

    fake_run(main)


def test_no_thread_outlives_its_nursery() -> None:
    async def main() -> list[int]:
        counts = [live_threads()]
        async with open_nursery() as nursery:
            for n in range(50):
                nursery.spawn(sleep, float(n % 7))
            counts.append(live_threads())
        counts.append(live_threads())
        with pytest.raises(ValueError):
            async with open_nursery() as nursery:
                for _ in range(20):
                    nursery.spawn(sleep, 100.0)
                nursery.spawn(fail_at, 1.0, ValueError("x"))
        counts.append(live_threads())
        with move_on_after(1.0):
            async with open_nursery() as nursery:
                for _ in range(20):
                    nursery.spawn(sleep, 100.0)
        counts.append(live_threads())
        return counts

    assert fake_run(main) == [1, 51, 1, 1, 1]  # main, and main with its 50 children


def test_a_deadlock_inside_a_nursery_unwinds_the_children_and_is_raised() -> None:
    log: list[str] = []

    async def stuck() -> None:
        try:
            await Event().wait()
        finally:
            log.append("stuck unwound")

    async def main() -> None:
        try:
            async with open_nursery() as nursery:
                nursery.spawn(stuck)
        finally:
            log.append(f"after the block, {live_threads()} thread alive")

    with pytest.raises(Deadlock):
        fake_run(main)
    assert log == ["stuck unwound", "after the block, 1 thread alive"]
