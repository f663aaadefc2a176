"""vnet: an in-memory Ethernet switch joining several stacks in one process, for tests.

The switch learns which port each source MAC lives behind and sends unicast frames only
there, flooding broadcasts and unknown destinations to every other port, as a real switch
does. It can lose, duplicate and reorder frames (from a seeded generator, so a test sees the
same faults every run) and drops frames larger than a port's MTU.

Each Port is a Netif whose file descriptor is an eventfd, readable while frames wait: the
scheduler waits on it exactly as on a TAP device.
"""

from __future__ import annotations

import os
import random
from collections import deque

from unikernel.drivers import Netif
from unikernel.net.ethernet import HEADER_LEN, is_group

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    Buffer = bytes | bytearray | memoryview


class Switch:
    def __init__(
        self,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        seed: int = 0,
        queue_limit: int = 1024,
    ) -> None:
        self.loss = loss  # probability that a frame is lost, per delivery
        self.duplicate = duplicate  # probability that a delivered frame comes twice
        self.reorder = reorder  # probability that a frame swaps places with the one before
        self.queue_limit = queue_limit  # frames waiting per port; more are dropped
        self.counts = {"forwarded": 0, "lost": 0, "duplicated": 0, "reordered": 0, "dropped": 0}
        self._random = random.Random(seed)
        self._ports: list[Port] = []
        self._where: dict[bytes, Port] = {}  # learnt: source MAC -> port

    def port(self, mac: bytes, mtu: int = 1500) -> Port:
        port = Port(self, mac, mtu)
        self._ports.append(port)
        return port

    def _forward(self, ingress: Port, frame: bytes) -> None:
        source, destination = frame[6:12], frame[:6]
        if not is_group(source):
            self._where[source] = ingress
        egress = None if is_group(destination) else self._where.get(destination)
        if egress is not None:
            if egress is not ingress:
                self._deliver(egress, frame)
            return
        for port in self._ports:
            if port is not ingress:
                self._deliver(port, frame)

    def _deliver(self, port: Port, frame: bytes) -> None:
        chance = self._random.random
        counts = self.counts
        if len(frame) - HEADER_LEN > port.mtu:
            counts["dropped"] += 1
            return
        if self.loss and chance() < self.loss:
            counts["lost"] += 1
            return
        copies = 2 if self.duplicate and chance() < self.duplicate else 1
        counts["duplicated"] += copies - 1
        for _ in range(copies):
            if len(port._queue) >= self.queue_limit:
                counts["dropped"] += 1
                continue
            counts["forwarded"] += 1
            # Frames wait in the port's queue until its stack reads them: a frame can
            # overtake only one still there.
            swap = bool(port._queue) and bool(self.reorder) and chance() < self.reorder
            counts["reordered"] += swap
            port._enqueue(frame, swap)

    def _remove(self, port: Port) -> None:
        self._ports.remove(port)
        for mac in [mac for mac, where in self._where.items() if where is port]:
            del self._where[mac]


class Port(Netif):
    """One stack's interface on the switch."""

    def __init__(self, switch: Switch, mac: bytes, mtu: int) -> None:
        self.mac = mac
        self.mtu = mtu
        self._switch = switch
        self._queue: deque[bytes] = deque()
        self._event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._signalled = False

    def fileno(self) -> int:
        return self._event

    def read_batch(self, limit: int) -> list[Buffer]:
        queue = self._queue
        frames: list[Buffer] = [queue.popleft() for _ in range(min(limit, len(queue)))]
        if not queue and self._signalled:
            os.eventfd_read(self._event)  # resets it: not readable until the next frame
            self._signalled = False
        return frames

    def write_batch(self, frames: Sequence[Buffer]) -> int:
        for frame in frames:
            # A copy: the sender may reuse its buffer once this returns, as with a real NIC.
            self._switch._forward(self, bytes(frame))
        return len(frames)

    def close(self) -> None:
        if self._event >= 0:
            self._switch._remove(self)
            os.close(self._event)
            self._event = -1

    def _enqueue(self, frame: bytes, swap: bool) -> None:
        queue = self._queue
        if swap and queue:
            queue.insert(len(queue) - 1, frame)  # ahead of the frame sent before it
        else:
            queue.append(frame)
        if not self._signalled:
            os.eventfd_write(self._event, 1)
            self._signalled = True
