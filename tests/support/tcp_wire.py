"""The in-memory wire the TCP tests run on, and a raw peer that plays the remote end by hand.

Wire joins two TcpLayers back to back. Time is fake and moves only to the next delivery or
timer deadline; losses, reordering and duplication come from a seeded random generator, so
every run of a test sees the same segments in the same order.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

from unikernel.net.tcp import (
    ACK,
    SYN,
    Connection,
    Segment,
    TcpConfig,
    TcpLayer,
    build_segment,
    parse_segment,
)
from unikernel.net.tcp.segment import syn_options

A_IP = bytes([10, 0, 0, 1])
B_IP = bytes([10, 0, 0, 2])

Filter = Callable[[bytes, bytes, Segment], bool]


def seeded(seed: int) -> Callable[[], int]:
    """A deterministic stand-in for entropy.random_u32."""
    rng = random.Random(seed)
    return lambda: rng.getrandbits(32)


class Wire:
    """Layer `a` at A_IP and layer `b` at B_IP, `delay` seconds apart one way."""

    def __init__(
        self,
        *,
        seed: int = 0,
        loss: float = 0.0,
        reorder: float = 0.0,
        duplicate: float = 0.0,
        delay: float = 0.005,
        config_a: TcpConfig | None = None,
        config_b: TcpConfig | None = None,
        verify: bool = True,
        batch: int = 1,
        runs: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        # Segments due at once for the same layer are delivered together, up to this many,
        # between its begin_batch() and end_batch(), as a driver reading frames in batches;
        # with `runs`, those between the same two addresses in one input_run() call, as the
        # stack hands them over.
        self.batch = batch
        self.runs = runs
        self.verify = verify  # parse every segment sent (off: only when a test looks)
        self.now = 0.0
        self.a = TcpLayer(seeded(seed + 1), config_a, A_IP)
        self.b = TcpLayer(seeded(seed + 2), config_b, B_IP)
        self.loss = loss
        self.reorder = reorder
        self.duplicate = duplicate
        self.delay = delay
        self.drop: Filter | None = None  # True: this segment is lost
        self.trace: list[tuple[float, bytes, Segment]] | None = None  # (time, source, segment)
        self.sent = 0
        self.largest = 0  # bytes in the largest segment sent
        self._flight: list[tuple[float, int, TcpLayer, bytes, bytes, bytes]] = []
        self._order = 0

    def _flush(self) -> None:
        for layer, other in ((self.a, self.b), (self.b, self.a)):
            for dst, src, data in layer.take_output():
                self.sent += 1
                self.largest = max(self.largest, len(data))
                if self.verify or self.trace is not None or self.drop is not None:
                    seg = parse_segment(src, dst, data)
                    assert seg is not None, "the engine sent a segment that does not parse"
                    if self.trace is not None:
                        self.trace.append((self.now, src, seg))
                    if self.drop is not None and self.drop(src, dst, seg):
                        continue
                if self.rng.random() < self.loss:
                    continue
                copies = 2 if self.rng.random() < self.duplicate else 1
                for _ in range(copies):
                    delay = self.delay
                    if self.rng.random() < self.reorder:
                        delay += self.rng.random() * 3 * self.delay
                    self._order += 1
                    heapq.heappush(
                        self._flight, (self.now + delay, self._order, other, src, dst, data)
                    )

    def step(self) -> bool:
        """Deliver the next segment or fire the next timers; False if nothing is left."""
        self._flush()
        times = [t for t in (self.a.next_deadline(), self.b.next_deadline()) if t is not None]
        if self._flight:
            times.append(self._flight[0][0])
        if not times:
            return False
        self.now = max(self.now, min(times))
        flight = self._flight
        if flight and flight[0][0] <= self.now:
            layer = flight[0][2]
            if self.batch > 1:
                layer.begin_batch()
            run: list[bytes] = []
            for _ in range(self.batch):
                _, _, _, src, dst, data = heapq.heappop(flight)
                if self.runs:
                    run.append(data)  # a wire joins two addresses: one run per batch
                else:
                    layer.input(src, dst, data, self.now)
                if not flight or flight[0][0] > self.now or flight[0][2] is not layer:
                    break
            if run:
                layer.input_run(src, dst, run, 0, self.now)
            if self.batch > 1:
                layer.end_batch(self.now)
        else:
            self.a.tick(self.now)
            self.b.tick(self.now)
        self._flush()
        return True

    def run(
        self,
        until: Callable[[], bool] | None = None,
        *,
        pump: Callable[[], object] | None = None,
        for_time: float | None = None,
        max_steps: int = 2_000_000,
    ) -> bool:
        """Step until `until()` holds (True), time has advanced by `for_time` or nothing is
        left to do (False). `pump` plays the applications before every step."""
        stop = None if for_time is None else self.now + for_time
        for _ in range(max_steps):
            if pump is not None:
                pump()
            self._flush()  # what the test's own calls made the layers send
            if until is not None and until():
                return True
            if stop is not None and self._next_time() > stop:
                self.now = max(self.now, stop)
                return False
            if not self.step():
                return False
        raise AssertionError(f"still running after {max_steps} steps")

    def _next_time(self) -> float:
        times = [t for t in (self.a.next_deadline(), self.b.next_deadline()) if t is not None]
        if self._flight:
            times.append(self._flight[0][0])
        return min(times, default=float("inf"))

    def connect(self, port: int = 80, backlog: int = 16) -> tuple[Connection, Connection]:
        """A connection from a to b's `port`, established and accepted."""
        listener = self.b.listener(port) or self.b.listen(port, backlog)
        client = self.a.connect(B_IP, port, self.now)
        assert self.run(lambda: client.state_name == "ESTABLISHED" and listener.ready > 0)
        server = listener.accept()
        assert server is not None
        return client, server


