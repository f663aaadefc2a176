"""A fake Xen for the drivers' tests: grants, event channels, and back ends driven by xenstore.

- `FakeGrantPool` stands for gntalloc.GrantPool: pages of a memfd mapped twice, once for the
  front end and once for the back end (as Xen maps the grants in dom0). Its close() refuses,
  as the real one does, while the front end still holds views of its pages.
- `FakeEvtchn` stands for /dev/xen/evtchn with the kernel's semantics: an event queues the
  port and masks it; unmask() lets it fire again, at once if it was signalled meanwhile. Its
  fd is an eventfd: readable while events are queued, always writable, as the device is.
  `Channel` is the back end's side of a port.
- `NetbackDriver` and `BlkbackDriver` play the back ends' xenbus parts over their own
  xenstore connection (dom0's): probe (features, InitWait), connect when the front end says
  so (reading its keys, mapping its rings) and follow it when it closes. Their data paths are
  fake_backend's, wired to the event channel: `VifNetif` is dom0's side of the vif as a Netif
  (a second Stack runs on it); `WiredBlkback.serve()` answers the ring as told.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import socket
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.unikernel.xen.fake_backend import BlkRequest, FakeBlkback, FakeNetback, Grants
from tests.unikernel.xen.fake_xenstored import FakeXenstored
from unikernel.core.clock import FakeClock
from unikernel.core.scheduler import fail_after, run, spawn, wait_readable
from unikernel.drivers import Netif
from unikernel.drivers.xen import blkif
from unikernel.drivers.xen.ring import PAGE_SIZE, BackRing
from unikernel.drivers.xen.xenstore import XenstoreClient

DOMID = 7
VIF_FRONT = f"/local/domain/{DOMID}/device/vif/0"
VIF_BACK = f"/local/domain/0/backend/vif/{DOMID}/0"
VBD_FRONT = f"/local/domain/{DOMID}/device/vbd/51712"
VBD_BACK = f"/local/domain/0/backend/vbd/{DOMID}/51712"
VIF_MAC = "00:16:3e:5e:6c:01"

# What libxl writes for one vif and one disk before the domain runs (xl create).
LIBXL_TREE = {
    f"{VIF_FRONT}/backend": VIF_BACK,
    f"{VIF_FRONT}/backend-id": "0",
    f"{VIF_FRONT}/state": "1",
    f"{VIF_FRONT}/handle": "0",
    f"{VIF_FRONT}/mac": VIF_MAC,
    f"{VIF_FRONT}/mtu": "1500",
    f"{VIF_BACK}/frontend": VIF_FRONT,
    f"{VIF_BACK}/frontend-id": str(DOMID),
    f"{VIF_BACK}/online": "1",
    f"{VIF_BACK}/state": "1",
    f"{VIF_BACK}/script": "/etc/xen/scripts/vif-bridge",
    f"{VIF_BACK}/mac": VIF_MAC,
    f"{VIF_BACK}/handle": "0",
    f"{VIF_BACK}/type": "vif",
    f"{VIF_BACK}/bridge": "xenbr0",
    f"{VIF_BACK}/mtu": "1500",
    f"{VBD_FRONT}/backend": VBD_BACK,
    f"{VBD_FRONT}/backend-id": "0",
    f"{VBD_FRONT}/state": "1",
    f"{VBD_FRONT}/virtual-device": "51712",
    f"{VBD_FRONT}/device-type": "disk",
    f"{VBD_BACK}/frontend": VBD_FRONT,
    f"{VBD_BACK}/frontend-id": str(DOMID),
    f"{VBD_BACK}/online": "1",
    f"{VBD_BACK}/state": "1",
    f"{VBD_BACK}/removable": "0",
    f"{VBD_BACK}/bootable": "1",
    f"{VBD_BACK}/dev": "xvda",
    f"{VBD_BACK}/type": "phy",
    f"{VBD_BACK}/mode": "w",
    f"{VBD_BACK}/device-type": "disk",
    f"{VBD_BACK}/params": "/dev/vg/guest",
    f"{VBD_BACK}/physical-device": "fe:0",
}

# What netback's probe writes before it says InitWait.
NETBACK_PROBE = {
    "feature-sg": "1",
    "feature-gso-tcpv4": "1",
    "feature-gso-tcpv6": "1",
    "feature-ipv6-csum-offload": "1",
    "feature-rx-copy": "1",
    "feature-rx-flip": "0",
    "feature-multicast-control": "1",
    "feature-dynamic-multicast-control": "1",
    "feature-split-event-channels": "1",
    "multi-queue-max-queues": "4",
    "feature-ctrl-ring": "1",
}
Buffer = bytes | bytearray | memoryview
BACKEND_WAIT = 1e6  # seconds: back ends wait for the front end for as long as it takes


class FakeHypervisor:
    """Grants and event channels shared by the front ends and the back ends."""

    def __init__(self, limit: int = 1024) -> None:
        self.grants = Grants()
        self.granted_to: dict[int, int] = {}  # gref -> domid
        self.channels: dict[int, Channel] = {}
        self.limit = limit  # gntalloc's: pages in total
        self.granted = 0
        self.limit_checks: list[int] = []
        self.pools: list[FakeGrantPool] = []
        self.evtchns: list[FakeEvtchn] = []
        self._next_port = 5

    def ensure_limit(self, pages: int) -> int:
        self.limit_checks.append(pages)
        self.limit = max(self.limit, pages)
        return self.limit

    def grant_pool(self, domid: int, count: int) -> FakeGrantPool:
        if self.granted + count > self.limit:
            raise OSError(errno.ENOSPC, f"gntalloc's limit of {self.limit} pages")
        pool = FakeGrantPool(self, domid, count)
        self.pools.append(pool)
        return pool

    def evtchn(self) -> FakeEvtchn:
        device = FakeEvtchn(self)
        self.evtchns.append(device)
        return device

    def new_port(self, front: FakeEvtchn, remote_domain: int) -> Channel:
        channel = Channel(self._next_port, remote_domain, front)
        self._next_port += 3
        self.channels[channel.port] = channel
        return channel

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        for device in self.evtchns:
            device.close()


class FakeGrantPool:
    def __init__(self, hv: FakeHypervisor, domid: int, count: int) -> None:
        self.domid = domid
        self.count = count
        self.closed = False
        self._hv = hv
        size = count * PAGE_SIZE
        fd = os.memfd_create("fake-grants", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
            self._theirs = mmap.mmap(fd, size)  # the back end's mapping of the same pages
        finally:
            os.close(fd)
        self._view = memoryview(self._map)
        theirs = memoryview(self._theirs)
        self.grefs = [
            hv.grants.add(theirs[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]) for i in range(count)
        ]
        for gref in self.grefs:
            hv.granted_to[gref] = domid
        hv.granted += count

    def page(self, i: int) -> memoryview:
        if not 0 <= i < self.count:
            raise IndexError(f"page {i} of a pool of {self.count}")
        return self._view[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]

    def buffer(self) -> memoryview:
        return self._view[:]

    def close(self) -> None:
        if self.closed:
            return
        self._view.release()
        try:
            self._map.close()
        except BufferError:
            self._view = memoryview(self._map)
            raise BufferError("views of the grant pool's pages are still in use") from None
        self.closed = True
        self._hv.granted -= self.count
        for gref in self.grefs:
            del self._hv.granted_to[gref]  # the back end's mapping stays, as Xen defers it


class Channel:
    """One port: the front end's device signals and is signalled through it."""

    def __init__(self, port: int, remote_domain: int, front: FakeEvtchn) -> None:
        self.port = port
        self.remote_domain = remote_domain
        self.front = front
        self.back_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # the back end's
        self.masked = False
        self.fired_while_masked = False
        self.unbound = False
        self.notifications = 0  # from the front end
        self.events = 0  # to the front end
        self.lose = 0  # events to the front end to lose, from now on

    def notify_back(self) -> None:
        self.notifications += 1
        os.eventfd_write(self.back_fd, 1)

    def send(self) -> None:
        """The back end signals the front end."""
        if self.lose:
            self.lose -= 1
            return
        self.events += 1
        self.front.signal(self)

    def drain(self) -> int:
        try:
            return os.eventfd_read(self.back_fd)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if self.back_fd >= 0:
            os.close(self.back_fd)
            self.back_fd = -1


