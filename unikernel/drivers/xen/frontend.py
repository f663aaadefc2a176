"""frontend: what netfront and blkfront share in their bring-up and tear-down.

Finding the device in xenstore, waiting for the back end's state with a bounded timeout and an
error that says what to check, granting a pool within gntalloc's limit, and `Held`: what a
bring-up has taken, given back (in reverse) when it fails or the driver closes.

The device objects come in through narrow interfaces (`Channels`, `Pool`) so that tests can
pass fakes; the real ones are evtchn.EventChannels and gntalloc.GrantPool.
"""

from __future__ import annotations

from unikernel.drivers.xen.evtchn import EventChannels
from unikernel.drivers.xen.ring import PAGE_SIZE
from unikernel.drivers.xen.xenstore import (
    XenstoreClient,
    XenstoreError,
    XenstoreRefused,
    XenstoreTimeout,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class Channels(Protocol):
        """What a front end uses of evtchn.EventChannels."""

        def fileno(self) -> int: ...
        def bind_unbound(self, remote_domain: int) -> int: ...
        def notify(self, port: int) -> None: ...
        def unbind(self, port: int) -> None: ...
        def pending(self) -> list[int]: ...
        def unmask(self, port: int) -> None: ...
        def close(self) -> None: ...

    class Pool(Protocol):
        """What a front end uses of gntalloc.GrantPool."""

        grefs: list[int]

        def page(self, i: int) -> memoryview: ...
        def buffer(self) -> memoryview: ...
        def close(self) -> None: ...

    PoolFactory = Callable[[int, int], Pool]  # (domid, pages) -> a pool granted to domid
    LimitCheck = Callable[[int], int]  # gntalloc.ensure_limit


# xenbus states (xen/interface/io/xenbus.h)
INITIALISING, INIT_WAIT, INITIALISED, CONNECTED, CLOSING, CLOSED = 1, 2, 3, 4, 5, 6
STATE_NAMES = (
    "Unknown",
    "Initialising",
    "InitWait",
    "Initialised",
    "Connected",
    "Closing",
    "Closed",
    "Reconfiguring",
    "Reconfigured",
)
DEFAULT_TIMEOUT = 10.0  # seconds for the back end to reach each state
CLOSE_TIMEOUT = 2.0  # seconds for each step of an orderly disconnect

# Pages this process's front ends hold through gntalloc: its limit counts every user's pages,
# and in the unikernel we are the only user.
_granted = 0


class FrontendError(Exception):
    """A front end could not find or connect its device; says what it awaited and what to
    check."""


def describe_state(value: str | None) -> str:
    """A xenbus state as xenstore holds it, for messages: "2 (InitWait)"."""
    if value is None:
        return "absent"
    if value.isdigit() and int(value) < len(STATE_NAMES):
        return f"{value} ({STATE_NAMES[int(value)]})"
    return repr(value)


def granted_pages() -> int:
    return _granted


async def read_key(xs: XenstoreClient, path: str, why: str) -> str:
    """A key that must exist; a missing one raises FrontendError saying `why` it should."""
    try:
        return await xs.read(path)
    except XenstoreRefused as error:
        if error.errno_name != "ENOENT":
            raise
        raise FrontendError(f"xenstore has no {path}: {why}") from None


async def read_optional(xs: XenstoreClient, path: str) -> str | None:
    try:
        return await xs.read(path)
    except XenstoreRefused as error:
        if error.errno_name != "ENOENT":
            raise
        return None


async def find_device(xs: XenstoreClient, kind: str, name: str | None) -> tuple[str, str, int]:
    """Our device `name` of `kind` ("vif", "vbd"), or the first listed: (its name, the back
    end's path, the back end's domain)."""
    try:
        names = await xs.directory(f"device/{kind}")
    except XenstoreRefused as error:
        if error.errno_name != "ENOENT":
            raise
        names = []
    if not names:
        raise FrontendError(
            f"no {kind} in xenstore (device/{kind} is missing or empty): does the domain's"
            f" configuration declare one, and is the toolstack done creating it?"
        )
    if name is None:
        name = min(names, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
    elif name not in names:
        raise FrontendError(f"no device/{kind}/{name} in xenstore; there is {', '.join(names)}")
    frontend = f"device/{kind}/{name}"
    backend = await read_key(xs, f"{frontend}/backend", "the toolstack writes it")
    backend_id = await read_key(xs, f"{frontend}/backend-id", "the toolstack writes it")
    if not backend_id.isdigit():
        raise FrontendError(f"{frontend}/backend-id is {backend_id!r}, not a domain id")
    return name, backend, int(backend_id)


async def publish(xs: XenstoreClient, device: str, keys: dict[str, str]) -> None:
    """Write the front end's keys under `device` in one transaction, as the back end expects
    to find them all at once when it sees the state change."""

    async def write_all(tx: int) -> None:
        for key, value in keys.items():
            await xs.write(f"{device}/{key}", value, tx)

    await xs.transaction(write_all)


async def wait_backend_state(
    xs: XenstoreClient, backend: str, wanted: int, timeout: float, hint: str
) -> None:
    """Wait until `backend`/state is `wanted`. FrontendError at the timeout, naming the last
    state seen and `hint` (what to check), or at once if the back end closes."""
    path = f"{backend}/state"
    seen: list[str | None] = []

    def accept(value: str | None) -> bool:
        seen.append(value)
        return value in (str(wanted), str(CLOSING), str(CLOSED))

    try:
        value = await xs.wait_until(path, accept, timeout=timeout)
    except XenstoreTimeout:
        last = seen[-1] if seen else None
        raise FrontendError(
            f"{path} stayed {describe_state(last)} for {timeout:g} s, awaiting"
            f" {describe_state(str(wanted))}: {hint}"
        ) from None
    if value != str(wanted):
        raise FrontendError(
            f"{path} went to {describe_state(value)} while we awaited"
            f" {describe_state(str(wanted))}: the back end refused us; it says why in"
            f" {error_path(backend)}"
        )


def error_path(backend: str) -> str:
    """Where a back end's xenbus_dev_fatal() writes its reason, in its own domain's tree."""
    parts = backend.split("/", 4)
    if len(parts) == 5 and parts[:3] == ["", "local", "domain"]:
        return f"/local/domain/{parts[3]}/error/{parts[4]}/error"
    return f"the back end's xenstore error/{backend}/error"


def allocate_pool(
    factory: PoolFactory, ensure_limit: LimitCheck | None, domid: int, count: int
) -> Pool:
    """`count` pages granted to `domid`, after raising gntalloc's limit to cover every pool
    we hold (best effort: without sysfs, the allocation's own error explains)."""
    global _granted
    if ensure_limit is not None:
        try:  # noqa: SIM105 (contextlib costs the image's boot more than this)
            ensure_limit(_granted + count)
        except OSError:
            pass
    pool = factory(domid, count)
    if len(pool.grefs) != count:
        pool.close()
        raise FrontendError(f"the grant pool has {len(pool.grefs)} pages, not {count}")
    _granted += count
    return pool


class Held:
    """What a front end holds: its xenstore client (closed too if `owns_xenstore`), its event
    channel device and port, its grant pool and the views into it. `release()` gives all of it
    back, first telling the back end we are closing (if we had told it we were there)."""

    def __init__(
        self, xs: XenstoreClient, owns_xenstore: bool, evtchn: Channels, frontend: str
    ) -> None:
        self.xs = xs
        self.owns_xenstore = owns_xenstore
        self.evtchn = evtchn
        self.frontend = frontend
        self.port: int | None = None
        self.pool: Pool | None = None
        self.pool_pages = 0
        self.views: list[memoryview] = []  # ours into the pool: released before it closes
        self.release_first: list[Callable[[], None]] = []  # what else holds views (queues)
        self.published = False  # whether the back end may be using what we granted
        self.released = False

    def page(self, i: int) -> memoryview:
        assert self.pool is not None
        view = self.pool.page(i)
        self.views.append(view)
        return view

    def pages(self, first: int, count: int) -> memoryview:
        """Pages first..first+count-1 of the pool as one view: the pool is one mapping, so
        they lie side by side (blkfront copies a whole I/O in one slice)."""
        assert self.pool is not None
        whole = self.pool.buffer()
        if first < 0 or count < 1 or (first + count) * PAGE_SIZE > whole.nbytes:
            whole.release()
            raise IndexError(f"pages {first}..{first + count - 1} of a pool of {self.pool_pages}")
        view = whole[first * PAGE_SIZE : (first + count) * PAGE_SIZE]
        whole.release()  # the slice stands on its own
        self.views.append(view)
        return view

    async def publish(self, keys: dict[str, str]) -> None:
        """Write the front end's keys in one transaction (see publish()); from then on the
        back end may be using what we granted."""
        await publish(self.xs, self.frontend, keys)
        self.published = True

    def give_back(self, error: BaseException) -> None:
        """The bring-up failed with `error`: release everything, noting on `error` what
        could not be."""
        try:
            self.release()
        except Exception as failure:
            error.add_note(f"giving back what the bring-up took also failed: {failure!r}")

    def release(self) -> None:
        """Give everything back, without waiting: safe in a cancelled thread, and outside any.
        Goes on past failures and raises the first once done."""
        global _granted
        if self.released:
            return
        self.released = True
        failures: list[BaseException] = []

        def attempt(step: Callable[[], object]) -> bool:
            try:
                step()
            except Exception as error:
                failures.append(error)
                return False
            return True

        if self.published:
            # As Linux's front ends do on unplug: Closing, then Closed. Best effort: we cannot
            # wait here for the back end to follow (aclose() does).
            self.xs.write_nowait(f"{self.frontend}/state", str(CLOSING))
            self.xs.write_nowait(f"{self.frontend}/state", str(CLOSED))
        for step in self.release_first:
            attempt(step)
        for view in self.views:
            attempt(view.release)
        self.views.clear()
        if self.port is not None:
            port, self.port = self.port, None
            attempt(lambda: self.evtchn.unbind(port))
        attempt(self.evtchn.close)
        if self.pool is not None:
            pool, self.pool = self.pool, None
            if attempt(pool.close):
                _granted -= self.pool_pages
        if self.owns_xenstore:
            attempt(self.xs.close)
        if failures:
            raise failures[0]


def hold(xenstore: XenstoreClient | None, evtchn: Channels | None) -> Held:
    """What a bring-up starts from: the xenstore client given (else one of its own, which
    the Held owns) and the event channel device (else /dev/xen/evtchn), owned from now on."""
    xs = XenstoreClient() if xenstore is None else xenstore
    try:
        channels: Channels = EventChannels() if evtchn is None else evtchn
    except BaseException:
        if xenstore is None:
            xs.close()
        raise
    return Held(xs, xenstore is None, channels, "")


async def disconnect(xs: XenstoreClient, frontend: str, backend: str, timeout: float) -> None:
    """Linux's unplug handshake (xennet_bus_close): Closing, wait for the back end to close
    too, Closed, wait again. Best effort, each wait bounded: a back end that does not follow
    is left behind."""
    path = f"{backend}/state"
    try:
        if await read_optional(xs, path) == str(CLOSED):
            return
        await xs.write(f"{frontend}/state", str(CLOSING))
        closing = (None, str(CLOSING), str(CLOSED))  # None: the back end has gone altogether
        if await xs.wait_until(path, lambda v: v in closing, timeout=timeout) == str(CLOSED):
            return
        await xs.write(f"{frontend}/state", str(CLOSED))
        await xs.wait_until(path, lambda v: v in (None, str(CLOSED)), timeout=timeout)
    except XenstoreError:
        pass
