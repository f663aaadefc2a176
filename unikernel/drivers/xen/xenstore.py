"""xenstore: the client side of the xenstore protocol, sans-IO, and a client over /dev/xen/xenbus.

`XenstoreProtocol` does no I/O, in the manner of h11: its request methods return the request's
id and the bytes to write, and `receive()` takes whatever the device gave (part of a message,
several at once) and returns the events it completes: a `Reply` or an `ErrorReply` to one of
our requests, or a `WatchEvent`. Replies may come in any order; they name their request by id.

`XenstoreClient` runs the protocol over the device for the scheduler's threads: any number of
threads may wait for their replies and watch events at once, each wait bounded by a timeout.

    client = XenstoreClient()                      # /dev/xen/xenbus
    backend = await client.read("device/vif/0/backend")
    await client.watch(f"{backend}/state", "be")
    ...
    await client.transaction(publish)              # publish(tx) runs again on a conflict

Paths that do not start with "/" are relative to our domain's home, /local/domain/<domid>/:
xenstored resolves them, so neither class rewrites them.

Wire format (xs_wire.h, docs/misc/xenstore.txt): a 16-byte header {u32 type, req_id, tx_id,
len} in native byte order, then `len` bytes of payload. Linux's device takes at most 4096
bytes a message, header included, so longer requests are refused here; xenstored itself sends
payloads of up to 4096 bytes (XENSTORE_PAYLOAD_MAX).

Message types are plain ints in `XsType` rather than an IntEnum: `enum` costs the image's boot
more than this whole module (see devices.py).
"""

from __future__ import annotations

import errno
import os
import struct
from collections import deque

from unikernel.core.scheduler import move_on_after, wait_readable
from unikernel.core.sync import Event
from unikernel.drivers.xen.device_files import open_device

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from typing import TypeVar

    T = TypeVar("T")

XENBUS_PATH = "/dev/xen/xenbus"

HEADER = struct.Struct("=IIII")  # xsd_sockmsg: type, req_id, tx_id, len
HEADER_SIZE = HEADER.size
MAX_MESSAGE = 4096  # what Linux's xenbus device takes in one message, header included
MAX_PAYLOAD = 4096  # XENSTORE_PAYLOAD_MAX: the most xenstored sends after a header
DEFAULT_TIMEOUT = 10.0  # seconds for one reply; xenstored answers in well under one
DEFAULT_ATTEMPTS = 16  # tries of a transaction that keeps conflicting
_WATCH_BACKLOG = 256  # watch events kept per token; older ones are dropped past that


class XsType:
    """Message types (xs_wire.h's enum xsd_sockmsg_type)."""

    CONTROL = 0  # was DEBUG
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21  # 20, RESTRICT, was withdrawn
    DIRECTORY_PART = 22


TYPE_NAMES: dict[int, str] = {
    value: name for name, value in vars(XsType).items() if isinstance(value, int)
}


def type_name(kind: int) -> str:
    return TYPE_NAMES.get(kind, f"type {kind}")


class XenstoreError(Exception):
    """A broken byte stream from xenstore, a request too large to send, or a failed call."""


class XenstoreRefused(XenstoreError):
    """xenstored answered a request with an error (ENOENT, EACCES, EAGAIN...)."""

    def __init__(self, what: str, errno_name: str) -> None:
        code = getattr(errno, errno_name, None)
        self.errno_name = errno_name
        self.errno: int | None = code if isinstance(code, int) else None
        explained = f" ({os.strerror(self.errno)})" if self.errno is not None else ""
        super().__init__(f"xenstore refused {what}: {errno_name}{explained}")


class XenstoreTimeout(XenstoreError, TimeoutError):
    """What a call awaited did not come in time."""