class FakeEvtchn:
    def __init__(self, hv: FakeHypervisor) -> None:
        self._hv = hv
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._queued: list[int] = []
        self.channels: dict[int, Channel] = {}
        self.closed = False
        self.unbound: list[int] = []
        self.unmasks = 0
        # Runs inside notify(): a back end on another CPU that reacts before we go on.
        self.on_notify: Callable[[int], object] | None = None
        self.on_unmask: Callable[[int], object] | None = None  # likewise, inside unmask()

    def fileno(self) -> int:
        return self._fd

    def bind_unbound(self, remote_domain: int) -> int:
        channel = self._hv.new_port(self, remote_domain)
        self.channels[channel.port] = channel
        return channel.port

    def notify(self, port: int) -> None:
        self.channels[port].notify_back()
        if self.on_notify is not None:
            self.on_notify(port)

    def unbind(self, port: int) -> None:
        self.channels.pop(port).unbound = True
        self.unbound.append(port)

    def pending(self) -> list[int]:
        if not self._queued:
            return []
        os.eventfd_read(self._fd)
        ports, self._queued = self._queued, []
        return ports

    def unmask(self, port: int) -> None:
        self.unmasks += 1
        if self.on_unmask is not None:
            self.on_unmask(port)
        channel = self.channels[port]
        if channel.masked:
            channel.masked = False
            if channel.fired_while_masked:
                channel.fired_while_masked = False
                self.signal(channel)

    def signal(self, channel: Channel) -> None:
        if channel.unbound or self.closed:
            return
        if channel.masked:
            channel.fired_while_masked = True
            return
        channel.masked = True  # as the kernel does when it queues the port
        self._queued.append(channel.port)
        os.eventfd_write(self._fd, 1)

    def close(self) -> None:
        if not self.closed:
            for port in list(self.channels):
                self.unbind(port)
            os.close(self._fd)
            self.closed = True

    def readable(self) -> bool:
        return bool(self._queued)


