"""The microblog's state: users, who follows whom, and posts, kept in a key-value store.

    blog = await Microblog.open(await LogStore.open(disk))
    await blog.register("alice", "secret")
    token = await blog.login("alice", "secret")
    user = blog.user_of(token)                  # "alice", or None
    await blog.post(user, "hello")
    posts = await blog.timeline(user)           # newest first

Store layout (str keys, stored UTF-8; every value is written once per change, none is read,
modified and written back):

    secret                  32 random bytes: the key that signs session tokens, made at the
                            first open, so that tokens stay valid across reboots
    u/<name>                the user: JSON {"name", "salt", "hash", "iterations", "created"}
                            (salt and hash in hex); written once, at registration
    f/<name>/<other>        empty: <name> follows <other>; unfollowing deletes it
    p/<name>/<seq:010d>     a post: JSON {"id": "<name>/<seq>", "user", "seq", "time", "text"},
                            the very bytes the API serves; seq counts from 0 for each user

Opening rebuilds the in-memory index from the keys alone (no value is read): the users, whom
each follows, and the sequence numbers of each user's posts. Post bodies are read on demand,
through a bounded cache of the posts read or written last (timelines read the recent ones
again and again), and credentials at a user's first login after opening.

Names are 1 to 32 characters of [a-z0-9_], case-folded; a user's posts carry times that never
go backwards (a post's time is at least its predecessor's, whatever the clock does), so a
timeline is a merge of each author's posts in sequence order. Timelines are computed on read
(fan-out on read): a k-way merge of the newest posts of the user and of everyone they follow,
which reads one post per author plus one per post returned.

Threads are cooperative: every `await` of the store is a switch point. Sequence numbers and
times are given out with no await between reading and bumping them, follow and unfollow of
one user take turns under that user's lock, and the index changes only once the store has
made a write durable.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import math
import os
import time
from array import array
from bisect import bisect_left, insort
from collections import OrderedDict

from unikernel.core.sync import Lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Protocol

    class Store(Protocol):
        """What the microblog needs of a store: LogStore's methods."""

        async def get(self, key: str, /) -> bytes | None: ...
        async def put(self, key: str, value: bytes, /) -> None: ...
        async def delete(self, key: str, /) -> None: ...
        def keys(self) -> Iterable[bytes | str]: ...


# A benchmark appliance, where every simulated session registers or logs in: a thousand rounds
# keep the password stored salted and slow to test offline, yet cost well under a millisecond
# of CPU per login. A service facing real users wants hundreds of thousands.
PBKDF2_ITERATIONS = 1000
SALT_BYTES = 16
SECRET_BYTES = 32
SECRET_KEY = "secret"
SESSION_SECONDS = 7 * 24 * 3600
NAME_MAX = 32
PASSWORD_MAX = 128
TEXT_MAX = 280
MAX_LIMIT = 100  # posts in one timeline or listing
POST_CACHE = 8192  # posts kept in memory, the least recently used dropped first

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_HEX = frozenset("0123456789abcdef")
_DUMMY_SALT = bytes(SALT_BYTES)  # hashed against for unknown names: their logins take as long


class MicroblogError(Exception):
    """A request the microblog refuses; the message says why."""


class Conflict(MicroblogError):
    """The name is taken."""


class NotFound(MicroblogError):
    """No such user."""


class Invalid(MicroblogError):
    """A name, password, text or limit out of bounds."""


class Unauthorized(MicroblogError):
    """Wrong name or password."""


class Post:
    """One post; `json` is its stored form, compact UTF-8 JSON, served as it is."""

    __slots__ = ("json", "seq", "text", "time", "user")

    def __init__(
        self, user: str, seq: int, time: float, text: str, encoded: bytes | None = None
    ) -> None:
        self.user = user
        self.seq = seq
        self.time = time
        self.text = text
        self.json = encoded if encoded is not None else _dump(self.as_dict())

    @property
    def id(self) -> str:
        return f"{self.user}/{self.seq}"

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "user": self.user,
            "seq": self.seq,
            "time": self.time,
            "text": self.text,
        }

    @classmethod
    def decode(cls, value: bytes) -> Post:
        fields = json.loads(value)
        return cls(fields["user"], fields["seq"], fields["time"], fields["text"], value)

    def __repr__(self) -> str:
        return f"<Post {self.id} at {self.time}: {self.text!r}>"