class _Record:
    """Compared by its fields and shown as the call that makes it (no dataclasses: see
    devices.py)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self) and isinstance(other, _Record) and self._key() == other._key()
        )

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"


class Reply(_Record):
    """xenstored's answer to request `req_id`; `type` is the request's."""

    _fields = ("req_id", "type", "payload")
    __slots__ = _fields

    def __init__(self, req_id: int, type: int, payload: bytes) -> None:
        self.req_id = req_id
        self.type = type
        self.payload = payload


class ErrorReply(_Record):
    """xenstored refused request `req_id`; `errno_name` says why ("ENOENT")."""

    _fields = ("req_id", "errno_name")
    __slots__ = _fields

    def __init__(self, req_id: int, errno_name: str) -> None:
        self.req_id = req_id
        self.errno_name = errno_name


class WatchEvent(_Record):
    """Something at or under a watched path changed; `path` is what changed."""

    _fields = ("path", "token")
    __slots__ = _fields

    def __init__(self, path: str, token: str) -> None:
        self.path = path
        self.token = token


XenstoreEvent = Reply | ErrorReply | WatchEvent


class XenstoreProtocol:
    """The xenstore protocol as a client speaks it, without I/O; see the module's docstring.

    Request methods return `(req_id, message)`: write the message whole, then look for the
    reply with that req_id among what `receive()` returns. `tx` is a transaction's id, 0 for
    none. Once the received stream has proved malformed, every later `receive()` raises again:
    there is no finding the next header in a broken stream.
    """

    __slots__ = ("_broken", "_buffer", "_next_id", "_pending")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._next_id = 1
        self._pending: dict[int, int] = {}  # req_id -> the type of that request
        self._broken: str | None = None

    @property
    def pending(self) -> int:
        """Requests still awaiting their reply."""
        return len(self._pending)

    def request(self, kind: int, payload: bytes, tx: int = 0) -> tuple[int, bytes]:
        """Any request: the methods below build their payloads and call this."""
        if HEADER_SIZE + len(payload) > MAX_MESSAGE:
            raise XenstoreError(
                f"a {type_name(kind)} request of {HEADER_SIZE + len(payload)} bytes is over the"
                f" {MAX_MESSAGE} that Linux's xenbus device takes in one message"
            )
        if kind not in TYPE_NAMES or kind in (XsType.WATCH_EVENT, XsType.ERROR):
            raise ValueError(f"{type_name(kind)} is not a request")
        if not 0 <= tx < 1 << 32:
            raise ValueError(f"transaction ids are u32, not {tx}")
        req_id = self._new_id()
        self._pending[req_id] = kind
        return req_id, HEADER.pack(kind, req_id, tx, len(payload)) + payload

    def read(self, path: str, tx: int = 0) -> tuple[int, bytes]:
        return self.request(XsType.READ, _nul(path), tx)

    def write(self, path: str, value: str | bytes, tx: int = 0) -> tuple[int, bytes]:
        data = value.encode() if isinstance(value, str) else bytes(value)
        return self.request(XsType.WRITE, _nul(path) + data, tx)  # the value has no NUL

    def directory(self, path: str, tx: int = 0) -> tuple[int, bytes]:
        return self.request(XsType.DIRECTORY, _nul(path), tx)

    def mkdir(self, path: str, tx: int = 0) -> tuple[int, bytes]:
        return self.request(XsType.MKDIR, _nul(path), tx)

    def rm(self, path: str, tx: int = 0) -> tuple[int, bytes]:
        return self.request(XsType.RM, _nul(path), tx)

    def get_perms(self, path: str, tx: int = 0) -> tuple[int, bytes]:
        return self.request(XsType.GET_PERMS, _nul(path), tx)

    def set_perms(self, path: str, perms: Sequence[str], tx: int = 0) -> tuple[int, bytes]:
        """`perms` as xenstore spells them: "n0" (owner 0, nobody else), "r5" (5 may read)..."""
        return self.request(XsType.SET_PERMS, _nul(path) + b"".join(map(_nul, perms)), tx)

    def watch(self, path: str, token: str) -> tuple[int, bytes]:
        return self.request(XsType.WATCH, _nul(path) + _nul(token))

    def unwatch(self, path: str, token: str) -> tuple[int, bytes]:
        return self.request(XsType.UNWATCH, _nul(path) + _nul(token))

    def transaction_start(self) -> tuple[int, bytes]:
        return self.request(XsType.TRANSACTION_START, b"\0")

    def transaction_end(self, tx: int, commit: bool) -> tuple[int, bytes]:
        if tx == 0:
            raise ValueError("transaction 0 means no transaction: there is none to end")
        # Exactly two bytes: Linux's device refuses any other length.
        return self.request(XsType.TRANSACTION_END, b"T\0" if commit else b"F\0", tx)

    def get_domain_path(self, domid: int) -> tuple[int, bytes]:
        return self.request(XsType.GET_DOMAIN_PATH, _nul(str(domid)))

    def receive(self, data: bytes | bytearray | memoryview) -> list[XenstoreEvent]:
        """The events that `data`, the next bytes from xenstore, completes (maybe none)."""
        if self._broken is not None:
            raise XenstoreError(f"the xenstore stream broke earlier: {self._broken}")
        buffer = self._buffer
        buffer += data
        events: list[XenstoreEvent] = []
        start = 0
        try:
            while len(buffer) - start >= HEADER_SIZE:
                kind, req_id, _tx, length = HEADER.unpack_from(buffer, start)
                # Judge the header before its payload is in: a bad one would leave us waiting
                # for bytes that may never come.
                if kind not in TYPE_NAMES:
                    raise XenstoreError(f"message of unknown type {kind}")
                if length > MAX_PAYLOAD:
                    raise XenstoreError(
                        f"{type_name(kind)} message claims {length} bytes of payload, over"
                        f" xenstore's {MAX_PAYLOAD}"
                    )
                end = start + HEADER_SIZE + length
                if len(buffer) < end:
                    break
                events.append(self._event(kind, req_id, bytes(buffer[start + HEADER_SIZE : end])))
                start = end
        except XenstoreError as error:
            self._broken = str(error)
            raise
        finally:
            del buffer[:start]
        return events

    def _event(self, kind: int, req_id: int, payload: bytes) -> XenstoreEvent:
        if kind == XsType.WATCH_EVENT:
            # req_id means nothing here: Linux's device leaves it uninitialised.
            fields = _nul_terminated(payload, "WATCH_EVENT").split(b"\0")
            if len(fields) < 2:
                raise XenstoreError(f"WATCH_EVENT without a token: {payload!r}")
            return WatchEvent(_text(fields[0], "watch path"), _text(fields[1], "watch token"))
        asked = self._pending.pop(req_id, None)
        if asked is None:
            raise XenstoreError(f"{type_name(kind)} reply to request {req_id}, which awaits none")
        if kind == XsType.ERROR:
            name = _text(_nul_terminated(payload, "ERROR"), "errno name")
            if not name:
                raise XenstoreError(f"ERROR reply to request {req_id} names no error")
            return ErrorReply(req_id, name)
        if kind != asked:
            raise XenstoreError(
                f"{type_name(kind)} reply to request {req_id}, which was a {type_name(asked)}"
            )
        return Reply(req_id, kind, payload)

    def _new_id(self) -> int:
        req_id = self._next_id
        while req_id in self._pending:  # after 2**32 requests, skip those still out
            req_id = req_id % 0xFFFFFFFF + 1
        self._next_id = req_id % 0xFFFFFFFF + 1  # 0 is left to watch events
        return req_id


# What the replies carry.


def decode_value(payload: bytes) -> str:
    """A READ reply: the value itself, without a NUL."""
    return _text(payload, "value")


def decode_directory(payload: bytes) -> list[str]:
    """A DIRECTORY reply: the children's names, each NUL-terminated; none for a leaf."""
    if not payload:
        return []
    return [_text(name, "name") for name in _nul_terminated(payload, "DIRECTORY").split(b"\0")]