@dataclass
class WiredNetback(FakeNetback):
    """The fake netback, signalling the front end through its port."""

    channel: Channel | None = None

    def push(self, ring: BackRing) -> bool:
        notify = super().push(ring)
        if notify and not self.drop and self.channel is not None:
            self.channel.send()
        return notify


@dataclass
class WiredBlkback(FakeBlkback):
    channel: Channel | None = None
    fail_sectors: set[int] = field(default_factory=set)  # requests starting there fail
    batch: int = 1  # answer only once this many requests wait
    rng: random.Random | None = None  # shuffles the answers
    peak: int = 0  # the most requests in flight at once
    taken: list[int] = field(default_factory=list)  # request ids, as taken
    answered: list[int] = field(default_factory=list)  # request ids, as answered
    ops: list[int] = field(default_factory=list)

    def push(self, ring: BackRing) -> bool:
        notify = super().push(ring)
        if notify and not self.drop and self.channel is not None:
            self.channel.send()
        return notify

    def _do(self, request: BlkRequest) -> int:
        self.answered.append(request.id)
        if request.sector in self.fail_sectors:
            return blkif.STATUS_ERROR
        return super()._do(request)

    def step(self) -> None:
        """Take the requests; answer them if enough wait."""
        before = len(self.unanswered)
        self.take()
        for request in self.unanswered[before:]:
            self.taken.append(request.id)
            self.ops.append(request.op)
        self.peak = max(self.peak, len(self.unanswered))
        if self.unanswered and len(self.unanswered) >= self.batch:
            self.answer(rng=self.rng)

    async def serve(self) -> None:
        assert self.channel is not None
        while True:
            await wait_readable(self.channel.back_fd)
            self.channel.drain()
            self.step()


