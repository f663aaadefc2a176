"""XenstoreClient driven through our scheduler by a fake xenstored over a socketpair."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.unikernel.xen.fake_xenstored import HEADER, READ, TX_END, FakeXenstored
from unikernel.core.clock import FakeClock
from unikernel.core.scheduler import now, run, spawn, yield_
from unikernel.drivers.xen.xenstore import (
    WatchEvent,
    XenstoreClient,
    XenstoreError,
    XenstoreRefused,
    XenstoreTimeout,
)

TREE = {
    "device/vif/0/backend": "/local/domain/0/backend/vif/7/0",
    "device/vif/0/mac": "00:16:3e:00:00:01",
    "device/vif/0/state": "1",
    "device/vif/1/mac": "00:16:3e:00:00:02",
    "/local/domain/0/backend/vif/7/0/state": "2",
}
BACKEND_STATE = "/local/domain/0/backend/vif/7/0/state"

Main = Callable[[XenstoreClient, FakeXenstored], Coroutine[Any, Any, Any]]


@contextmanager
def pair(**options: Any) -> Iterator[tuple[XenstoreClient, FakeXenstored]]:
    ours, theirs = socket.socketpair()
    client = XenstoreClient(ours.detach(), timeout=2.0)
    fake = FakeXenstored(theirs, TREE, **options)
    try:
        yield client, fake
    finally:
        client.close()
        theirs.close()


def serve(main: Main, *, real_time: bool = False, **options: Any) -> Any:
    """main(client, fake) in the scheduler, the fake serving beside it."""
    with pair(**options) as (client, fake):

        async def top() -> Any:
            spawn(fake.serve)
            return await main(client, fake)

        return run(top) if real_time else run(top, clock=FakeClock())


def test_read_write_directory_mkdir_rm() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        assert await client.read("device/vif/0/mac") == "00:16:3e:00:00:01"
        assert await client.directory("device/vif") == ["0", "1"]
        assert await client.directory("device/vif/0/mac") == []
        await client.write("device/vif/0/state", "4")
        assert fake.tree["/local/domain/7/device/vif/0/state"] == "4"
        await client.write("data/blob", b"\x01\x02")  # a value may be bytes, no NUL added
        assert fake.tree["/local/domain/7/data/blob"] == "\x01\x02"
        await client.mkdir("data/empty")
        assert await client.read("data/empty") == ""
        await client.rm("device/vif/1")
        assert await client.directory("device/vif") == ["0"]

    serve(main)


def test_refusals_name_the_request_and_the_error() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        with pytest.raises(XenstoreRefused) as refused:
            await client.read("device/vif/9/mac")
        assert refused.value.errno_name == "ENOENT"
        assert refused.value.errno == errno.ENOENT
        assert "READ 'device/vif/9/mac'" in str(refused.value)
        # The connection goes on.
        assert await client.read("device/vif/0/state") == "1"

    serve(main)


def test_concurrent_requests_answered_out_of_order_reach_their_callers() -> None:
    paths = ["device/vif/0/mac", "device/vif/1/mac", "device/vif/0/state", "device/vif/0/backend"]

    async def main(client: XenstoreClient, fake: FakeXenstored) -> list[str]:
        threads = [spawn(client.read, path) for path in paths]
        return [await thread.join() for thread in threads]

    # The fake holds its answers until all four requests are in, then sends them last first.
    assert serve(main, hold=len(paths)) == [TREE[path] for path in paths]


def test_a_watch_fires_once_on_registration_then_on_changes() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> list[WatchEvent]:
        await client.watch(BACKEND_STATE, "be")
        first = await client.wait_watch("be")
        fake.change(BACKEND_STATE, "4")
        second = await client.wait_watch("be")
        with pytest.raises(XenstoreTimeout):
            await client.wait_watch("be", timeout=1.0)  # nothing more fired
        return [first, second]

    assert serve(main) == [WatchEvent(BACKEND_STATE, "be")] * 2


def test_a_watch_event_that_overtakes_its_reply_is_kept() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> WatchEvent:
        await client.watch("device/vif/0", "fe")
        return await client.wait_watch("fe", timeout=0.5)

    assert serve(main, event_first=True) == WatchEvent("device/vif/0", "fe")


def test_watch_events_and_replies_interleaved_are_demultiplexed() -> None:
    async def watcher(client: XenstoreClient, token: str) -> list[str]:
        seen = []
        for _ in range(3):  # the registration's event, then two changes
            seen.append((await client.wait_watch(token)).path)
        return seen

    async def main(client: XenstoreClient, fake: FakeXenstored) -> tuple[Any, ...]:
        await client.watch("device/vif/0", "vif0")
        await client.watch(BACKEND_STATE, "be")
        vif0, be = spawn(watcher, client, "vif0"), spawn(watcher, client, "be")
        reads = []
        for value in ("3", "4"):
            # The write's reply and the events of both watches come in one burst.
            await client.write("device/vif/0/state", value)
            fake.change(BACKEND_STATE, value)
            reads.append(await client.read("device/vif/0/state"))
        return await vif0.join(), await be.join(), reads

    vif0, be, reads = serve(main)
    assert vif0 == ["device/vif/0", "device/vif/0/state", "device/vif/0/state"]
    assert be == [BACKEND_STATE] * 3
    assert reads == ["3", "4"]


def test_unwatch_drops_the_token() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        await client.watch("device", "t")
        await client.unwatch("device", "t")
        assert fake.watches == []
        with pytest.raises(ValueError, match="no watch has token 't'"):
            await client.wait_watch("t")
        await client.write("device/vif/0/state", "3")  # its late events are dropped quietly
        assert await client.read("device/vif/0/state") == "3"

    serve(main)


def test_transaction_retries_the_whole_body_on_eagain() -> None:
    attempts: list[int] = []

    async def main(client: XenstoreClient, fake: FakeXenstored) -> str:
        async def publish(tx: int) -> str:
            attempts.append(tx)
            state = await client.read("device/vif/0/state", tx)
            await client.write("device/vif/0/tx-ring-ref", "8", tx)
            await client.write("device/vif/0/state", "4", tx)
            return state

        return await client.transaction(publish)

    with pair(eagain_commits=2) as (client, fake):

        async def top() -> str:
            spawn(fake.serve)
            return await main(client, fake)

        assert run(top, clock=FakeClock()) == "1"
        assert len(attempts) == 3 and len(set(attempts)) == 3  # a new transaction each time
        assert fake.commits == 1
        assert fake.tree["/local/domain/7/device/vif/0/state"] == "4"
        assert fake.tree["/local/domain/7/device/vif/0/tx-ring-ref"] == "8"


def test_transaction_gives_up_after_its_attempts() -> None:
    runs = 0

    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        async def body(tx: int) -> None:
            nonlocal runs
            runs += 1
            await client.write("device/vif/0/state", "4", tx)

        with pytest.raises(XenstoreError, match=r"EAGAIN.*after 3 attempts"):
            await client.transaction(body, attempts=3)
        assert fake.tree["/local/domain/7/device/vif/0/state"] == "1"

    serve(main, eagain_commits=100)
    assert runs == 3


def test_a_failing_body_aborts_its_transaction() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        async def body(tx: int) -> None:
            await client.write("device/vif/0/state", "4", tx)
            raise RuntimeError("changed my mind")

        with pytest.raises(RuntimeError, match="changed my mind"):
            await client.transaction(body)
        # The abort was sent without waiting: the next call's reply follows its reply.
        assert await client.read("device/vif/0/state") == "1"
        assert fake.aborts == 1 and fake.commits == 0
        assert [(kind, payload) for kind, payload, _ in fake.requests if kind == TX_END] == [
            (TX_END, b"F\0")
        ]

    serve(main)


def test_an_unanswered_request_times_out_saying_what_it_awaited() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> float:
        with pytest.raises(XenstoreTimeout) as timeout:
            await client.read("device/vif/0/mac", timeout=3.0)
        assert isinstance(timeout.value, TimeoutError)
        assert "no reply to READ 'device/vif/0/mac' within 3.0 s" in str(timeout.value)
        return now()

    assert serve(main, silent=frozenset({"device/vif/0/mac"})) == 3.0


def test_the_default_timeout_applies_when_none_is_given() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> float:
        with pytest.raises(XenstoreTimeout, match=r"within 2\.0 s"):
            await client.directory("device/vif/0/mac")
        return now()

    assert serve(main, silent=frozenset({"device/vif/0/mac"})) == 2.0


def test_a_late_reply_to_an_abandoned_request_is_dropped() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> str:
        with pytest.raises(XenstoreTimeout):
            await client.read("device/vif/0/mac", timeout=1.0)
        # Its reply comes now, just before this one's: the client must not mistake the two.
        return await client.read("device/vif/1/mac")

    assert serve(main, late=frozenset({"device/vif/0/mac"})) == TREE["device/vif/1/mac"]


def test_wait_until_follows_the_value_to_an_accepted_one() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> tuple[str | None, float]:
        async def backend() -> None:
            for state in ("3", "5", "4"):
                await yield_()
                fake.change(BACKEND_STATE, state)

        spawn(backend)
        value = await client.wait_until(BACKEND_STATE, lambda v: v == "4", timeout=5.0)
        await client.read(BACKEND_STATE)  # the fake answers in order: it has seen the unwatch
        assert fake.watches == []
        return value, now()

    assert serve(main) == ("4", 0.0)


def test_wait_until_sees_a_missing_node_as_none() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> str | None:
        return await client.wait_until("device/vbd/51712/state", lambda v: v is None)

    assert serve(main) is None


def test_wait_until_times_out_with_the_path_and_last_value() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> float:
        with pytest.raises(XenstoreTimeout) as timeout:
            await client.wait_until(BACKEND_STATE, lambda v: v == "4", timeout=30.0)
        message = str(timeout.value)
        assert BACKEND_STATE in message and "30.0 s" in message and "'2'" in message
        await client.read(BACKEND_STATE)
        assert fake.watches == []
        return now()

    assert serve(main) == 30.0  # the read after it took no time


def test_wait_watch_times_out_naming_the_token_and_paths() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        await client.watch(BACKEND_STATE, "be")
        await client.wait_watch("be")
        with pytest.raises(XenstoreTimeout) as timeout:
            await client.wait_watch("be", timeout=5.0)
        assert f"watch event for token 'be' (watching '{BACKEND_STATE}') within 5.0" in str(
            timeout.value
        )

    serve(main)


def test_timeouts_in_real_time() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> float:
        start = time.monotonic()
        with pytest.raises(XenstoreTimeout):
            await client.read("device/vif/0/mac", timeout=0.05)
        return time.monotonic() - start

    elapsed = serve(main, real_time=True, silent=frozenset({"device/vif/0/mac"}))
    assert 0.04 <= elapsed < 1.0


def test_a_closed_connection_fails_every_waiter() -> None:
    async def hang_up(fake: FakeXenstored) -> None:
        await yield_()
        fake.sock.shutdown(socket.SHUT_RDWR)

    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        spawn(hang_up, fake)
        waiters = [spawn(client.read, "device/vif/0/mac") for _ in range(2)]
        for waiter in waiters:
            with pytest.raises(XenstoreError, match="closed the connection"):
                await waiter.join()
        with pytest.raises(XenstoreError, match="closed the connection"):
            await client.read("device/vif/1/mac")

    with pair(silent=frozenset({"device/vif/0/mac"})) as (client, fake):
        run(main, client, fake, clock=FakeClock())


def test_a_write_the_device_refuses_is_a_xenstore_error() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        fake.sock.close()
        with pytest.raises(XenstoreError, match=r"cannot send READ.*Broken pipe"):
            await client.read("device/vif/0/mac")

    with pair() as (client, fake):
        run(main, client, fake, clock=FakeClock())


def test_a_malformed_stream_fails_the_client_for_good() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        fake.sock.sendall(HEADER.pack(99, 1, 0, 0))
        with pytest.raises(XenstoreError, match="unknown type 99"):
            await client.read("device/vif/0/mac")
        with pytest.raises(XenstoreError, match="unknown type 99"):
            await client.read("device/vif/0/mac")

    with pair() as (client, fake):
        run(main, client, fake, clock=FakeClock())


def test_an_oversize_request_is_refused_before_it_is_sent() -> None:
    async def main(client: XenstoreClient, fake: FakeXenstored) -> None:
        with pytest.raises(XenstoreError, match="over the 4096"):
            await client.write("data/big", "x" * 5000)
        assert await client.read("device/vif/0/state") == "1"
        assert [kind for kind, _, _ in fake.requests] == [READ]

    serve(main)
