"""Microbenchmarks of netfront's data path, per batch of frames: receive (the back end answers
`n` posted buffers, `NetfrontQueues.receive()` copies the frames out and posts the buffers
again), transmit and reclaim (`transmit()`, the back end answers, `reclaim_tx()`), and a
wakeup of the driver (`Netfront.read_batch()` with its final check, over a stub event channel).

The back ends here are echoes that do no per-frame Python work (one strided store per batch),
so that the front end's own cost shows. Run them with
`pytest tests/unikernel/xen/test_netif_bench.py --benchmark-enable`; by default
(--benchmark-disable) each body runs once, as a test. Divide by the batch for a frame's cost.
"""

from __future__ import annotations

from array import array
from types import SimpleNamespace
from typing import Any

import pytest

from unikernel.drivers.xen import netif
from unikernel.drivers.xen.netfront import Netfront
from unikernel.drivers.xen.netif import NetfrontQueues
from unikernel.drivers.xen.ring import HEADER_SIZE, BackRing

from .fake_backend import Grants

FRAME = 1514  # a full TCP segment's frame
BATCHES = (1, 32, 256)
MASK = 0xFFFFFFFF


def _pieces(index: int, count: int, size: int = 256) -> list[tuple[int, int]]:
    """The slots of `count` ring entries from `index`: (first slot, how many), two at the wrap."""
    first = index & (size - 1)
    head = min(count, size - first)
    return [(first, head), (0, count - head)] if head < count else [(first, head)]


class RxEcho:
    """Answers posted rx requests in order, with the frame already in each buffer: it writes
    flags and status over each request's gref (the id stays, offset = pad = 0)."""

    def __init__(self, page: memoryview, size: int, flags: int) -> None:
        self.ring = BackRing(page, netif.RX_SLOT)
        region = page[HEADER_SIZE : HEADER_SIZE + 256 * netif.RX_SLOT]
        self.words = region.cast("I")  # two per slot
        self.answer = memoryview(array("I", [flags | size << 16] * 256))

    def deliver(self, count: int) -> None:
        ring = self.ring
        assert ring.unconsumed_requests() >= count
        for slot, n in _pieces(ring.req_cons, count):
            self.words[2 * slot + 1 : 2 * (slot + n) : 2] = self.answer[:n]
        ring.req_cons = ring.rsp_prod_pvt = (ring.req_cons + count) & MASK
        ring.push_responses()


class TxEcho:
    """Answers every tx request OKAY, in order, without looking at the frames."""

    def __init__(self, page: memoryview) -> None:
        self.ring = BackRing(page, netif.TX_SLOT)
        region = page[HEADER_SIZE : HEADER_SIZE + 256 * netif.TX_SLOT]
        self.halves = region.cast("H")  # six per slot; the request's id is the fifth
        self.zeros = memoryview(array("H", bytes(512)))

    def answer(self) -> int:
        ring = self.ring
        count = ring.unconsumed_requests()
        halves = self.halves
        for slot, n in _pieces(ring.req_cons, count):
            ids = memoryview(halves[6 * slot + 4 : 6 * (slot + n) : 6].tobytes()).cast("H")
            halves[6 * slot : 6 * (slot + n) : 6] = ids
            halves[6 * slot + 1 : 6 * (slot + n) : 6] = self.zeros[:n]
        ring.req_cons = ring.rsp_prod_pvt = (ring.req_cons + count) & MASK
        ring.push_responses()
        return count


def _queues(grants: Grants) -> tuple[NetfrontQueues, memoryview, memoryview, list[bytes]]:
    tx_ring, _ = grants.page()
    rx_ring, _ = grants.page()
    rx_buffers = grants.pages_(256)
    frames = []
    for i, (page, _) in enumerate(rx_buffers):
        frame = bytes([i]) * FRAME
        page[:FRAME] = frame
        frames.append(frame)
    queues = NetfrontQueues(tx_ring, rx_ring, rx_buffers, grants.pages_(128))
    queues.post_all_rx()
    return queues, tx_ring, rx_ring, frames


def _group(name: str, batch: int) -> Any:
    return pytest.param(batch, id=f"{name}-{batch}", marks=pytest.mark.benchmark(group=name))


@pytest.mark.parametrize("batch", [_group("receive", b) for b in BATCHES])
def test_receive_a_batch(benchmark: Any, batch: int) -> None:
    queues, _, rx_ring, frames = _queues(Grants())
    back = RxEcho(rx_ring, FRAME, netif.NETRXF_DATA_VALIDATED)

    def round_() -> list[bytes]:
        back.deliver(batch)
        got, vouched, _ = queues.receive(256)
        assert len(got) == batch and vouched == (1 << batch) - 1
        return got

    got = benchmark(round_)
    assert all(frame in frames for frame in got)
    assert back.ring.unconsumed_requests() == 256  # every buffer posted again
    assert queues.rx_errors == queues.rx_chains_dropped == 0


@pytest.mark.parametrize("batch", [_group("transmit+reclaim", b) for b in BATCHES])
def test_transmit_and_reclaim_a_batch(benchmark: Any, batch: int) -> None:
    queues, tx_ring, _, _ = _queues(Grants())
    back = TxEcho(tx_ring)
    frames = [bytes([i % 256]) * FRAME for i in range(batch)]

    def round_() -> None:
        assert queues.transmit(frames)[0] == batch
        back.answer()
        assert queues.reclaim_tx() == batch

    benchmark(round_)
    assert queues.tx_in_flight() == 0 and queues.tx_errors == 0


class StubChannels:
    """The event channel device, as read_batch() uses it: always an event, no system calls."""

    def pending(self) -> bool:
        return True

    def unmask(self, port: int) -> None:
        pass

    def notify(self, port: int) -> None:
        pass


@pytest.mark.parametrize("batch", [_group("read_batch", b) for b in BATCHES])
def test_a_wakeup_of_the_driver(benchmark: Any, batch: int) -> None:
    queues, _, rx_ring, _ = _queues(Grants())
    back = RxEcho(rx_ring, FRAME, 0)
    held: Any = SimpleNamespace(released=False, evtchn=StubChannels())
    netfront = Netfront(
        held, queues, 3, bytes(6), name="0", backend="backend/vif/0/0", backend_id=0, handle=0
    )

    def round_() -> None:
        back.deliver(batch)
        assert len(netfront.read_batch(256)) == batch

    benchmark(round_)
    assert netfront.rescues == 0