class VifNetif(Netif):
    """dom0's side of the vif (vifD.N on the bridge) as a Netif: frames the front end sent
    come out of read_batch(); write_batch() puts frames in its receive buffers."""

    def __init__(self, back: WiredNetback, channel: Channel, mac: bytes) -> None:
        self.mac = mac
        self.mtu = 1500
        self.back = back
        self.channel = channel
        self.hold_tx = False  # keep the front end's tx blocks (answer later: release_tx)
        self._frames: deque[bytes] = deque()

    def fileno(self) -> int:
        return self.channel.back_fd

    def serve(self) -> None:
        self.channel.drain()
        back = self.back
        back.take_tx()
        if not self.hold_tx and back.unanswered:
            back.answer_tx()
        self._frames.extend(back.sent)
        back.sent.clear()
        if back.rx_waiting:
            back.deliver_rx()

    def release_tx(self) -> None:
        self.hold_tx = False
        self.back.answer_tx()

    def read_batch(self, limit: int) -> list[Buffer]:
        self.serve()
        frames = self._frames
        return [frames.popleft() for _ in range(min(limit, len(frames)))]

    def write_batch(self, frames: Sequence[Buffer]) -> int:
        self.back.queue_frames([bytes(frame) for frame in frames])
        self.back.deliver_rx()
        return len(frames)

    def close(self) -> None:
        pass


class BackendDriver:
    """A back end's xenbus part: probe, connect when the front end says so, follow it when
    it closes. `hotplug=False`: the hotplug script never finishes (no Connected)."""

    kind = ""
    connect_on: tuple[str, ...] = ("4",)

    def __init__(
        self, xs: XenstoreClient, hv: FakeHypervisor, path: str, *, hotplug: bool = True
    ) -> None:
        self.xs = xs
        self.hv = hv
        self.path = path
        self.hotplug = hotplug
        self.front: dict[str, str] = {}  # the front end's keys, as read at connection
        self.channel: Channel | None = None
        self.states: list[str] = []  # what we said, in order

    async def set_state(self, state: str) -> None:
        self.states.append(state)
        await self.xs.write(f"{self.path}/state", state)

    async def run(self) -> None:
        xs = self.xs
        await self.probe()
        await self.set_state("2")
        frontend = await xs.read(f"{self.path}/frontend")
        await xs.wait_until(
            f"{frontend}/state", lambda v: v in self.connect_on, timeout=BACKEND_WAIT
        )
        for key in self.front_keys:
            self.front[key] = await xs.read(f"{frontend}/{key}")
        self.channel = self.hv.channels[int(self.front["event-channel"])]
        assert self.channel.remote_domain == 0, "the port was bound for another domain"
        self.map_rings()
        if self.hotplug:
            await self.connected()
            await self.set_state("4")
        # As netback and blkback do: Closing when it does, Closed when it is.
        await xs.wait_until(f"{frontend}/state", lambda v: v in ("5", "6"), timeout=BACKEND_WAIT)
        await self.set_state("5")
        await xs.wait_until(f"{frontend}/state", lambda v: v == "6", timeout=BACKEND_WAIT)
        await self.set_state("6")

    front_keys: tuple[str, ...] = ()

    async def probe(self) -> None:
        raise NotImplementedError

    def map_rings(self) -> None:
        raise NotImplementedError

    async def connected(self) -> None:
        pass

    def page(self, key: str) -> memoryview:
        gref = int(self.front[key])
        assert self.hv.granted_to.get(gref) == 0, f"gref {gref} is not granted to dom0"
        return self.hv.grants.pages[gref]


class NetbackDriver(BackendDriver):
    kind = "vif"
    front_keys = (
        "tx-ring-ref",
        "rx-ring-ref",
        "event-channel",
        "request-rx-copy",
        "feature-rx-notify",
        "feature-no-csum-offload",
    )

    def __init__(
        self,
        xs: XenstoreClient,
        hv: FakeHypervisor,
        path: str,
        *,
        hotplug: bool = True,
        probe: dict[str, str] | None = None,
    ) -> None:
        super().__init__(xs, hv, path, hotplug=hotplug)
        self.probe_keys = NETBACK_PROBE if probe is None else probe
        self.netback: WiredNetback | None = None

    async def probe(self) -> None:
        for key, value in self.probe_keys.items():
            await self.xs.write(f"{self.path}/{key}", value)

    def map_rings(self) -> None:
        assert self.front["request-rx-copy"] == "1", "netback refuses a front end without it"
        self.netback = WiredNetback(
            self.page("tx-ring-ref"), self.page("rx-ring-ref"), self.hv.grants, channel=self.channel
        )

    async def connected(self) -> None:
        await self.xs.write(f"{self.path}/hotplug-status", "connected")

    def vif(self, mac: bytes) -> VifNetif:
        assert self.netback is not None and self.channel is not None
        return VifNetif(self.netback, self.channel, mac)


