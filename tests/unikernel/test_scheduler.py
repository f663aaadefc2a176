"""The cooperative scheduler: ordering, joins and errors, cancellation, timeouts, deadlocks, fds.

Timing goes through FakeClock, so every test is deterministic and long sleeps take no time.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest

from unikernel.core import scheduler
from unikernel.core.clock import FakeClock
from unikernel.core.scheduler import (
    BusyError,
    Cancelled,
    Deadlock,
    fail_after,
    move_on_after,
    now,
    run,
    sleep,
    sleep_until,
    spawn,
    wait_readable,
    wait_writable,
    yield_,
)
from unikernel.core.sync import Event, Queue


def fake_run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run(main, clock=FakeClock())


async def forever() -> None:
    await Event().wait()


# Ordering


def test_runnable_threads_take_turns_in_fifo_order() -> None:
    log: list[str] = []

    async def worker(name: str) -> None:
        for _ in range(3):
            log.append(name)
            await yield_()

    async def main() -> None:
        threads = [spawn(worker, name) for name in "abc"]
        for thread in threads:
            await thread.join()

    fake_run(main)
    assert log == list("abcabcabc")


def test_a_spawned_thread_waits_until_its_parent_yields() -> None:
    log: list[str] = []

    async def child() -> None:
        log.append("child")

    async def main() -> None:
        spawn(child)
        log.append("parent before yield")
        await yield_()
        log.append("parent after yield")

    fake_run(main)
    assert log == ["parent before yield", "child", "parent after yield"]


def test_sleepers_wake_in_deadline_order_at_their_deadlines() -> None:
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await sleep(seconds)
        woke.append((name, now()))

    async def main() -> None:
        threads = [
            spawn(sleeper, name, s) for name, s in [("three", 3.0), ("one", 1.0), ("two", 2.0)]
        ]
        for thread in threads:
            await thread.join()

    fake_run(main)
    assert woke == [("one", 1.0), ("two", 2.0), ("three", 3.0)]


def test_equal_deadlines_wake_in_the_order_they_were_set() -> None:
    woke: list[int] = []

    async def sleeper(index: int) -> None:
        await sleep_until(7.0)
        woke.append(index)

    async def main() -> None:
        threads = [spawn(sleeper, i) for i in range(20)]
        for thread in threads:
            await thread.join()

    fake_run(main)
    assert woke == list(range(20))


def test_an_hour_of_sleep_takes_no_time_with_the_fake_clock() -> None:
    async def main() -> float:
        await sleep(3600.0)
        return now()

    assert fake_run(main) == 3600.0


def test_a_hundred_thousand_timers_fire_in_order() -> None:
    rng = random.Random(1234)
    deadlines = [float(rng.randrange(1000)) for _ in range(100_000)]
    woke: list[tuple[float, int]] = []

    async def sleeper(index: int) -> None:
        await sleep_until(deadlines[index])
        woke.append((now(), index))

    async def main() -> None:
        threads = [spawn(sleeper, i) for i in range(len(deadlines))]
        for thread in threads:
            await thread.join()

    fake_run(main)
    assert woke == sorted((deadline, i) for i, deadline in enumerate(deadlines))


def test_real_clock_sleep_sanity() -> None:
    async def main() -> float:
        start = now()
        await sleep(0.01)
        return now() - start

    elapsed = run(main)
    assert 0.01 <= elapsed < 5.0


# Results and errors


def test_run_returns_mains_result_and_join_returns_a_threads() -> None:
    async def square(x: int) -> int:
        await sleep(x)
        return x * x

    async def main() -> list[int]:
        threads = [spawn(square, x) for x in (3, 1, 2)]
        return [await thread.join() for thread in threads]

    assert fake_run(main) == [9, 1, 4]


def test_run_passes_arguments_to_main() -> None:
    async def main(a: int, b: str) -> str:
        return b * a

    assert run(main, 3, "x", clock=FakeClock()) == "xxx"


def test_every_joiner_gets_the_result_and_joining_again_works() -> None:
    async def worker() -> str:
        await sleep(1.0)
        return "done"

    async def main() -> list[str]:
        thread = spawn(worker)
        joiners = [spawn(thread.join) for _ in range(3)]
        results = [await joiner.join() for joiner in joiners]
        return [*results, await thread.join()]

    assert fake_run(main) == ["done"] * 4


def test_an_exception_in_a_thread_is_raised_at_join() -> None:
    error = ValueError("boom")

    async def worker() -> None:
        await sleep(1.0)
        raise error

    async def main() -> BaseException:
        thread = spawn(worker)
        with pytest.raises(ValueError) as caught:
            await thread.join()
        assert thread.done
        return caught.value

    assert fake_run(main) is error


def test_run_raises_mains_exception() -> None:
    async def main() -> None:
        await sleep(1.0)
        raise KeyError("main")

    with pytest.raises(KeyError, match="main"):
        fake_run(main)


def test_a_failure_nobody_joins_is_raised_by_run() -> None:
    async def worker() -> None:
        raise ValueError("unjoined")

    async def main() -> str:
        spawn(worker)
        await sleep(1.0)
        return "main is fine"

    with pytest.raises(ExceptionGroup) as caught:
        fake_run(main)
    [error] = caught.value.exceptions
    assert isinstance(error, ValueError)
    assert str(error) == "unjoined"


def test_a_failure_nobody_joins_is_noted_on_mains_own_exception() -> None:
    async def worker() -> None:
        raise ValueError("unjoined")

    async def main() -> None:
        spawn(worker)
        await sleep(1.0)
        raise KeyError("main")

    with pytest.raises(KeyError) as caught:
        fake_run(main)
    assert any("unjoined" in note for note in caught.value.__notes__)


def test_a_joined_failure_is_not_reported_again() -> None:
    async def worker() -> None:
        raise ValueError("seen")

    async def main() -> str:
        thread = spawn(worker)
        await sleep(1.0)  # the thread fails before anyone joins it
        with pytest.raises(ValueError):
            await thread.join()
        return "handled"

    assert fake_run(main) == "handled"


def test_a_thread_cannot_join_itself() -> None:
    async def main() -> None:
        await scheduler.current_thread().join()

    with pytest.raises(RuntimeError, match="itself"):
        fake_run(main)


def test_scheduler_calls_outside_run_fail_clearly() -> None:
    async def main() -> None:
        pass

    with pytest.raises(RuntimeError, match="inside run"):
        spawn(main)
    with pytest.raises(RuntimeError, match="inside run"):
        now()


def test_run_cannot_be_nested_and_is_reusable_after_a_failure() -> None:
    async def inner() -> None:
        pass

    async def main() -> None:
        run(inner)

    with pytest.raises(RuntimeError, match="already running"):
        fake_run(main)
    assert fake_run(inner) is None


class _Foreign:
    """An awaitable from some other event loop."""

    def __await__(self) -> Generator[str, None, None]:
        yield "something else"


def test_awaiting_a_foreign_awaitable_raises_type_error_in_the_thread() -> None:
    async def main() -> None:
        await _Foreign()

    with pytest.raises(TypeError, match="not ours"):
        fake_run(main)


# Cancellation


def test_cancel_at_sleep_runs_finally_blocks_and_join_raises_cancelled() -> None:
    log: list[str] = []

    async def worker() -> None:
        try:
            await sleep(100.0)
            log.append("slept")
        finally:
            log.append("finally")

    async def main() -> float:
        thread = spawn(worker)
        await sleep(1.0)
        thread.cancel()
        with pytest.raises(Cancelled):
            await thread.join()
        return now()

    assert fake_run(main) == 1.0  # the cancelled sleep's timer did not keep the clock going
    assert log == ["finally"]


def test_cancel_at_event_wait() -> None:
    log: list[str] = []

    async def worker(event: Event) -> None:
        try:
            await event.wait()
        except Cancelled:
            log.append("cancelled")
            raise

    async def main() -> None:
        event = Event()
        thread = spawn(worker, event)
        await yield_()
        thread.cancel()
        with pytest.raises(Cancelled):
            await thread.join()
        event.set()  # no thread left waiting: nothing to wake
        await event.wait()

    fake_run(main)
    assert log == ["cancelled"]


def test_cancel_at_queue_get_loses_no_item() -> None:
    async def main() -> int:
        queue: Queue[int] = Queue()
        victim = spawn(queue.get)
        await yield_()
        victim.cancel()
        with pytest.raises(Cancelled):
            await victim.join()
        await queue.put(42)
        return await spawn(queue.get).join()

    assert fake_run(main) == 42


def test_cancel_at_fd_wait_unregisters_the_fd() -> None:
    read_end, write_end = os.pipe()

    async def main() -> bytes:
        victim = spawn(wait_readable, read_end)
        await yield_()
        victim.cancel()
        with pytest.raises(Cancelled):
            await victim.join()
        # The fd is free: another thread may wait on it, and is woken by the data.
        reader = spawn(wait_readable, read_end)
        await yield_()
        os.write(write_end, b"ping")
        await reader.join()
        return os.read(read_end, 4)

    try:
        assert fake_run(main) == b"ping"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_cancelling_a_finished_thread_is_a_no_op() -> None:
    async def worker() -> str:
        return "result"

    async def main() -> str:
        thread = spawn(worker)
        await thread.join()
        thread.cancel()
        return await thread.join()

    assert fake_run(main) == "result"


def test_a_thread_cancelled_before_it_starts_gets_cancelled_at_its_first_wait() -> None:
    log: list[str] = []

    async def worker() -> None:
        log.append("started")
        await sleep(1.0)
        log.append("slept")

    async def main() -> None:
        thread = spawn(worker)
        thread.cancel()
        with pytest.raises(Cancelled):
            await thread.join()

    fake_run(main)
    assert log == ["started"]


def test_a_wake_up_already_given_is_kept_and_cancel_comes_at_the_next_wait() -> None:
    log: list[object] = []

    async def worker(queue: Queue[str]) -> None:
        log.append(await queue.get())
        try:
            await sleep(10.0)
        except Cancelled:
            log.append("cancelled at the next wait")
            raise

    async def main() -> None:
        queue: Queue[str] = Queue()
        thread = spawn(worker, queue)
        await yield_()
        await queue.put("item")  # worker is now runnable, holding the item
        thread.cancel()
        with pytest.raises(Cancelled):
            await thread.join()

    fake_run(main)
    assert log == ["item", "cancelled at the next wait"]


def test_a_thread_that_only_yields_is_cancelled_at_a_yield() -> None:
    yields = 0

    async def spinner() -> None:
        nonlocal yields
        for _ in range(1000):
            await yield_()
            yields += 1

    async def main() -> None:
        thread = spawn(spinner)
        await yield_()
        thread.cancel()
        with pytest.raises(Cancelled):
            await thread.join()

    fake_run(main)
    assert yields < 5


def test_cancelled_is_not_swallowed_by_except_exception() -> None:
    async def worker() -> str:
        try:
            await sleep(10.0)
        except Exception:
            return "swallowed"
        return "not cancelled"

    async def main() -> None:
        thread = spawn(worker)
        await yield_()
        thread.cancel()
        await thread.join()

    with pytest.raises(Cancelled):
        fake_run(main)


def test_a_cancelled_thread_may_still_wait_in_its_finally_block() -> None:
    log: list[float] = []

    async def worker() -> None:
        try:
            await sleep(100.0)
        finally:
            await sleep(5.0)  # a graceful close, say
            log.append(now())

    async def main() -> None:
        thread = spawn(worker)
        await sleep(1.0)
        thread.cancel()
        with pytest.raises(Cancelled):
            await thread.join()

    fake_run(main)
    assert log == [6.0]


def test_threads_left_when_main_returns_are_cancelled_and_unwind() -> None:
    log: list[str] = []

    async def background() -> None:
        try:
            await sleep(1e9)
        finally:
            log.append("background unwound")

    async def main() -> str:
        spawn(background)
        await yield_()
        return "main done"

    assert fake_run(main) == "main done"
    assert log == ["background unwound"]


# Timeouts


def test_move_on_after_abandons_the_wait_and_goes_on() -> None:
    async def main() -> tuple[bool, float]:
        with move_on_after(2.0) as scope:
            await sleep(10.0)
        return scope.timed_out, now()

    assert fake_run(main) == (True, 2.0)


def test_a_scope_that_did_not_expire_leaves_no_timer_behind() -> None:
    async def main() -> tuple[bool, int, float]:
        with move_on_after(2.0) as scope:
            await sleep(1.0)
        timers_left = len(scheduler._scheduler()._timers)
        await sleep(5.0)  # past the scope's deadline: nothing may interrupt this
        return scope.timed_out, timers_left, now()

    assert fake_run(main) == (False, 0, 6.0)


def test_fail_after_raises_timeout_error_and_runs_finally_blocks() -> None:
    log: list[str] = []

    async def main() -> float:
        with pytest.raises(TimeoutError), fail_after(3.0):
            try:
                await Event().wait()
            finally:
                log.append("finally")
        return now()

    assert fake_run(main) == 3.0
    assert log == ["finally"]


def test_a_timed_out_get_takes_no_item() -> None:
    async def main() -> int:
        queue: Queue[int] = Queue()
        with move_on_after(1.0):
            await queue.get()
        queue.try_put(7)
        return await queue.get()

    assert fake_run(main) == 7


def test_nested_scopes_the_earlier_deadline_wins() -> None:
    async def main() -> list[tuple[str, bool, bool, float]]:
        results = []
        with move_on_after(5.0) as outer, move_on_after(1.0) as inner:
            await sleep(10.0)
        results.append(("inner first", outer.timed_out, inner.timed_out, now()))
        with move_on_after(1.0) as outer, move_on_after(5.0) as inner:
            await sleep(10.0)
        results.append(("outer first", outer.timed_out, inner.timed_out, now()))
        return results

    assert fake_run(main) == [
        ("inner first", False, True, 1.0),
        ("outer first", True, False, 2.0),
    ]


def test_when_nested_scopes_have_both_expired_the_outer_one_interrupts() -> None:
    clock = FakeClock()

    async def main() -> tuple[bool, bool]:
        with move_on_after(2.0) as outer, move_on_after(1.0) as inner:
            clock.advance(5.0)  # both deadlines pass while this thread is busy
            await yield_()
        return outer.timed_out, inner.timed_out

    assert run(main, clock=clock) == (True, False)


def test_an_expired_scope_interrupts_every_wait_inside_it() -> None:
    async def main() -> tuple[int, float]:
        interruptions = 0
        with move_on_after(1.0):
            for _ in range(3):
                try:
                    await sleep(10.0)
                except Cancelled:
                    interruptions += 1
            await sleep(10.0)
        return interruptions, now()

    assert fake_run(main) == (3, 1.0)


def test_cancel_passes_through_a_timeout_scope() -> None:
    async def worker() -> None:
        with move_on_after(100.0):
            await sleep(1000.0)

    async def main() -> float:
        thread = spawn(worker)
        await sleep(1.0)
        thread.cancel()
        with pytest.raises(Cancelled):
            await thread.join()
        return now()

    assert fake_run(main) == 1.0


def test_fail_after_with_a_wait_that_finishes_in_time() -> None:
    async def main() -> str:
        with fail_after(5.0):
            await sleep(4.0)
        return "in time"

    assert fake_run(main) == "in time"


# Deadlock


def test_deadlock_is_raised_where_main_waits_and_threads_unwind() -> None:
    log: list[str] = []

    async def stuck() -> None:
        try:
            await Event().wait()
        finally:
            log.append("stuck unwound")

    async def main() -> None:
        thread = spawn(stuck)
        try:
            await thread.join()
        finally:
            log.append("main unwound")

    with pytest.raises(Deadlock, match="waits forever"):
        fake_run(main)
    assert log == ["main unwound", "stuck unwound"]


def test_a_main_that_ignores_deadlock_still_ends() -> None:
    async def main() -> None:
        event = Event()
        try:
            await event.wait()
        except Deadlock:
            await event.wait()  # stuck again: there is no third chance

    with pytest.raises(Deadlock):
        fake_run(main)


def test_a_thread_that_refuses_to_die_after_main_is_reported() -> None:
    async def stubborn() -> None:
        try:
            await sleep(1e9)
        except Cancelled:
            await Event().wait()

    async def main() -> None:
        spawn(stubborn)
        await yield_()

    with pytest.raises(ExceptionGroup) as caught:
        fake_run(main)
    assert [type(error) for error in caught.value.exceptions] == [Deadlock]


def test_a_thread_waiting_on_an_fd_is_not_a_deadlock() -> None:
    read_end, write_end = os.pipe()

    async def writer() -> None:
        await sleep(1.0)
        os.write(write_end, b"x")

    async def main() -> bytes:
        spawn(writer)
        await wait_readable(read_end)
        return os.read(read_end, 1)

    try:
        assert run(main) == b"x"  # the real clock: wait_readable blocks in epoll
    finally:
        os.close(read_end)
        os.close(write_end)


# File descriptors


def test_pipe_reader_wakes_when_the_writer_writes() -> None:
    read_end, write_end = os.pipe()

    async def writer() -> None:
        for chunk in (b"one", b"two"):
            await sleep(1.0)
            await wait_writable(write_end)
            os.write(write_end, chunk)
        os.close(write_end)

    async def main() -> list[tuple[float, bytes]]:
        spawn(writer)
        received = []
        while True:
            await wait_readable(read_end)
            data = os.read(read_end, 100)
            if not data:
                return received
            received.append((now(), data))

    try:
        assert fake_run(main) == [(1.0, b"one"), (2.0, b"two")]
    finally:
        os.close(read_end)


def test_socketpair_ping_pong() -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)

    async def receive(sock: socket.socket) -> bytes:
        await wait_readable(sock.fileno())
        return sock.recv(100)

    async def send(sock: socket.socket, data: bytes) -> None:
        await wait_writable(sock.fileno())
        sock.sendall(data)

    async def echo() -> None:
        for _ in range(100):
            await send(right, await receive(right))

    async def main() -> list[bytes]:
        spawn(echo)
        replies = []
        for i in range(100):
            await send(left, b"%d" % i)
            replies.append(await receive(left))
        return replies

    try:
        assert fake_run(main) == [b"%d" % i for i in range(100)]
    finally:
        left.close()
        right.close()


def test_reader_and_writer_may_wait_on_the_same_socket() -> None:
    left, right = socket.socketpair()

    async def main() -> list[str]:
        log = []

        async def read() -> None:
            await wait_readable(left.fileno())
            log.append("readable")

        reader = spawn(read)
        await yield_()
        await wait_writable(left.fileno())
        log.append("writable")
        right.send(b"x")
        await reader.join()
        return log

    try:
        assert fake_run(main) == ["writable", "readable"]
    finally:
        left.close()
        right.close()


def test_two_readers_on_one_fd_is_an_error() -> None:
    read_end, write_end = os.pipe()

    async def main() -> None:
        first = spawn(wait_readable, read_end)
        await yield_()
        try:
            with pytest.raises(BusyError):
                await wait_readable(read_end)
        finally:
            first.cancel()

    try:
        fake_run(main)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_waiting_on_an_fd_epoll_refuses_raises_in_the_thread() -> None:
    async def main() -> None:
        with tempfile.TemporaryFile() as regular_file, pytest.raises(PermissionError):
            await wait_readable(regular_file.fileno())
        await sleep(1.0)  # the scheduler carries on undisturbed

    fake_run(main)


def test_the_reader_of_a_closed_pipe_wakes_at_end_of_file() -> None:
    read_end, write_end = os.pipe()

    async def closer() -> None:
        await sleep(1.0)
        os.close(write_end)

    async def main() -> bytes:
        spawn(closer)
        await wait_readable(read_end)
        return os.read(read_end, 1)

    try:
        assert fake_run(main) == b""
    finally:
        os.close(read_end)
