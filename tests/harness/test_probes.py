"""The UDP echo probe against real sockets on loopback: a reply's time, a deadline kept, and a
workload that ends without answering reported at once rather than at the deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from harness.probes import UdpEchoProbe


@pytest.fixture
def echo() -> Iterator[tuple[tuple[str, int], threading.Event]]:
    """A UDP echo server on loopback that answers once `answering` is set."""
    answering = threading.Event()
    stop = threading.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)

    def serve() -> None:
        while not stop.is_set():
            try:
                payload, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            if answering.is_set():
                sock.sendto(payload, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname(), answering
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def test_the_first_reply_is_the_time(echo: tuple[tuple[str, int], threading.Event]) -> None:
    address, answering = echo
    with UdpEchoProbe(address, time.perf_counter() + 10) as probe:
        probe.start()
        time.sleep(0.2)
        began = time.perf_counter()
        answering.set()
        served = probe.wait(gone=lambda: False)
    assert began <= served < began + 5
    assert probe.sent > 1  # it kept asking while nobody answered


def test_no_reply_by_the_deadline_is_a_timeout(
    echo: tuple[tuple[str, int], threading.Event],
) -> None:
    address, _ = echo
    began = time.perf_counter()
    with UdpEchoProbe(address, began + 0.5) as probe:
        probe.start()
        with pytest.raises(TimeoutError, match=r"no reply to \d+ UDP echo probes"):
            probe.wait()
    assert 0.5 <= time.perf_counter() - began < 5


def test_a_workload_that_ends_without_answering_fails_at_once_not_at_the_deadline(
    echo: tuple[tuple[str, int], threading.Event],
) -> None:
    address, _ = echo
    began = time.perf_counter()
    ended = began + 0.3
    with UdpEchoProbe(address, began + 60) as probe:
        probe.start()
        with pytest.raises(TimeoutError, match="ended without answering"):
            probe.wait(gone=lambda: time.perf_counter() > ended)
    assert time.perf_counter() - began < 10  # not the 60 s deadline


def test_a_reply_sent_as_the_workload_ends_still_counts(
    echo: tuple[tuple[str, int], threading.Event],
) -> None:
    address, answering = echo
    answering.set()
    with UdpEchoProbe(address, time.perf_counter() + 60) as probe:
        probe.start()
        served = probe.wait(gone=lambda: True)  # gone from the first look, yet it answered
    assert served > 0