class BlkbackDriver(BackendDriver):
    kind = "vbd"
    connect_on = ("3", "4")
    front_keys = ("ring-ref", "event-channel", "protocol", "feature-persistent")

    def __init__(
        self,
        xs: XenstoreClient,
        hv: FakeHypervisor,
        path: str,
        *,
        disk: bytearray,
        hotplug: bool = True,
        sector_size: int = 512,
        info: int = 0,
        flush: bool = True,
        indirect: int | None = 256,
    ) -> None:
        super().__init__(xs, hv, path, hotplug=hotplug)
        self.disk = disk
        self.sector_size = sector_size
        self.info = info
        self.flush = flush
        self.indirect = indirect  # feature-max-indirect-segments; None: not offered
        self.blkback: WiredBlkback | None = None

    async def probe(self) -> None:
        await self.xs.write(f"{self.path}/max-ring-page-order", "4")

    def map_rings(self) -> None:
        assert self.front["protocol"] == "x86_64-abi"
        self.blkback = WiredBlkback(
            self.page("ring-ref"),
            self.hv.grants,
            self.disk,
            flush_supported=self.flush,
            max_indirect_segments=self.indirect or 0,
            channel=self.channel,
        )
        spawn(self.blkback.serve)

    async def connected(self) -> None:
        keys = {
            "sectors": str(len(self.disk) // 512),
            "sector-size": str(self.sector_size),
            "physical-sector-size": str(self.sector_size),
            "info": str(self.info),
            "feature-flush-cache": "1",
            "feature-persistent": "1",
            "feature-discard": "0",
        }
        if self.indirect is not None:
            # Written as it connects, not at InitWait, as Linux's blkback does.
            keys["feature-max-indirect-segments"] = str(self.indirect)
        for key, value in keys.items():
            await self.xs.write(f"{self.path}/{key}", value)


@dataclass
class World:
    """A domain (7) and dom0 sharing a fake xenstore and a fake hypervisor."""

    store: FakeXenstored
    dom0_store: FakeXenstored
    xs: XenstoreClient  # the domain's
    dom0_xs: XenstoreClient
    hv: FakeHypervisor

    def start(self) -> None:
        """Serve xenstore (inside run())."""
        spawn(self.store.serve)
        spawn(self.dom0_store.serve)

    def netback(self, **options: Any) -> NetbackDriver:
        driver = NetbackDriver(self.dom0_xs, self.hv, VIF_BACK, **options)
        spawn(driver.run)
        return driver

    def blkback(self, disk: bytearray, **options: Any) -> BlkbackDriver:
        driver = BlkbackDriver(self.dom0_xs, self.hv, VBD_BACK, disk=disk, **options)
        spawn(driver.run)
        return driver

    def value(self, path: str) -> str | None:
        return self.store.tree.get(path)

    def front_keys(self, device: str) -> dict[str, str]:
        prefix = device + "/"
        return {k[len(prefix) :]: v for k, v in self.store.tree.items() if k.startswith(prefix)}


@contextmanager
def world(tree: dict[str, str] | None = None) -> Iterator[World]:
    ours, theirs = socket.socketpair()
    dom0_ours, dom0_theirs = socket.socketpair()
    store = FakeXenstored(theirs, LIBXL_TREE if tree is None else tree, domid=DOMID)
    dom0_store = store.connect(dom0_theirs, domid=0)
    xs = XenstoreClient(ours.detach(), timeout=5.0)
    dom0_xs = XenstoreClient(dom0_ours.detach(), timeout=5.0)
    hv = FakeHypervisor()
    try:
        yield World(store, dom0_store, xs, dom0_xs, hv)
    finally:
        xs.close()
        dom0_xs.close()
        theirs.close()
        dom0_theirs.close()
        hv.close()


def run_world(main: Callable[[World], Coroutine[Any, Any, Any]], *, real_time: bool = False) -> Any:
    """main(world) in the scheduler with xenstore served; bounded in (fake) time."""
    with world() as w:

        async def top() -> Any:
            w.start()
            with fail_after(5.0 if real_time else 60.0):
                return await main(w)

        return run(top) if real_time else run(top, clock=FakeClock())
