"""A lossy, reordering, duplicating link between Linux and our stack, for the TAP tests.

The issue asks for `tc netem`. Where the kernel has it (sch_netem), impair() sets it up in both
directions: a netem qdisc at the root of the TAP device shapes what Linux sends us, and our
frames, which Linux receives on the device, are redirected from its ingress to an ifb device
whose root is a second netem qdisc. Some kernels lack sch_netem and cannot load it: the
Firecracker kernel (6.18) these tests were written on has tc, ifb, mirred, htb and nftables,
but no netem, no tbf-like delay and no loadable modules, and nftables can drop and duplicate
but not delay. There the same impairment, with netem's meaning, is applied to the frames where
they cross the TAP device: an ImpairedNetif between the device and our stack, seeded, so a
failure can be replayed. Linux's TCP meets the same losses, reordering and duplicates either
way: what the tests prove does not change. They print which way was taken.

Both impair IPv4 frames only (a lost ARP exchange would only delay the start), each
direction independently:
- `loss`: each frame is lost with this probability;
- `duplicate`: each frame that is not lost is delivered twice with this probability;
- `delay` with `reorder`: frames wait `delay` seconds, except a `reorder` share that goes
  at once and so overtakes those waiting (netem's "delay 1ms reorder 25%").
"""

from __future__ import annotations

import heapq
import random
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from tests.support.netns import Netns
from unikernel.core.scheduler import now, sleep_until, spawn
from unikernel.core.sync import Event
from unikernel.drivers import Netif
from unikernel.net.interface import Interface

Buffer = bytes | bytearray | memoryview

IFB = "unibench-ifb0"
_IPV4 = b"\x08\x00"


@dataclass(frozen=True)
class Impairment:
    loss: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0

    def netem(self) -> list[str]:
        """The same, as netem's arguments."""
        args = []
        if self.delay:
            args += ["delay", f"{self.delay * 1000:g}ms"]
            if self.reorder:
                args += ["reorder", f"{self.reorder * 100:g}%"]
        if self.loss:
            args += ["loss", f"{self.loss * 100:g}%"]
        if self.duplicate:
            args += ["duplicate", f"{self.duplicate * 100:g}%"]
        return args

    def __str__(self) -> str:
        return " ".join(self.netem()) or "none"


def netem_available(netns: Netns, device: str) -> bool:
    """Whether the kernel takes a netem qdisc (tried on `device`, and removed again)."""
    try:
        run_tc(netns, "qdisc", "add", "dev", device, "root", "netem", "delay", "0ms")
    except RuntimeError:
        return False
    run_tc(netns, "qdisc", "del", "dev", device, "root")
    return True


def netem_both_ways(netns: Netns, device: str, impairment: Impairment) -> None:
    """netem on what Linux sends on `device`, and (through an ifb device) on what it receives."""
    args = impairment.netem()
    run_tc(netns, "qdisc", "add", "dev", device, "root", "netem", *args)
    netns.ip("link", "add", IFB, "type", "ifb")
    netns.ip("link", "set", IFB, "up")
    run_tc(netns, "qdisc", "add", "dev", IFB, "root", "netem", *args)
    run_tc(netns, "qdisc", "add", "dev", device, "handle", "ffff:", "ingress")
    redirect = ["action", "mirred", "egress", "redirect", "dev", IFB]
    match_all = ["u32", "match", "u32", "0", "0"]
    run_tc(
        netns,
        "filter",
        "add",
        "dev",
        device,
        "parent",
        "ffff:",
        "protocol",
        "ip",
        *match_all,
        *redirect,
    )


class ImpairedNetif(Netif):
    """`inner` with the impairment applied to the IPv4 frames crossing it, both ways, from a
    seeded generator. Frames held back (delay) come out of start()'s thread: received ones
    go to the interface's stack, sent ones to `inner`."""

    def __init__(self, inner: Netif, impairment: Impairment, seed: int = 0) -> None:
        self.inner = inner
        self.impairment = impairment
        self.mac = inner.mac
        self.mtu = inner.mtu
        self.counts = {"lost": 0, "duplicated": 0, "delayed": 0}
        self._rng = random.Random(seed)
        self._held: list[tuple[float, int, bool, bytes]] = []  # (due, order, received, frame)
        self._order = 0
        self._interface: Interface | None = None
        self._wakeup = Event()

    def start(self, interface: Interface) -> None:
        """Deliver held frames through `interface`, from a thread that runs until the
        scheduler's end (call from the test body)."""
        self._interface = interface
        spawn(self._release)

    def fileno(self) -> int:
        return self.inner.fileno()

    def read_batch(self, limit: int) -> list[Buffer]:
        frames: list[Buffer] = []
        for frame in self.inner.read_batch(limit):
            frames += self._fate(frame, received=True)
        return frames

    def write_batch(self, frames: Sequence[Buffer]) -> int:
        taken = 0
        for frame in frames:
            copies = self._fate(frame, received=False)
            if copies and self.inner.write_batch(copies) == 0:
                break  # the device is full: the interface offers this frame again
            taken += 1
        return taken

    def close(self) -> None:
        self.inner.close()

    def _fate(self, frame: Buffer, received: bool) -> list[Buffer]:
        """The copies of `frame` to pass on now; those held back go to the heap."""
        if frame[12:14] != _IPV4:
            return [frame]
        impairment, rng = self.impairment, self._rng
        if impairment.loss and rng.random() < impairment.loss:
            self.counts["lost"] += 1
            return []
        copies = 1
        if impairment.duplicate and rng.random() < impairment.duplicate:
            self.counts["duplicated"] += 1
            copies = 2
        if impairment.delay and not (impairment.reorder and rng.random() < impairment.reorder):
            self.counts["delayed"] += copies
            due = now() + impairment.delay
            kept = bytes(frame)  # a received frame is a view into a buffer read_batch reuses
            for _ in range(copies):
                self._order += 1
                heapq.heappush(self._held, (due, self._order, received, kept))
            self._wakeup.set()
            return []
        return [frame] * copies

    async def _release(self) -> None:
        held = self._held
        while True:
            if not held:
                self._wakeup = Event()
                await self._wakeup.wait()
                continue
            await sleep_until(held[0][0])
            interface = self._interface
            assert interface is not None
            received = []
            while held and held[0][0] <= now():
                _, _, inbound, frame = heapq.heappop(held)
                if inbound:
                    received.append(frame)
                elif self.inner.write_batch([frame]) == 0:
                    self.counts["lost"] += 1  # the device is full: lost, as netem would
            at = now()
            for frame in received:
                interface.stack.receive(frame, at)
            interface.flush()


def run_tc(netns: Netns, *args: str) -> str:
    """`tc` inside the namespace; its output (RuntimeError with tc's message if it fails)."""
    result = subprocess.run(
        ["ip", "netns", "exec", netns.name, "tc", *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if result.returncode:
        raise RuntimeError(f"tc {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout
