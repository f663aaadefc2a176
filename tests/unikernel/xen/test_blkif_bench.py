"""Microbenchmarks of blkfront's data path (blkif.BlkfrontQueue): one I/O's round trip, submit,
the back end answering, complete, and for a read read_out, against two back ends: the tests'
fake blkback (which parses every segment and copies every page itself, as blkback would) and
an echo that only answers each request, so that the front end's own cost shows.

Run them with `pytest tests/unikernel/xen/test_blkif_bench.py --benchmark-enable`; by default
(--benchmark-disable) each body runs once, as a test.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from unikernel.drivers.xen import blkif
from unikernel.drivers.xen.blkif import BlkfrontQueue
from unikernel.drivers.xen.ring import BackRing

from .fake_backend import FakeBlkback, Grants

KIB = 1024
PAGES = 1024  # blkfront's pool
DISK = 2 * 1024 * KIB


class Echo:
    """A back end that answers every request OKAY without looking at its pages."""

    def __init__(self, ring_page: memoryview) -> None:
        self.ring = BackRing(ring_page, blkif.SLOT)
        self.taken: list[tuple[int, int]] = []

    def take(self) -> None:
        self.taken.clear()
        while (slot := self.ring.take_request()) is not None:
            op, real_op, _, _, request_id, _ = blkif.REQUEST.unpack_from(slot)
            # An indirect request's operation is its second byte (its count: a u16 after it).
            self.taken.append((request_id, real_op if op == blkif.OP_INDIRECT else op))

    def answer(self) -> None:
        for request_id, op in self.taken:
            blkif.RESPONSE.pack_into(self.ring.next_response(), 0, request_id, op, 0)
        self.ring.push_responses()


def _queue(grants: Grants, ring: memoryview, max_segments: int) -> BlkfrontQueue:
    data, grefs = grants.run(PAGES)
    indirect, indirect_grefs = grants.run(blkif.RING_SIZE)
    return BlkfrontQueue(
        ring,
        data,
        grefs,
        handle=5,
        indirect=indirect,
        indirect_grefs=indirect_grefs,
        max_segments=max_segments,
    )


def _round(
    queue: BlkfrontQueue, back: Any, op: int, length: int, data: bytes | None, into: bytearray
) -> None:
    submitted = queue.submit(op, 64 * KIB, length, data)
    assert submitted is not None
    io = submitted[0]
    back.take()
    back.answer()
    assert queue.complete() == [io]
    if op == blkif.OP_READ:
        queue.read_out(io, into)
    assert io.status == blkif.STATUS_OKAY


def _case(op: int, length: int, backend: str, segments: int) -> Any:
    kind = "read" if op == blkif.OP_READ else "write"
    requests = "indirect" if segments > blkif.MAX_SEGMENTS else "direct"
    return pytest.param(
        op,
        length,
        backend,
        segments,
        id=f"{kind}-{length // KIB}k-{backend}-{requests}",
        marks=pytest.mark.benchmark(group=f"{backend} back end"),
    )


@pytest.mark.parametrize(
    ("op", "length", "backend", "segments"),
    [
        _case(op, length, backend, segments)
        for backend in ("fake", "echo")
        for op in (blkif.OP_READ, blkif.OP_WRITE)
        for length in (128 * KIB, 1024 * KIB)
        for segments in (blkif.MAX_SEGMENTS, 256)  # 256: Linux's blkback's indirect offer
    ],
)
def test_one_io_round_trip(
    benchmark: Any, op: int, length: int, backend: str, segments: int
) -> None:
    grants = Grants()
    ring, _ = grants.page()
    queue = _queue(grants, ring, segments)
    disk = bytearray(random.Random(1).randbytes(DISK))
    back: Any = FakeBlkback(ring, grants, disk) if backend == "fake" else Echo(ring)
    data = random.Random(2).randbytes(length) if op == blkif.OP_WRITE else None
    into = bytearray(length)
    benchmark(_round, queue, back, op, length, data, into)
    if backend == "fake":
        if op == blkif.OP_READ:
            assert into == disk[64 * KIB : 64 * KIB + length]
        else:
            assert data is not None and disk[64 * KIB : 64 * KIB + length] == data
    assert queue.free_pages() == PAGES
