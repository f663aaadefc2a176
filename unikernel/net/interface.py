"""The driver loop: a Stack joined to a Netif on the cooperative scheduler.

Three threads per interface. The reader waits for the netif's descriptor, feeds the stack a
batch of frames at a time and transmits what it produced. The timer sleeps until the stack's
next deadline and ticks it, and with it every protocol registered with a tick (TCP's timers
fire here); whoever makes the stack's deadline earlier (a reply sent, a packet queued for ARP)
wakes it through flush(), or wake_timer() when there is nothing to send. The writer drains the
backlog when the netif is full, so that nobody else ever blocks on a write.

Applications that feed the stack themselves (sockets sending) call flush() afterwards.

The three threads are not a nursery's: they outlive the call that starts them (start() is not
async, and open_network() returns with them running), and close() must stop them at once, so
that the netif may be closed right after it.
"""

from __future__ import annotations

from collections import deque

from unikernel.core.scheduler import (
    Cancelled,
    move_on_after,
    now,
    spawn,
    wait_readable,
    wait_writable,
    yield_,
)
from unikernel.core.sync import Event

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from unikernel.core.scheduler import Thread
    from unikernel.drivers import Netif
    from unikernel.net.stack import Stack

_NEVER = float("inf")


class Interface:
    def __init__(
        self, stack: Stack, netif: Netif, *, batch: int = 64, max_backlog: int = 4096
    ) -> None:
        self.stack = stack
        self.netif = netif
        self.batch = batch
        self.max_backlog = max_backlog
        self.configured = Event()  # set once the stack first has an address
        self.backlog_drops = 0  # frames dropped because the netif stayed full
        self.writer_stalls = 0  # writer rounds in which the netif took nothing
        self._backlog: deque[bytes | bytearray] = deque()
        self._threads: list[Thread[Any]] = []
        self._timer_wakeup = Event()
        self._timer_deadline = _NEVER
        self._backlog_waiting = Event()
        self._backlog_drained = Event()

    def start(self) -> Interface:
        """Start the driver threads (inside scheduler.run())."""
        if not self._threads:
            self._threads = [spawn(self._read), spawn(self._time), spawn(self._write)]
            self.flush()
        return self

    def close(self) -> None:
        """Stop the driver threads; the netif stays open (its owner closes it). A thread
        already woken still runs to its next wait: close the netif only after aclose()."""
        for thread in self._threads:
            thread.cancel()
        self._threads = []

    async def aclose(self) -> None:
        """Stop the driver threads and wait until they have ended: the netif may then go."""
        threads = self._threads
        self.close()
        for thread in threads:
            try:
                await thread.join()
            except Cancelled:
                if not thread.done:
                    raise  # we were cancelled ourselves, not the thread we waited for

    def flush(self) -> None:
        """Transmit what the stack has produced, and re-arm the timer for its deadlines."""
        stack = self.stack
        frames = stack.take_frames()
        if frames:
            if self._backlog:
                self._queue(frames)  # behind what is already waiting, to keep the order
            else:
                taken = self.netif.write_batch(frames)
                if taken < len(frames):
                    self._queue(frames[taken:])
        if stack.config is not None:
            self.configured.set()
        deadline = stack.next_deadline()
        if deadline is not None:
            self.wake_timer(deadline)

    def wake_timer(self, deadline: float) -> None:
        """Tick the stack by `deadline`: for a protocol whose next deadline came earlier
        without anything to send (TCP arming its keepalive or persist timer, say)."""
        if deadline < self._timer_deadline:
            self._timer_wakeup.set()

    def counts(self) -> dict[str, int]:
        """Frames waiting in the backlog, dropped from it, and writer rounds that sent none."""
        return {
            "backlog": len(self._backlog),
            "backlog_drops": self.backlog_drops,
            "writer_stalls": self.writer_stalls,
        }

    async def drain(self) -> None:
        """Wait while the backlog is over half full: how senders feel a full link."""
        while len(self._backlog) > self.max_backlog // 2:
            drained = self._backlog_drained = Event()
            await drained.wait()

    async def _read(self) -> None:
        netif, stack, batch = self.netif, self.stack, self.batch
        fd = netif.fileno()
        while True:
            frames = netif.read_batch(batch)
            if frames:
                stack.receive_batch(frames, now(), netif.vouched())
                self.flush()
            if len(frames) < batch:
                await wait_readable(fd)
            else:
                await yield_()  # more may be waiting: let the others run first

    async def _time(self) -> None:
        stack = self.stack
        while True:
            wakeup = self._timer_wakeup = Event()
            deadline = stack.next_deadline()
            self._timer_deadline = _NEVER if deadline is None else deadline
            if deadline is None:
                await wakeup.wait()
            else:
                with move_on_after(deadline - now()):
                    await wakeup.wait()
            stack.tick(now())
            self.flush()

    async def _write(self) -> None:
        netif, backlog = self.netif, self._backlog
        while True:
            if not backlog:
                waiting = self._backlog_waiting = Event()
                await waiting.wait()
                continue
            await wait_writable(netif.fileno())
            frames = [backlog[i] for i in range(min(self.batch, len(backlog)))]
            taken = netif.write_batch(frames)
            if not taken:
                self.writer_stalls += 1
            for _ in range(taken):
                backlog.popleft()
            if len(backlog) <= self.max_backlog // 2:
                self._backlog_drained.set()

    def _queue(self, frames: list[bytes | bytearray]) -> None:
        backlog = self._backlog
        room = self.max_backlog - len(backlog)
        if len(frames) > room:
            self.backlog_drops += len(frames) - max(room, 0)
            frames = frames[: max(room, 0)]
        backlog.extend(frames)
        self._backlog_waiting.set()