def decode_transaction_id(payload: bytes) -> int:
    """A TRANSACTION_START reply: the id, in decimal, NUL-terminated."""
    digits = _nul_terminated(payload, "TRANSACTION_START")
    if not digits.isdigit() or not 0 < int(digits) < 1 << 32:
        raise XenstoreError(f"TRANSACTION_START reply is not a transaction id: {payload!r}")
    return int(digits)


def decode_perms(payload: bytes) -> list[str]:
    """A GET_PERMS reply: the permissions, each NUL-terminated ("n0", "r5"...)."""
    return [
        _text(perm, "permission") for perm in _nul_terminated(payload, "GET_PERMS").split(b"\0")
    ]


def decode_domain_path(payload: bytes) -> str:
    """A GET_DOMAIN_PATH reply: "/local/domain/<domid>", NUL-terminated."""
    return _text(_nul_terminated(payload, "GET_DOMAIN_PATH"), "path")


def _nul(text: str) -> bytes:
    data = text.encode()
    if not data or b"\0" in data:
        raise ValueError(
            f"xenstore paths, tokens and permissions are non-empty, NUL-free: {text!r}"
        )
    return data + b"\0"


def _nul_terminated(payload: bytes, what: str) -> bytes:
    """The payload without its final NUL, which it must have."""
    if not payload.endswith(b"\0"):
        raise XenstoreError(f"{what} payload is not NUL-terminated: {payload[:64]!r}")
    return payload[:-1]


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise XenstoreError(f"{what} is not UTF-8: {data[:64]!r}") from None


