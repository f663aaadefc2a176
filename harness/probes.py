"""Probes the host sends to a workload to learn when it serves: the first reply is the time.

The probe runs on its own thread from before the launch call, so a reply that arrives while the
launch call still blocks is timed when it arrives.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from hostkit.namespaces import entered

PROBE_INTERVAL = 0.001  # a datagram a millisecond bounds the probe's own error to 1 ms
GONE_CHECK = 0.2  # seconds between looks at whether the workload has ended


class UdpEchoProbe:
    """Sends numbered datagrams to address until one comes back, or until the deadline."""

    def __init__(
        self,
        address: tuple[str, int],
        deadline: float,
        interval: float = PROBE_INTERVAL,
        namespace: str | None = None,
    ):
        self.address = address
        self.namespace = namespace  # the network namespace the workload is reached from
        self.deadline = deadline
        self.interval = interval
        self.sent = 0
        self._replied_at: float | None = None
        self._done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, name=f"probe-{address}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def __enter__(self) -> UdpEchoProbe:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _probe(self) -> None:
        try:
            with entered(self.namespace):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except BaseException:
            self._done.set()
            raise
        with sock:
            sock.settimeout(self.interval)
            try:
                while not self._stop.is_set() and time.perf_counter() < self.deadline:
                    payload = b"unibench-probe %d" % self.sent
                    try:
                        sock.sendto(payload, self.address)
                        self.sent += 1
                        reply, _ = sock.recvfrom(2048)
                    except TimeoutError:
                        continue  # nobody listening yet: the service is not up
                    except ConnectionRefusedError:
                        self._stop.wait(self.interval)  # the same, reported at once
                        continue
                    if reply.startswith(b"unibench-probe "):
                        self._replied_at = time.perf_counter()
                        return
            finally:
                self._done.set()

    def wait(self, gone: Callable[[], bool] | None = None) -> float:
        """The time of the first reply; raises TimeoutError if none came before the deadline,
        or as soon as `gone()` says the workload has ended (no reply can come then)."""
        end = max(self.deadline, time.perf_counter()) + 1
        while not self._done.wait(min(GONE_CHECK, max(0.0, end - time.perf_counter()))):
            if gone is not None and gone():
                if self._done.wait(GONE_CHECK):  # a reply sent as it ended, still on its way
                    break
                self._stop.set()
                raise TimeoutError(f"{self._no_reply()}: the workload ended without answering")
            if time.perf_counter() >= end:
                break
        if self._replied_at is None:
            raise TimeoutError(self._no_reply())
        return self._replied_at

    def _no_reply(self) -> str:
        return (
            f"no reply to {self.sent} UDP echo probes sent to {self.address[0]}:{self.address[1]}"
        )