class _User:
    """A user in the index."""

    __slots__ = ("credentials", "following", "last_time", "lock", "next_seq", "posts")

    def __init__(self, credentials: tuple[bytes, bytes, int] | None = None) -> None:
        self.credentials = credentials  # (salt, hash, iterations), read at the first login
        self.following: set[str] = set()
        self.posts: array[int] = array("q")  # sequence numbers of the stored posts, ascending
        self.next_seq = 0
        self.last_time: float | None = None  # of the newest post; read when first needed
        self.lock: Lock | None = None  # made on the first follow or unfollow


class Microblog:
    """Made by Microblog.open(); see the module's docstring."""

    __slots__ = ("_cache", "_clock", "_registering", "_secret", "_store", "_users")

    def __init__(self, store: Store, secret: bytes, clock: Callable[[], float]) -> None:
        self._store = store
        self._secret = secret
        self._clock = clock
        self._users: dict[str, _User] = {}
        self._registering: set[str] = set()  # names whose user record is being written
        self._cache: OrderedDict[tuple[str, int], Post] = OrderedDict()

    @classmethod
    async def open(
        cls, store: Store, secret: bytes | None = None, *, clock: Callable[[], float] = time.time
    ) -> Microblog:
        """The microblog kept in `store`, as it was left. Session tokens are signed with
        `secret`, or else with the store's own, made now if it has none. `clock` gives wall
        time in seconds: post times and token expiry, which must survive a reboot."""
        if secret is None:
            secret = await store.get(SECRET_KEY)
            if not secret:
                secret = os.urandom(SECRET_BYTES)
                await store.put(SECRET_KEY, secret)
        blog = cls(store, secret, clock)
        blog._load(store.keys())
        return blog

    def _load(self, keys: Iterable[bytes | str]) -> None:
        users = self._users
        follows: list[tuple[str, str]] = []
        posts: dict[str, list[int]] = {}
        for raw in keys:
            key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            kind, _, rest = key.partition("/")
            if kind == "u":
                if _is_name(rest):
                    users[rest] = _User()
            elif kind == "f":
                name, _, other = rest.partition("/")
                follows.append((name, other))
            elif kind == "p":
                name, _, seq = rest.partition("/")
                if seq.isascii() and seq.isdigit():
                    posts.setdefault(name, []).append(int(seq))
        for name, other in follows:
            if name in users and other in users:
                users[name].following.add(other)
        for name, seqs in posts.items():
            user = users.get(name)
            if user is not None:
                seqs.sort()
                user.posts = array("q", seqs)
                user.next_seq = seqs[-1] + 1

    # Users and sessions.

    async def register(self, name: object, password: object) -> str:
        """Make a user; their name as stored (case-folded)."""
        name = normal_name(name)
        secret = _check_password(password)
        if name in self._users or name in self._registering:
            raise Conflict(f"the name {name!r} is taken")
        self._registering.add(name)  # until the record is durable, nobody else may take it
        try:
            salt = os.urandom(SALT_BYTES)
            digest = _hash(secret, salt, PBKDF2_ITERATIONS)
            record = {
                "name": name,
                "salt": salt.hex(),
                "hash": digest.hex(),
                "iterations": PBKDF2_ITERATIONS,
                "created": self._clock(),
            }
            await self._store.put(_user_key(name), _dump(record))
        finally:
            self._registering.discard(name)
        self._users[name] = _User((salt, digest, PBKDF2_ITERATIONS))
        return name

    async def login(self, name: object, password: object, ttl: float = SESSION_SECONDS) -> str:
        """A session token for the user, valid for `ttl` seconds."""
        secret = password.encode("utf-8", "replace") if isinstance(password, str) else b""
        folded = name.casefold() if isinstance(name, str) and name.isascii() else ""
        user = self._users.get(folded)
        if user is None:
            _hash(secret, _DUMMY_SALT, PBKDF2_ITERATIONS)  # as long as a known name takes
            raise Unauthorized("wrong name or password")
        salt, digest, iterations = await self._credentials(folded, user)
        if not hmac.compare_digest(_hash(secret, salt, iterations), digest):
            raise Unauthorized("wrong name or password")
        expiry = str(int(self._clock() + ttl))
        return f"{folded}.{expiry}.{self._sign(folded, expiry)}"

    def user_of(self, token: object) -> str | None:
        """Whose session `token` is; None if it is malformed, tampered with, signed with
        another secret, expired, or names nobody."""
        if not isinstance(token, str) or len(token) > 2 * NAME_MAX + 100:
            return None
        name, _, rest = token.partition(".")
        expiry, _, mac = rest.partition(".")
        if (
            not (expiry.isascii() and expiry.isdigit())
            or len(mac) != 64
            or not _HEX.issuperset(mac)
        ):
            return None
        if not hmac.compare_digest(self._sign(name, expiry), mac):
            return None
        if int(expiry) <= self._clock() or name not in self._users:
            return None
        return name

    def _sign(self, name: str, expiry: str) -> str:
        message = f"{name}.{expiry}".encode("utf-8", "replace")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    async def _credentials(self, name: str, user: _User) -> tuple[bytes, bytes, int]:
        if user.credentials is None:
            value = await self._store.get(_user_key(name))
            if value is None:
                raise NotFound(f"the record of user {name!r} is missing from the store")
            record = json.loads(value)
            user.credentials = (
                bytes.fromhex(record["salt"]),
                bytes.fromhex(record["hash"]),
                int(record["iterations"]),
            )
        return user.credentials

    def has_user(self, name: object) -> bool:
        return isinstance(name, str) and name.isascii() and name.casefold() in self._users

    def following(self, user: object) -> list[str]:
        """Whom the user follows, sorted."""
        return sorted(self._find(user)[1].following)

    def post_count(self, user: object) -> int:
        return len(self._find(user)[1].posts)

    def user_info(self, user: object) -> dict[str, object]:
        """{"name", "following": [names], "posts": count}."""
        name, record = self._find(user)
        return {"name": name, "following": sorted(record.following), "posts": len(record.posts)}

    def _find(self, user: object) -> tuple[str, _User]:
        if isinstance(user, str) and user.isascii():
            name = user.casefold()
            found = self._users.get(name)
            if found is not None:
                return name, found
        raise NotFound(f"no user {user!r}")

    # Following.

    async def follow(self, user: object, other: object) -> None:
        """`user` follows `other` from now on (if not already)."""
        name, record = self._find(user)
        target, _ = self._find(other)
        if target == name:
            raise Invalid("a user cannot follow themselves: their own posts are in their timeline")
        async with _lock(record):
            if target not in record.following:
                await self._store.put(_follow_key(name, target), b"")
                record.following.add(target)

    async def unfollow(self, user: object, other: object) -> None:
        """`user` no longer follows `other` (if they did)."""
        name, record = self._find(user)
        target, _ = self._find(other)
        async with _lock(record):
            if target in record.following:
                await self._store.delete(_follow_key(name, target))
                record.following.discard(target)

    # Posts.

    async def post(self, user: object, text: object) -> Post:
        """Store a post by `user`; it is returned once durable."""
        name, record = self._find(user)
        body = _check_text(text)
        if record.last_time is None:
            newest = 0.0
            if record.posts:
                found = await self._read(name, record.posts[-1])
                newest = found.time if found is not None else 0.0
            # Another post may have gone ahead while we read.
            record.last_time = max(newest, record.last_time or 0.0)
        # No await from here to the put: the sequence number and time are ours alone.
        now = max(round(self._clock(), 6), record.last_time)
        seq = record.next_seq
        record.next_seq = seq + 1
        record.last_time = now
        post = Post(name, seq, now, body)
        await self._store.put(_post_key(name, seq), post.json)
        insort(record.posts, seq)
        self._remember(post)
        return post

    async def timeline(
        self, user: object, limit: int = 20, before: float | None = None
    ) -> list[Post]:
        """The newest posts of `user` and of everyone they follow, newest first: at most
        `limit`, and only those older than `before` (a post's time) if given. Posts of one
        time are ordered by author, then newest first."""
        name, record = self._find(user)
        return await self._merge([name, *record.following], limit, before)

    async def posts_of(
        self, user: object, limit: int = 20, before: float | None = None
    ) -> list[Post]:
        """The newest posts of `user`, newest first, as timeline() has them."""
        name, _ = self._find(user)
        return await self._merge([name], limit, before)

    async def _merge(self, authors: list[str], limit: int, before: float | None) -> list[Post]:
        limit = _check_limit(limit)
        if before is not None:
            before = _check_before(before)
        # A k-way merge: a heap holds each author's newest post not yet taken.
        heap: list[tuple[float, str, int, Post]] = []
        for author in authors:
            record = self._users[author]
            start = None if before is None else await self._newer_than(author, record, before)
            found = await self._older(author, record, start, before)
            if found is not None:
                heap.append((-found.time, author, -found.seq, found))
        heapq.heapify(heap)
        out: list[Post] = []
        while heap:
            _, author, _, found = heapq.heappop(heap)
            out.append(found)
            if len(out) == limit:
                break
            older = await self._older(author, self._users[author], found.seq, before)
            if older is not None:
                heapq.heappush(heap, (-older.time, author, -older.seq, older))
        return out

    async def _older(
        self, author: str, record: _User, seq: int | None, before: float | None
    ) -> Post | None:
        """The author's newest post before `seq` (any, if None) and older than `before`."""
        posts = record.posts
        while True:
            # Found afresh after every read: posts become durable meanwhile.
            at = len(posts) if seq is None else bisect_left(posts, seq)
            if at == 0:
                return None
            seq = posts[at - 1]
            found = await self._read(author, seq)
            if found is not None and (before is None or found.time < before):
                return found

    async def _newer_than(self, author: str, record: _User, before: float) -> int | None:
        """The sequence number of the author's oldest post of time `before` or later (None if
        there is none): a binary search, post times never going backwards."""
        posts = record.posts
        low, high = 0, len(posts)
        while low < high:
            middle = (low + high) // 2
            found = await self._read(author, posts[middle])
            if found is None or found.time >= before:
                high = middle
            else:
                low = middle + 1
        return posts[low] if low < len(posts) else None

    async def _read(self, author: str, seq: int) -> Post | None:
        cache = self._cache
        key = (author, seq)
        found = cache.get(key)
        if found is not None:
            cache.move_to_end(key)
            return found
        value = await self._store.get(_post_key(author, seq))
        if value is None:
            return None
        found = Post.decode(value)
        self._remember(found)
        return found

    def _remember(self, post: Post) -> None:
        cache = self._cache
        cache[post.user, post.seq] = post
        cache.move_to_end((post.user, post.seq))
        if len(cache) > POST_CACHE:
            cache.popitem(last=False)