class RawPeer:
    """The remote end of `layer`, played by hand: segments are built here and what the layer
    answers is parsed for the test to look at."""

    def __init__(self, layer: TcpLayer, ip: bytes = B_IP, port: int = 4000) -> None:
        self.layer = layer
        self.ip = ip
        self.port = port
        self.now = 0.0

    def send(
        self,
        to_port: int,
        seq: int,
        ack: int,
        flags: int = ACK,
        payload: bytes = b"",
        window: int = 65535,
        options: bytes = b"",
    ) -> None:
        data = build_segment(
            self.ip,
            self.layer.local_ip,
            self.port,
            to_port,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            flags,
            window,
            options,
            payload,
        )
        self.layer.input(self.ip, self.layer.local_ip, data, self.now)

    def take(self) -> list[Segment]:
        """What the layer sent since last asked."""
        segments = []
        for dst, src, data in self.layer.take_output():
            assert dst == self.ip
            seg = parse_segment(src, dst, data)
            assert seg is not None
            segments.append(seg)
        return segments

    def run_for(self, seconds: float) -> list[tuple[float, Segment]]:
        """Let fake time pass; what the layer sent meanwhile, with the time it did."""
        sent: list[tuple[float, Segment]] = []
        end = self.now + seconds
        while True:
            deadline = self.layer.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.layer.tick(self.now)
            sent.extend((self.now, seg) for seg in self.take())
        self.now = end
        return sent

    def advance(self, seconds: float) -> None:
        """Let fake time pass, firing the layer's timers on the way."""
        end = self.now + seconds
        while True:
            deadline = self.layer.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.layer.tick(self.now)
        self.now = end


PEER_ISN = 7_000_000


def raw_client(
    *, mss: int = 1000, window: int = 65535, config: TcpConfig | None = None, sack: bool = False
) -> tuple[TcpLayer, RawPeer, Connection]:
    """Layer A connects to a raw peer whose SYN-ACK offers an MSS and nothing else (no
    timestamps or window scaling; SACK if `sack`), then checks the connection is up."""
    layer = TcpLayer(seeded(1), config, A_IP)
    peer = RawPeer(layer)
    conn = layer.connect(B_IP, peer.port, peer.now)
    (syn,) = peer.take()
    options = syn_options(mss, -1, sack, None)
    peer.send(conn.local_port, PEER_ISN, syn.seq + 1, SYN | ACK, window=window, options=options)
    (ack,) = peer.take()
    assert conn.state_name == "ESTABLISHED" and ack.flags == ACK
    return layer, peer, conn


# The harness itself.
