"""The microblog's model: users and sessions, follows, posts and timelines, over an in-memory
store and over the log store on a disk file (reopened as after a reboot), with concurrent
writers, and against a reference model over random sequences of operations."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from unikernel.apps.microblog import model
from unikernel.apps.microblog.model import (
    Conflict,
    Invalid,
    Microblog,
    NotFound,
    Post,
    Unauthorized,
)
from unikernel.block.log_store import LogStore
from unikernel.core.scheduler import run, spawn, yield_
from unikernel.drivers.rawdisk import RawDisk


class MemoryStore:
    """A store in a dict; every call is a switch point, as the log store's are."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.puts = 0
        self.gets = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        await yield_()
        return self.data.get(key.encode())

    async def put(self, key: str, value: bytes) -> None:
        self.puts += 1
        await yield_()
        self.data[key.encode()] = bytes(value)

    async def delete(self, key: str) -> None:
        await yield_()
        self.data.pop(key.encode(), None)

    def keys(self) -> Iterable[bytes]:
        return list(self.data)


class Clock:
    """Wall time that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sync(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run(main)


def opened(store: MemoryStore, clock: Clock, secret: bytes | None = None) -> Microblog:
    async def main() -> Microblog:
        return await Microblog.open(store, secret, clock=clock)

    blog: Microblog = sync(main)
    return blog


def blank(path: Path, size: int = 8 << 20) -> str:
    with path.open("wb") as file:
        file.truncate(size)
    return str(path)


def texts(posts: list[Post]) -> list[str]:
    return [post.text for post in posts]


# Users, sessions, follows, timelines.


def test_a_session_registers_logs_in_follows_posts_and_reads_its_timeline() -> None:
    clock = Clock()
    store = MemoryStore()
    blog = opened(store, clock)

    async def main() -> None:
        assert await blog.register("Alice", "pw-a") == "alice"  # case-folded
        assert await blog.register("bob", "pw-b") == "bob"
        await blog.register("carol", "pw-c")
        token = await blog.login("ALICE", "pw-a")
        assert blog.user_of(token) == "alice"
        await blog.follow("alice", "bob")
        await blog.follow("alice", "bob")  # again: no change
        clock.now += 1
        first = await blog.post("bob", "bob one")
        clock.now += 1
        await blog.post("carol", "carol one")  # not followed
        clock.now += 1
        mine = await blog.post("alice", "alice one")
        clock.now += 1
        await blog.post("bob", "bob two")
        assert texts(await blog.timeline("alice")) == ["bob two", "alice one", "bob one"]
        assert texts(await blog.timeline("bob")) == ["bob two", "bob one"]
        assert texts(await blog.posts_of("bob", 1)) == ["bob two"]
        assert (first.user, first.seq, first.id) == ("bob", 0, "bob/0")
        assert json.loads(mine.json) == {
            "id": "alice/0",
            "user": "alice",
            "seq": 0,
            "time": mine.time,
            "text": "alice one",
        }
        assert mine.as_dict() == json.loads(mine.json)
        assert blog.user_info("Alice") == {"name": "alice", "following": ["bob"], "posts": 1}
        await blog.unfollow("alice", "bob")
        await blog.unfollow("alice", "bob")  # again: no change
        assert texts(await blog.timeline("alice")) == ["alice one"]
        assert blog.following("alice") == []
        assert blog.has_user("BOB") and not blog.has_user("dave") and not blog.has_user(3)

    sync(main)
    assert sorted(store.data) == [
        b"p/alice/0000000000",
        b"p/bob/0000000000",
        b"p/bob/0000000001",
        b"p/carol/0000000000",
        b"secret",
        b"u/alice",
        b"u/bob",
        b"u/carol",
    ]
    record = json.loads(store.data[b"u/alice"])
    assert (
        record["iterations"] == model.PBKDF2_ITERATIONS and len(bytes.fromhex(record["salt"])) == 16
    )
    assert "pw-a" not in store.data[b"u/alice"].decode()


def test_timelines_merge_by_time_and_honour_limit_and_before() -> None:
    clock = Clock(1000.0)
    blog = opened(MemoryStore(), clock)
    names = ["ann", "ben", "cy", "dee"]

    async def main() -> None:
        for name in names:
            await blog.register(name, "pw")
        for other in names[1:]:
            await blog.follow("ann", other)
        # Round-robin posts, ties (same time) across authors in every second round.
        for round_ in range(30):
            for name in names:
                await blog.post(name, f"{name} {round_}")
                if round_ % 2:
                    clock.now += 1
            clock.now += 1
        everything = await blog.timeline("ann", model.MAX_LIMIT)
        times = [post.time for post in everything]
        assert times == sorted(times, reverse=True)
        keys = [(-post.time, post.user, -post.seq) for post in everything]
        assert keys == sorted(keys)  # ties: by author
        assert texts(everything[:4]) == ["dee 29", "cy 29", "ben 29", "ann 29"]
        assert texts(everything[4:8]) == ["ann 28", "ben 28", "cy 28", "dee 28"]  # one time
        assert len(await blog.timeline("ann", 7)) == 7
        assert len(await blog.timeline("ben", 100)) == 30
        assert await blog.timeline("ann", 5) == everything[:5]
        # Paging on time: everything strictly older than the last one seen.
        paged: list[Post] = []
        before = None
        while True:
            page = await blog.timeline("ann", 9, before)
            if not page:
                break
            paged += page
            before = page[-1].time
        # Pages cut between posts of one time skip the rest of that time: compare times.
        every_time = {post.time for name in names for post in await blog.posts_of(name, 100)}
        assert sorted({post.time for post in paged}) == sorted(every_time)
        assert len(every_time) == 75 and len(paged) < 120
        older = await blog.posts_of("ben", 3, before=everything[10].time)
        assert all(post.time < everything[10].time for post in older) and len(older) == 3
        assert await blog.posts_of("ben", 3, before=0) == []
        assert len(await blog.posts_of("ben", 50, before=10.0**12)) == 30

    sync(main)


def test_a_timeline_reads_one_post_per_author_and_one_per_post_returned() -> None:
    clock = Clock()
    store = MemoryStore()
    blog = opened(store, clock)

    async def main() -> None:
        for i in range(10):
            await blog.register(f"u{i}", "pw")
            if i:
                await blog.follow("u0", f"u{i}")
            for j in range(30):
                clock.now += 1
                await blog.post(f"u{i}", f"{i}.{j}")

    sync(main)
    cold = opened(store, clock)  # a reboot: nothing cached
    store.gets = 0
    assert len(sync(lambda: cold.timeline("u0", 20))) == 20
    assert store.gets <= 10 + 20
    store.gets = 0
    sync(lambda: cold.timeline("u0", 20))
    assert store.gets == 0  # cached now


def test_the_post_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "POST_CACHE", 16)
    clock = Clock()
    store = MemoryStore()
    blog = opened(store, clock)

    async def main() -> None:
        await blog.register("a", "pw")
        for i in range(50):
            clock.now += 1
            await blog.post("a", str(i))
        assert len(blog._cache) == 16
        assert texts(await blog.posts_of("a", 50)) == [str(i) for i in reversed(range(50))]
        assert len(blog._cache) == 16

    sync(main)


def test_post_times_never_go_backwards_even_when_the_clock_does() -> None:
    clock = Clock(500.0)
    store = MemoryStore()
    blog = opened(store, clock)

    async def main() -> None:
        await blog.register("a", "pw")
        first = await blog.post("a", "one")
        clock.now = 100.0
        second = await blog.post("a", "two")
        assert second.time == first.time == 500.0
        assert texts(await blog.posts_of("a")) == ["two", "one"]

    sync(main)
    clock.now = 50.0
    again = opened(store, clock)  # after a reboot, from the stored newest post
    third = sync(lambda: again.post("a", "three"))
    assert third.time == 500.0 and third.seq == 2


# Tokens.


def test_tokens_expire_and_resist_tampering_and_other_secrets() -> None:
    clock = Clock(10_000.0)
    store = MemoryStore()
    blog = opened(store, clock)

    async def main() -> tuple[str, str]:
        await blog.register("alice", "pw")
        await blog.register("bob", "pw")
        short = await blog.login("alice", "pw", ttl=60)
        long = await blog.login("alice", "pw")
        return short, long

    short, long = sync(main)
    assert blog.user_of(short) == "alice"
    name, expiry, mac = short.split(".")
    assert name == "alice" and int(expiry) == 10_060 and len(mac) == 64
    clock.now += 59
    assert blog.user_of(short) == "alice"
    clock.now += 1
    assert blog.user_of(short) is None  # expired
    assert blog.user_of(long) == "alice"
    tampered = [
        f"bob.{expiry}.{mac}",  # another user
        f"alice.{int(expiry) + 10_000}.{mac}",  # a later expiry
        f"alice.{expiry}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}",  # another mac
        f"alice.{expiry}.{mac.upper()}",
        f"alice.{expiry}",
        f"alice..{mac}",
        "",
        "...",
        "alice",
        f"alice.{expiry}.{mac}.x",
        f"alice.-{expiry}.{mac}",
        f"alice.{chr(0x661) * 5}.{mac}",  # non-ASCII digits
        f"alice.{expiry}.{'é' * 64}",
        "a" * 10_000,
    ]
    for token in tampered:
        assert blog.user_of(token) is None, token
    assert blog.user_of(None) is None and blog.user_of(b"alice") is None
    # Another secret: the same store, a different key.
    other = opened(store, clock, secret=b"another secret")
    assert other.user_of(long) is None
    assert blog.user_of(sync(lambda: other.login("alice", "pw"))) is None
    # The store's own secret again, as after a reboot: the token is still good.
    assert opened(store, clock).user_of(long) == "alice"


def test_logins_with_a_wrong_password_or_name_are_refused() -> None:
    blog = opened(MemoryStore(), Clock())

    async def main() -> None:
        await blog.register("alice", "right")
        for name, password in [
            ("alice", "wrong"),
            ("alice", "Right"),
            ("alice", ""),
            ("bob", "right"),
            ("", "right"),
            ("ålice", "right"),
            (None, "right"),
            ("alice", None),
        ]:
            with pytest.raises(Unauthorized, match="wrong name or password"):
                await blog.login(name, password)
        assert blog.user_of(await blog.login("Alice", "right")) == "alice"

    sync(main)


# Validation.


def test_names_passwords_texts_and_limits_are_checked() -> None:
    blog = opened(MemoryStore(), Clock())

    async def main() -> None:
        assert await blog.register("a" * 32, "p" * 128) == "a" * 32
        assert await blog.register("x_9", "é") == "x_9"
        for name in ["", "a" * 33, "a b", "a-b", "ä", "a.b", "a/b", "\u212a", 3, None, b"abc"]:
            with pytest.raises(Invalid, match="a name is"):
                await blog.register(name, "pw")
        for password in ["", "p" * 129, None, 12, "\ud800"]:
            with pytest.raises(Invalid, match="password"):
                await blog.register("fine", password)
        with pytest.raises(Conflict, match="taken"):
            await blog.register("X_9", "other")
        assert (await blog.post("x_9", "t" * 280)).text == "t" * 280
        for text in ["", "t" * 281, "  \n\t", None, 5, "\udc80"]:
            with pytest.raises(Invalid, match="text"):
                await blog.post("x_9", text)
        for limit in [0, -1, model.MAX_LIMIT + 1, True, 2.0, "3"]:
            with pytest.raises(Invalid, match="limit"):
                await blog.timeline("x_9", limit)  # type: ignore[arg-type]
        for before in [float("nan"), float("inf"), "1", True]:
            with pytest.raises(Invalid, match="before"):
                await blog.timeline("x_9", 5, before)  # type: ignore[arg-type]
        with pytest.raises(Invalid, match="themselves"):
            await blog.follow("x_9", "X_9")
        for action in (blog.follow, blog.unfollow):
            with pytest.raises(NotFound, match="no user"):
                await action("x_9", "nobody")
            with pytest.raises(NotFound, match="no user"):
                await action("nobody", "x_9")
        with pytest.raises(NotFound):
            await blog.post("nobody", "hi")
        with pytest.raises(NotFound):
            await blog.timeline("nobody")
        with pytest.raises(NotFound):
            await blog.posts_of("ä")
        with pytest.raises(NotFound):
            blog.user_info(None)

    sync(main)


# The log store on a disk file.


def test_reopening_the_same_log_store_restores_everything(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img")
    clock = Clock()

    async def first_boot() -> str:
        device = RawDisk(path, read_only=False)
        try:
            blog = await Microblog.open(await LogStore.open(device), clock=clock)
            for name in ["ann", "ben", "cy"]:
                await blog.register(name, f"pw-{name}")
            await blog.follow("ann", "ben")
            await blog.follow("ann", "cy")
            await blog.unfollow("ann", "cy")
            await blog.follow("cy", "ann")
            for i in range(12):
                clock.now += 1
                await blog.post(["ann", "ben", "cy"][i % 3], f"post {i}")
            return await blog.login("ben", "pw-ben")
        finally:
            device.close()

    async def second_boot(token: str) -> None:
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            blog = await Microblog.open(store, clock=clock)
            assert blog.user_of(token) == "ben"  # the secret came back from the disk
            assert blog.user_info("ann") == {"name": "ann", "following": ["ben"], "posts": 4}
            assert blog.following("cy") == ["ann"]
            assert blog.following("ben") == []
            assert texts(await blog.timeline("ann", 5)) == [
                "post 10",
                "post 9",
                "post 7",
                "post 6",
                "post 4",
            ]
            with pytest.raises(Conflict):
                await blog.register("ann", "again")
            assert blog.user_of(await blog.login("cy", "pw-cy")) == "cy"
            with pytest.raises(Unauthorized):
                await blog.login("cy", "pw-ann")
            clock.now += 1
            newest = await blog.post("ann", "after the reboot")
            assert newest.seq == 4  # numbering goes on
            await store.compact()  # and survives a compaction of the store
        finally:
            device.close()

    async def third_boot() -> None:
        device = RawDisk(path, read_only=False)
        try:
            blog = await Microblog.open(await LogStore.open(device), clock=clock)
            assert texts(await blog.posts_of("ann", 2)) == ["after the reboot", "post 9"]
            assert blog.post_count("ann") == 5
        finally:
            device.close()

    token = run(first_boot)
    run(second_boot, token)
    run(third_boot)


def test_concurrent_writers_get_distinct_ids_and_every_post_is_stored(tmp_path: Path) -> None:
    path = blank(tmp_path / "store.img")
    clock = Clock()
    writers, each = 40, 6

    async def poster(blog: Microblog, name: str, index: int) -> list[str]:
        ids = []
        for j in range(each):
            ids.append((await blog.post(name, f"{index}.{j}")).id)
        return ids

    async def registrant(blog: Microblog, password: str) -> str:
        try:
            await blog.register("contested", password)
        except Conflict:
            return ""
        return password

    async def follower(blog: Microblog, name: str, flips: int) -> None:
        for k in range(flips):
            await (blog.follow if k % 2 == 0 else blog.unfollow)(name, "writer0")

    async def main() -> None:
        device = RawDisk(path, read_only=False)
        try:
            blog = await Microblog.open(await LogStore.open(device), clock=clock)
            await blog.register("shared", "pw")
            for i in range(4):
                await blog.register(f"writer{i}", "pw")
            # Ten threads each posting as "shared", thirty as one of four writers.
            threads = [
                spawn(poster, blog, "shared" if i < 10 else f"writer{i % 4}", i)
                for i in range(writers)
            ]
            contenders = [spawn(registrant, blog, f"pw{i}") for i in range(8)]
            flippers = [spawn(follower, blog, "shared", 5 + 2 * (i % 2)) for i in range(6)]
            ids = [post_id for thread in threads for post_id in await thread.join()]
            winners = [password for thread in contenders if (password := await thread.join())]
            for thread in flippers:
                await thread.join()
            assert len(ids) == len(set(ids)) == writers * each
            assert len(winners) == 1
            assert blog.post_count("shared") == 10 * each
            assert [blog.post_count(f"writer{i}") for i in range(4)] == [
                each * len(range(10 + (i - 10) % 4, writers, 4)) for i in range(4)
            ]
            assert blog.following("shared") == ["writer0"]  # each flips it an odd number of times
            timeline = await blog.posts_of("shared", model.MAX_LIMIT)
            assert sorted(post.seq for post in timeline) == list(range(10 * each))
        finally:
            device.close()
        device = RawDisk(path, read_only=False)
        try:
            store = await LogStore.open(device)
            blog = await Microblog.open(store, clock=clock)
            stored = sorted(key.decode() for key in store if key.startswith(b"p/"))
            assert len(stored) == writers * each
            assert blog.post_count("shared") == 10 * each
            assert blog.following("shared") == ["writer0"]
            assert blog.user_of(await blog.login("contested", winners[0])) == "contested"
        finally:
            device.close()

    run(main)


# Against a reference model.

NAMES = st.sampled_from(["amy", "bo", "cal", "di", "Amy"])
TEXTS = st.text(min_size=1, max_size=20).filter(lambda text: not text.isspace())


class Reference(RuleBasedStateMachine):
    """The microblog over a memory store, and a model of what it should hold: users and
    passwords, follows, each user's posts as (time, seq, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock(100.0)
        self.store = MemoryStore()
        self.blog = opened(self.store, self.clock)
        self.passwords: dict[str, str] = {}
        self.follows: dict[str, set[str]] = {}
        self.posts: dict[str, list[tuple[float, int, str]]] = {}
        self.tokens: dict[str, str] = {}

    def expected_timeline(
        self, user: str, limit: int, before: float | None, authors: set[str]
    ) -> list[tuple[str, int, float, str]]:
        found = [
            (time, author, seq, text)
            for author in authors
            for time, seq, text in self.posts[author]
            if before is None or time < before
        ]
        found.sort(key=lambda item: (-item[0], item[1], -item[2]))
        return [(author, seq, time, text) for time, author, seq, text in found[:limit]]

    @rule(name=NAMES, password=st.sampled_from(["pw", "other"]))
    def register(self, name: str, password: str) -> None:
        folded = name.lower()
        if folded in self.passwords:
            with pytest.raises(Conflict):
                sync(lambda: self.blog.register(name, password))
        else:
            assert sync(lambda: self.blog.register(name, password)) == folded
            self.passwords[folded] = password
            self.follows[folded] = set()
            self.posts[folded] = []

    @rule(name=NAMES, password=st.sampled_from(["pw", "other"]))
    def login(self, name: str, password: str) -> None:
        folded = name.lower()
        if self.passwords.get(folded) == password:
            token = sync(lambda: self.blog.login(name, password))
            assert self.blog.user_of(token) == folded
            self.tokens[folded] = token
        else:
            with pytest.raises(Unauthorized):
                sync(lambda: self.blog.login(name, password))

    @rule(user=NAMES, other=NAMES, on=st.booleans())
    def follow(self, user: str, other: str, on: bool) -> None:
        user, other = user.lower(), other.lower()
        action = self.blog.follow if on else self.blog.unfollow
        if user not in self.passwords or other not in self.passwords:
            with pytest.raises(NotFound):
                sync(lambda: action(user, other))
        elif on and user == other:
            with pytest.raises(Invalid):
                sync(lambda: action(user, other))
        else:
            sync(lambda: action(user, other))
            if on:
                self.follows[user].add(other)
            else:
                self.follows[user].discard(other)

    @rule(user=NAMES, text=TEXTS)
    def post(self, user: str, text: str) -> None:
        folded = user.lower()
        if folded not in self.passwords:
            with pytest.raises(NotFound):
                sync(lambda: self.blog.post(user, text))
            return
        made = sync(lambda: self.blog.post(user, text))
        mine = self.posts[folded]
        time = max(self.clock.now, mine[-1][0] if mine else 0.0)
        assert (made.user, made.seq, made.time, made.text) == (folded, len(mine), time, text)
        mine.append((time, len(mine), text))

    @rule(step=st.sampled_from([0.0, 0.0, 0.5, 1.0, 7.25, -3.0]))
    def tick(self, step: float) -> None:
        self.clock.now += step  # sometimes not at all (ties), sometimes back

    @precondition(lambda self: self.passwords)
    @rule(
        data=st.data(),
        limit=st.integers(1, 12),
        before=st.none() | st.floats(90, 200).map(lambda t: round(t * 4) / 4),
        whose=st.booleans(),
    )
    def read(self, data: st.DataObject, limit: int, before: float | None, whose: bool) -> None:
        user = data.draw(st.sampled_from(sorted(self.passwords)))
        if whose:
            found = sync(lambda: self.blog.timeline(user, limit, before))
            authors = {user} | self.follows[user]
        else:
            found = sync(lambda: self.blog.posts_of(user, limit, before))
            authors = {user}
        got = [(post.user, post.seq, post.time, post.text) for post in found]
        assert got == self.expected_timeline(user, limit, before, authors)

    @rule()
    def reboot(self) -> None:
        self.blog = opened(self.store, self.clock)

    @invariant()
    def index_matches(self) -> None:
        for name in self.passwords:
            assert self.blog.following(name) == sorted(self.follows[name])
            assert self.blog.post_count(name) == len(self.posts[name])
        for name, token in self.tokens.items():
            assert self.blog.user_of(token) == name


Reference.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_model_matches_a_reference = Reference.TestCase