def normal_name(name: object) -> str:
    """`name` case-folded, if it is a valid one; else Invalid says why."""
    if not isinstance(name, str):
        raise Invalid("a name is a string")
    folded = name.casefold() if name.isascii() else name
    if not _is_name(folded):
        raise Invalid(f"a name is 1 to {NAME_MAX} characters of a-z, 0-9 and _, not {name!r}")
    return folded


def _is_name(name: str) -> bool:
    return 0 < len(name) <= NAME_MAX and _NAME_CHARS.issuperset(name)


def _check_password(password: object) -> bytes:
    if not isinstance(password, str) or not 0 < len(password) <= PASSWORD_MAX:
        raise Invalid(f"a password is 1 to {PASSWORD_MAX} characters")
    try:
        return password.encode()
    except UnicodeEncodeError:
        raise Invalid("a password must be valid Unicode (no lone surrogates)") from None


def _check_text(text: object) -> str:
    if not isinstance(text, str) or not 0 < len(text) <= TEXT_MAX:
        raise Invalid(f"a post's text is 1 to {TEXT_MAX} characters")
    if text.isspace():
        raise Invalid("a post's text cannot be only blanks")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise Invalid("a post's text must be valid Unicode (no lone surrogates)") from None
    return text


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT:
        raise Invalid(f"a limit is 1 to {MAX_LIMIT} posts, not {limit!r}")
    return limit


def _check_before(before: object) -> float:
    if isinstance(before, bool) or not isinstance(before, int | float) or not math.isfinite(before):
        raise Invalid(f"`before` is a post's time, a finite number, not {before!r}")
    return float(before)


def _hash(password: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations)


def _lock(user: _User) -> Lock:
    lock = user.lock
    if lock is None:
        lock = user.lock = Lock()
    return lock


def _dump(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _user_key(name: str) -> str:
    return f"u/{name}"


def _follow_key(name: str, other: str) -> str:
    return f"f/{name}/{other}"


def _post_key(name: str, seq: int) -> str:
    return f"p/{name}/{seq:010d}"