class XenstoreClient:
    """The protocol over the xenbus device, or over any stream (tests give it a socket).

    The client owns `fd` and closes it. Writes never wait: the device takes each message whole
    at once, and a socket standing in for it has room for xenstore's small messages. Reads are
    done by whichever waiting thread gets there first, which hands every other thread's
    replies and watch events to it; each wait is bounded by its `timeout`.
    """

    def __init__(self, fd: int | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._fd = open_device(XENBUS_PATH, "CONFIG_XEN") if fd is None else fd
        os.set_blocking(self._fd, False)
        self.timeout = timeout  # for calls that name none
        self._protocol = XenstoreProtocol()
        # Replies some thread awaits (None until they come); those of requests nobody awaits
        # any more (timed out, abandoned) are dropped.
        self._replies: dict[int, Reply | ErrorReply | None] = {}
        self._events: dict[str, deque[WatchEvent]] = {}  # per watch token
        self._watched: dict[str, set[str]] = {}  # token -> paths watched with it
        self._reading = False  # whether a thread is reading for everyone
        self._progress = Event()  # set, and replaced, each time that thread has read
        self._failure: XenstoreError | None = None
        self._serial = 0  # numbers wait_until()'s private watch tokens

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """Let go of the device; xenstored ends our transactions and watches."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> XenstoreClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def read(self, path: str, tx: int = 0, *, timeout: float | None = None) -> str:
        reply = await self._call(self._protocol.read(path, tx), f"READ {path!r}", timeout)
        return decode_value(reply.payload)

    async def write(
        self, path: str, value: str | bytes, tx: int = 0, *, timeout: float | None = None
    ) -> None:
        await self._call(self._protocol.write(path, value, tx), f"WRITE {path!r}", timeout)

    def write_nowait(self, path: str, value: str | bytes) -> None:
        """Send a WRITE without awaiting its reply, ignoring failure: for clean-up that cannot
        wait (a driver's synchronous close(), or one in a cancelled thread)."""
        try:
            built = self._protocol.write(path, value)
        except (ValueError, XenstoreError):
            return
        self._post(built)

    async def directory(self, path: str, tx: int = 0, *, timeout: float | None = None) -> list[str]:
        built = self._protocol.directory(path, tx)
        return decode_directory((await self._call(built, f"DIRECTORY {path!r}", timeout)).payload)

    async def mkdir(self, path: str, tx: int = 0, *, timeout: float | None = None) -> None:
        await self._call(self._protocol.mkdir(path, tx), f"MKDIR {path!r}", timeout)

    async def rm(self, path: str, tx: int = 0, *, timeout: float | None = None) -> None:
        await self._call(self._protocol.rm(path, tx), f"RM {path!r}", timeout)

    async def watch(self, path: str, token: str, *, timeout: float | None = None) -> None:
        """Watch `path` and everything under it; wait_watch(token) returns the changes.

        xenstored fires every new watch once at once, so the first wait_watch() returns
        straight away: read the state, then wait for changes, and none is missed.
        """
        # Queue events from now: the first one may overtake the reply.
        events = self._events.setdefault(token, deque(maxlen=_WATCH_BACKLOG))
        paths = self._watched.setdefault(token, set())
        try:
            await self._call(self._protocol.watch(path, token), f"WATCH {path!r}", timeout)
        except BaseException:
            if not paths:
                self._watched.pop(token, None)
                self._events.pop(token, None)
            raise
        # Through the dicts again: an unwatch of the token's last path may have run meanwhile.
        self._watched.setdefault(token, paths).add(path)
        self._events.setdefault(token, events)

    async def unwatch(self, path: str, token: str, *, timeout: float | None = None) -> None:
        await self._call(self._protocol.unwatch(path, token), f"UNWATCH {path!r}", timeout)
        self._forget_watch(path, token)

    async def wait_watch(self, token: str, *, timeout: float | None = None) -> WatchEvent:
        """The next change seen by the watches made with `token`."""
        events = self._events.get(token)
        if events is None:
            raise ValueError(f"no watch has token {token!r}")
        paths = ", ".join(map(repr, sorted(self._watched.get(token, ()))))
        return await self._until(
            lambda: events.popleft() if events else None,
            f"watch event for token {token!r} (watching {paths})",
            timeout,
        )

    async def wait_until(
        self, path: str, accept: Callable[[str | None], bool], *, timeout: float | None = None
    ) -> str | None:
        """Watch `path` until its value (None while it does not exist) is one `accept`s; that
        value. The whole wait, not each step, is bounded by `timeout`."""
        self._serial += 1
        token = f"wait-until-{self._serial}:{path}"
        value: str | None = None
        seconds = self.timeout if timeout is None else timeout
        with move_on_after(seconds):
            await self.watch(path, token)
            try:
                while True:
                    try:
                        value = await self.read(path)
                    except XenstoreRefused as error:
                        if error.errno_name != "ENOENT":
                            raise
                        value = None
                    if accept(value):
                        return value
                    await self.wait_watch(token, timeout=seconds)
            finally:
                self._post(self._protocol.unwatch(path, token))
                self._forget_watch(path, token)
        raise XenstoreTimeout(
            f"{path!r} did not reach an accepted value within {seconds} s (last: {value!r})"
        )

    async def transaction_start(self, *, timeout: float | None = None) -> int:
        reply = await self._call(self._protocol.transaction_start(), "TRANSACTION_START", timeout)
        return decode_transaction_id(reply.payload)

    async def transaction_end(
        self, tx: int, commit: bool = True, *, timeout: float | None = None
    ) -> None:
        """End transaction `tx`; raises XenstoreRefused with errno_name "EAGAIN" if it
        conflicted with another, and then nothing it wrote happened."""
        built = self._protocol.transaction_end(tx, commit)
        verb = "commit" if commit else "abort"
        await self._call(built, f"TRANSACTION_END ({verb}) of transaction {tx}", timeout)

    async def transaction(
        self,
        body: Callable[[int], Awaitable[T]],
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout: float | None = None,
    ) -> T:
        """`await body(tx)` in a transaction, then commit; its result.

        When xenstored says EAGAIN (another domain changed what we read) nothing happened, and
        the whole body runs again in a new transaction, up to `attempts` times: so the body
        must do nothing but xenstore calls with `tx`. `timeout` bounds each call.
        """
        for _ in range(attempts):
            tx = await self.transaction_start(timeout=timeout)
            try:
                result = await body(tx)
            except XenstoreRefused as error:
                self._post(self._protocol.transaction_end(tx, False))
                if error.errno_name == "EAGAIN":
                    continue
                raise
            except BaseException:
                self._post(self._protocol.transaction_end(tx, False))
                raise
            try:
                await self.transaction_end(tx, True, timeout=timeout)
            except XenstoreRefused as error:
                if error.errno_name == "EAGAIN":
                    continue
                raise
            return result
        raise XenstoreError(f"transaction still conflicting (EAGAIN) after {attempts} attempts")

    async def _call(self, built: tuple[int, bytes], what: str, timeout: float | None) -> Reply:
        req_id, message = built
        replies = self._replies
        replies[req_id] = None
        try:
            self._write(message)
            reply: Reply | ErrorReply = await self._until(
                lambda: replies[req_id], f"reply to {what}", timeout
            )
        finally:
            del replies[req_id]
        if isinstance(reply, ErrorReply):
            raise XenstoreRefused(what, reply.errno_name)
        return reply

    def _post(self, built: tuple[int, bytes]) -> None:
        """Send a request whose reply nobody will await: clean-up that must not wait, as it
        may run in a cancelled thread."""
        try:
            self._write(built[1])
        except (OSError, XenstoreError):
            return  # the connection is dead: xenstored has cleaned up already

    def _write(self, message: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        try:
            written = os.write(self._fd, message)
        except BlockingIOError:
            written = 0
        except OSError as error:
            kind = type_name(HEADER.unpack_from(message)[0])
            raise XenstoreError(f"cannot send {kind} to xenstore: {error.strerror}") from error
        if written != len(message):
            raise XenstoreError(
                f"xenstore took {written} of a {len(message)}-byte message: a xenbus device"
                " takes whole messages; a stand-in for it must have room for them"
            )

    async def _until(self, check: Callable[[], T | None], what: str, timeout: float | None) -> T:
        """Read for everyone until check() returns something; that."""
        seconds = self.timeout if timeout is None else timeout
        with move_on_after(seconds):
            while True:
                found = check()
                if found is not None:
                    return found
                if self._failure is not None:
                    raise self._failure
                if self._reading:
                    await self._progress.wait()
                    continue
                # Only one thread may wait for the fd: the others wait for it to have read.
                self._reading = True
                try:
                    await wait_readable(self._fd)
                    self._pump()
                finally:
                    self._reading = False
                    progress, self._progress = self._progress, Event()
                    progress.set()
        raise XenstoreTimeout(f"no {what} within {seconds} s")

    def _pump(self) -> None:
        """Read what is there and hand it out."""
        while True:
            try:
                data = os.read(self._fd, MAX_PAYLOAD + HEADER_SIZE)
            except BlockingIOError:
                return
            if not data:
                self._failure = XenstoreError("xenstore closed the connection")
                raise self._failure
            try:
                events = self._protocol.receive(data)
            except XenstoreError as error:
                self._failure = error
                raise
            for event in events:
                if isinstance(event, WatchEvent):
                    queue = self._events.get(event.token)
                    if queue is not None:  # else a watch since removed: its late events
                        queue.append(event)
                elif event.req_id in self._replies:
                    self._replies[event.req_id] = event

    def _forget_watch(self, path: str, token: str) -> None:
        paths = self._watched.get(token)
        if paths is not None:
            paths.discard(path)
            if not paths:
                del self._watched[token]
                self._events.pop(token, None)
