"""blkfront's data path against a fake blkback over a bytearray disk: request layout, I/Os split
into requests of 11 pages, each I/O in a run of pages of its own (first fit, never stuck for
good however fragmented), answers in any order, errors, lost events and indices that wrap at
2**32."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unikernel.drivers.xen import blkif
from unikernel.drivers.xen.blkif import BlkfrontQueue, BlockIo
from unikernel.drivers.xen.ring import RingError

from .fake_backend import FakeBlkback, Grants

U32 = 2**32
KIB = 1024


def make_with_grefs(
    pages: int = 64,
    *,
    disk: int = 1024 * KIB,
    start: int = 0,
    flush: bool = True,
    indirect: tuple[int, int] = (0, blkif.MAX_SEGMENTS),
) -> tuple[BlkfrontQueue, FakeBlkback, list[int]]:
    """A queue over `pages` data pages side by side, each with its own gref (the grefs are
    not contiguous), and a fake blkback over a zeroed disk; the data pages' grefs.
    `indirect`: (indirect pages, segments per indirect request)."""
    grants = Grants()
    ring, _ = grants.page()
    data, grefs = grants.run(pages)
    indirect_pages, max_segments = indirect
    pool, pool_grefs = grants.run(indirect_pages) if indirect_pages else (None, [])
    queue = BlkfrontQueue(
        ring,
        data,
        grefs,
        handle=5,
        start=start,
        indirect=pool,
        indirect_grefs=pool_grefs,
        max_segments=max_segments,
    )
    back = FakeBlkback(ring, grants, bytearray(disk), flush_supported=flush)
    return queue, back, grefs


def make(
    pages: int = 64,
    *,
    disk: int = 1024 * KIB,
    start: int = 0,
    flush: bool = True,
    indirect: tuple[int, int] = (0, blkif.MAX_SEGMENTS),
) -> tuple[BlkfrontQueue, FakeBlkback]:
    queue, back, _ = make_with_grefs(pages, disk=disk, start=start, flush=flush, indirect=indirect)
    return queue, back


def pattern(length: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(length)


def run(queue: BlkfrontQueue, back: FakeBlkback, **answer: object) -> list[BlockIo]:
    back.take()
    back.answer(**answer)  # type: ignore[arg-type]
    return queue.complete()


def submitted(result: tuple[BlockIo, bool] | None) -> BlockIo:
    assert result is not None
    return result[0]


def read(queue: BlkfrontQueue, back: FakeBlkback, offset: int, length: int) -> bytes:
    io = submitted(queue.submit(blkif.OP_READ, offset, length))
    assert run(queue, back) == [io]
    into = bytearray(length)
    assert queue.read_out(io, into) == blkif.STATUS_OKAY
    return bytes(into)


def test_slot_layouts_and_ring_size_match_blkif_h() -> None:
    assert (blkif.REQUEST.size, blkif.SEGMENT.size, blkif.SLOT) == (24, 8, 112)
    assert blkif.RING_SIZE == 32
    response = blkif.RESPONSE.pack(7, blkif.OP_WRITE, blkif.STATUS_EOPNOTSUPP)
    assert response[8] == 1 and response[10:12] == b"\xfe\xff"  # op @8, status @10


def test_a_one_sector_write_is_one_request_and_reads_back() -> None:
    queue, back = make()
    io, notify = queue.submit(blkif.OP_WRITE, 3 * 512, 512, b"w" * 512) or pytest.fail()
    assert notify is True
    slot = back.ring.slot(0)
    op, count, handle, _, request_id, sector = blkif.REQUEST.unpack_from(slot)
    assert (op, count, handle, request_id, sector) == (blkif.OP_WRITE, 1, 5, io.ids[0], 3)
    gref, first, last = blkif.SEGMENT.unpack_from(slot, 24)
    assert (first, last) == (0, 0)
    assert back.grants.pages[gref][:512] == b"w" * 512, "the data is in the page when published"
    assert run(queue, back) == [io]
    assert io.status == blkif.STATUS_OKAY
    assert back.disk[1536:2048] == b"w" * 512
    assert read(queue, back, 3 * 512, 512) == b"w" * 512


def test_a_large_io_goes_as_requests_of_at_most_11_pages() -> None:
    queue, back = make()
    length = 100 * KIB + 512  # 26 pages, the last with one sector
    data = pattern(length)
    io = submitted(queue.submit(blkif.OP_WRITE, 8 * KIB + 512, length, data))
    assert len(io.ids) == 3
    assert run(queue, back) == [io]
    assert back.segments_seen == [11, 11, 4]
    last = blkif.SEGMENT.unpack_from(back.ring.slot(2), 24 + 3 * 8)
    assert last[1:] == (0, 0)
    assert back.disk[8 * KIB + 512 :][:length] == data
    assert read(queue, back, 8 * KIB + 512, length) == data
    assert queue.free_pages() == 64


def test_with_indirect_pages_a_large_io_goes_as_indirect_requests_of_max_segments() -> None:
    queue, back = make(indirect=(32, 32))
    assert queue.max_segments == 32 and queue.max_io == 64 * 4096  # all the data pages
    length = 160 * KIB + 512  # 41 pages, the last with one sector: 32 + 9
    data = pattern(length)
    io = submitted(queue.submit(blkif.OP_WRITE, 4 * KIB, length, data))
    slot = back.ring.slot(1)
    op, real_op, count, _, request_id, sector, handle, _, gref = blkif.INDIRECT.unpack_from(slot)
    assert (op, real_op, count, handle) == (blkif.OP_INDIRECT, blkif.OP_WRITE, 9, 5)
    assert (request_id, sector) == (io.ids[1], (4 * KIB + 32 * 4096) // 512)
    last = blkif.SEGMENT.unpack_from(back.grants.pages[gref], 8 * 8)
    assert last[1:] == (0, 0), "the partial last page is patched in the indirect page"
    assert run(queue, back) == [io]
    assert (back.segments_seen, back.indirect_seen) == ([32, 9], 2)
    assert back.disk[4 * KIB :][:length] == data
    assert read(queue, back, 4 * KIB, length) == data
    assert back.indirect_seen == 4


def test_with_indirect_pages_small_ios_still_go_in_the_slot() -> None:
    queue, back = make(indirect=(32, 32))
    io = submitted(queue.submit(blkif.OP_WRITE, 0, 44 * KIB, pattern(44 * KIB)))
    assert run(queue, back) == [io]
    assert (back.segments_seen, back.indirect_seen) == ([11], 0)


def test_indirect_requests_wait_for_an_indirect_page_then_go() -> None:
    queue, back = make(indirect=(1, 16))
    first = submitted(queue.submit(blkif.OP_READ, 0, 64 * KIB))  # 16 pages: one request
    assert queue.submit(blkif.OP_READ, 64 * KIB, 64 * KIB) is None, "its page is taken"
    small = submitted(queue.submit(blkif.OP_READ, 128 * KIB, 4 * KIB))  # needs none
    assert set(run(queue, back)) == {first, small}
    assert queue.submit(blkif.OP_READ, 64 * KIB, 64 * KIB) is not None


def test_indirect_settings_are_checked() -> None:
    grants = Grants()
    ring, _ = grants.page()
    data, grefs = grants.run(4)
    for wrong in (10, 513):
        with pytest.raises(ValueError, match="max_segments"):
            BlkfrontQueue(ring, data, grefs, max_segments=wrong)
    with pytest.raises(ValueError, match="at least one indirect page"):
        BlkfrontQueue(ring, data, grefs, max_segments=32)
    with pytest.raises(ValueError, match="indirect grant references"):
        BlkfrontQueue(ring, data, grefs, indirect=bytearray(4096), indirect_grefs=[1, 2])


def test_misaligned_or_malformed_requests_are_refused() -> None:
    queue, _ = make()
    for offset, length in ((100, 512), (512, 1000), (0, 0), (-512, 512)):
        with pytest.raises(ValueError, match="512-byte sectors"):
            queue.submit(blkif.OP_READ, offset, length)
    with pytest.raises(ValueError, match="needs 1024 bytes"):
        queue.submit(blkif.OP_WRITE, 0, 1024, b"x" * 512)
    with pytest.raises(ValueError, match="takes no data"):
        queue.submit(blkif.OP_READ, 0, 512, b"x" * 512)
    with pytest.raises(ValueError, match="no offset"):
        queue.submit(blkif.OP_FLUSH_DISKCACHE, 0, 512)
    with pytest.raises(ValueError, match="unsupported"):
        queue.submit(5, 0, 512)
    with pytest.raises(ValueError, match="at most"):
        queue.submit(blkif.OP_READ, 0, queue.max_io + 512)
    assert queue.ring.unpublished() == 0 and queue.free_pages() == 64


def test_an_io_waits_for_free_pages_then_goes() -> None:
    queue, back = make(pages=12)
    first = submitted(queue.submit(blkif.OP_READ, 0, 40 * KIB))  # 10 pages
    assert queue.submit(blkif.OP_READ, 0, 12 * KIB) is None
    assert run(queue, back) == [first]
    assert queue.submit(blkif.OP_READ, 0, 12 * KIB) is None, "a read keeps its pages"
    queue.release(first)
    assert queue.submit(blkif.OP_READ, 0, 12 * KIB) is not None


def test_a_full_ring_refuses_more_requests() -> None:
    queue, back = make(pages=40)
    for i in range(32):
        assert queue.submit(blkif.OP_READ, i * 512, 512) is not None
    assert queue.submit(blkif.OP_READ, 0, 512) is None
    assert queue.free_pages() == 8
    back.take()
    back.answer(count=1)
    queue.complete()
    assert queue.submit(blkif.OP_FLUSH_DISKCACHE) is not None


def test_answers_out_of_order_complete_each_io_when_all_its_requests_are_done() -> None:
    queue, back = make(pages=64, start=U32 - 2)
    big = submitted(queue.submit(blkif.OP_WRITE, 0, 88 * KIB, pattern(88 * KIB, 1)))
    small = submitted(queue.submit(blkif.OP_WRITE, 128 * KIB, 4 * KIB, pattern(4 * KIB, 2)))
    back.take()
    back.unanswered.reverse()  # small first, then big's second request, then its first
    back.answer(count=2)
    assert queue.complete() == [small]
    assert not big.done and big.pending == 1
    back.answer()
    assert queue.complete() == [big]
    assert read(queue, back, 0, 88 * KIB) == pattern(88 * KIB, 1)


def test_a_failed_read_reports_its_status_and_copies_nothing() -> None:
    queue, back = make(disk=64 * KIB)
    io = submitted(queue.submit(blkif.OP_READ, 60 * KIB, 8 * KIB))  # past the end
    assert run(queue, back) == [io]
    into = bytearray(b"\xaa" * 8 * KIB)
    assert queue.read_out(io, into) == blkif.STATUS_ERROR
    assert into == b"\xaa" * 8 * KIB
    assert queue.free_pages() == 64


def test_one_failed_request_fails_the_whole_io() -> None:
    queue, back = make()
    io = submitted(queue.submit(blkif.OP_WRITE, 0, 48 * KIB, pattern(48 * KIB)))
    back.take()
    back.answer(count=1, status=blkif.STATUS_ERROR)
    back.answer(count=1)  # a later success does not hide the failure
    assert queue.complete() == [io]
    assert io.status == blkif.STATUS_ERROR
    assert queue.free_pages() == 64


@pytest.mark.parametrize(
    ("supported", "status"), [(True, blkif.STATUS_OKAY), (False, blkif.STATUS_EOPNOTSUPP)]
)
def test_a_flush_is_one_request_without_segments(supported: bool, status: int) -> None:
    queue, back = make(flush=supported)
    io = submitted(queue.submit(blkif.OP_FLUSH_DISKCACHE))
    assert run(queue, back) == [io]
    assert (back.segments_seen, io.status) == ([0], status)


def test_a_response_to_no_request_or_another_operation_breaks_the_ring() -> None:
    queue, back = make()
    queue.submit(blkif.OP_READ, 0, 512)
    back.take()
    back.unanswered[0].id = 99
    back.answer()
    with pytest.raises(RingError, match="request 99"):
        queue.complete()
    queue, back = make()
    queue.submit(blkif.OP_READ, 0, 512)
    back.take()
    back.unanswered[0].op = blkif.OP_WRITE
    back.answer()
    with pytest.raises(RingError, match="answered as 1"):
        queue.complete()


def test_a_second_response_to_one_request_breaks_the_ring() -> None:
    queue, back = make()
    queue.submit(blkif.OP_READ, 0, 48 * KIB)  # two requests
    back.take()
    back.unanswered[1].id = back.unanswered[0].id
    back.answer()
    with pytest.raises(RingError, match="not in flight"):
        queue.complete()


def test_pages_are_released_once_and_only_when_done() -> None:
    queue, back = make()
    io = submitted(queue.submit(blkif.OP_READ, 0, 8 * KIB))
    with pytest.raises(ValueError, match="in flight"):
        queue.release(io)
    with pytest.raises(ValueError, match="not a finished read"):
        queue.read_out(io, bytearray(8 * KIB))
    run(queue, back)
    queue.read_out(io, bytearray(8 * KIB))
    with pytest.raises(ValueError, match="already"):
        queue.read_out(io, bytearray(8 * KIB))
    queue.release(io)
    assert queue.free_pages() == 64


def test_the_data_pages_are_one_writable_view_with_a_gref_for_each_page() -> None:
    grants = Grants()
    ring, _ = grants.page()
    data, grefs = grants.run(4)
    with pytest.raises(ValueError, match="at least one"):
        BlkfrontQueue(ring, bytearray(), [])
    with pytest.raises(ValueError, match="one writable view"):
        BlkfrontQueue(ring, data, grefs[:3])
    with pytest.raises(ValueError, match="one writable view"):
        BlkfrontQueue(ring, bytes(4 * 4096), grefs)  # type: ignore[arg-type]
    queue = BlkfrontQueue(ring, data, grefs)
    assert (queue.max_io, queue.free_pages(), queue.largest_free_run()) == (16 * KIB, 4, 4)
    queue.close()
    data[0] = 1  # the caller's view is the caller's: close() released only the queue's own


def test_a_write_lands_in_its_run_each_page_under_its_own_gref() -> None:
    queue, back, grefs = make_with_grefs(pages=32)
    held = submitted(queue.submit(blkif.OP_READ, 0, 12 * KIB))  # pages 0..2, until read out
    length = 13 * 4096 + 1536  # 14 pages, the last with 3 sectors: two requests
    data = pattern(length, 3)
    io = submitted(queue.submit(blkif.OP_WRITE, 64 * KIB, length, data))
    assert (held.first, held.count, io.first, io.count) == (0, 3, 3, 14)
    back.take()
    _, first, second = back.unanswered
    assert (first.sector, second.sector) == (128, 128 + 88)
    segments = first.segments + second.segments
    assert segments == [(g, 0, 7) for g in grefs[3:16]] + [(grefs[16], 0, 2)]
    for k, (gref, _, last) in enumerate(segments):
        chunk = data[k * 4096 : (k + 1) * 4096]
        assert len(chunk) == (last + 1) * 512
        assert back.grants.pages[gref][: len(chunk)] == chunk, f"page {k} of the write"
    back.answer()
    assert queue.complete() == [held, io]
    assert back.disk[64 * KIB :][:length] == data
    assert queue.free_pages() == 29, "the read holds its pages until read out"
    queue.release(held)
    assert read(queue, back, 64 * KIB, length) == data


def test_each_io_takes_the_first_run_of_free_pages_long_enough() -> None:
    queue, back = make(pages=16)
    a, b, c, d = [submitted(queue.submit(blkif.OP_READ, i * 16 * KIB, 16 * KIB)) for i in range(4)]
    assert [io.first for io in (a, b, c, d)] == [0, 4, 8, 12]
    run(queue, back)
    queue.release(b)
    queue.release(d)
    assert (queue.free_pages(), queue.largest_free_run()) == (8, 4)
    assert queue.submit(blkif.OP_READ, 0, 32 * KIB) is None, "8 pages free, not side by side"
    small = submitted(queue.submit(blkif.OP_READ, 0, 4 * KIB))
    assert small.first == 4, "the first run that fits"
    queue.release(a)
    assert queue.submit(blkif.OP_READ, 0, 32 * KIB) is None
    assert run(queue, back) == [small]
    queue.release(small)
    big = submitted(queue.submit(blkif.OP_READ, 0, 32 * KIB))
    assert (big.first, big.count, queue.free_pages()) == (0, 8, 4)


SIZES = st.one_of(st.integers(1, 16), st.integers(100, 512))  # sectors: small, and large


# (indirect pages, segments per request): none; a page per ring slot; too few pages
INDIRECT = st.sampled_from([(0, 11), (32, 32), (2, 24)])


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(SIZES, min_size=1, max_size=40), seed=st.integers(0, 2**16), indirect=INDIRECT
)
def test_small_ios_among_large_ones_never_leave_one_stuck(
    sizes: list[int], seed: int, indirect: tuple[int, int]
) -> None:
    """However fragmented the pages get, an I/O refused waits only for others to finish:
    with nothing in flight and no read holding pages, every page is free."""
    pages = 64  # max_io: 256 KiB, 512 sectors
    queue, back = make(pages, disk=512 * KIB, indirect=indirect)
    rng = random.Random(seed)
    unread: list[BlockIo] = []  # finished reads whose pages are held until read out

    def progress() -> None:
        back.take()
        if unread and (not back.unanswered or rng.random() < 0.5):
            io = unread.pop(rng.randrange(len(unread)))
            if rng.random() < 0.5:
                queue.read_out(io, bytearray(io.length))
            else:
                queue.release(io)
            return
        assert back.unanswered, "refused with every page free: it would never go"
        back.answer(rng.randint(1, len(back.unanswered)), rng)
        unread.extend(io for io in queue.complete() if io.op == blkif.OP_READ)

    for sectors in sizes:
        length = min(sectors * 512, queue.max_io)
        offset = rng.randrange(0, 512 * KIB - length + 1, 512)
        writing = rng.random() < 0.5
        data = rng.randbytes(length) if writing else None
        op = blkif.OP_WRITE if writing else blkif.OP_READ
        while (result := queue.submit(op, offset, length, data)) is None:
            if not queue.ring.in_flight() and not unread:
                pytest.fail(f"{length} bytes refused with nothing in flight or held")
            progress()
        io, _ = result
        assert io.count == -(-length // 4096)
        assert queue.largest_free_run() <= queue.free_pages()
    while queue.ring.in_flight() or unread:
        progress()
    assert queue.free_pages() == queue.largest_free_run() == pages


def test_without_events_the_final_check_still_finds_the_answers() -> None:
    queue, back = make()
    back.drop = True
    io = submitted(queue.submit(blkif.OP_WRITE, 0, 512, b"z" * 512))
    assert queue.complete() == []
    queue.ring.arm_response_event()
    back.take()
    back.answer()
    assert back.events == 0
    assert queue.ring.has_responses()
    assert queue.complete() == [io]


DISK = 128 * KIB
OPS = st.tuples(st.booleans(), st.integers(0, DISK // 512 - 1), st.integers(1, 256))


@settings(max_examples=150, deadline=None)
@given(
    start=st.sampled_from([0, U32 - 5, U32 - 40]),
    pages=st.integers(1, 40),
    ops=st.lists(OPS, max_size=25),
    seed=st.integers(0, 2**16),
    drop=st.booleans(),
    indirect=INDIRECT,
)
def test_a_back_end_answering_in_any_order_still_yields_the_data_written(
    start: int,
    pages: int,
    ops: list[tuple[bool, int, int]],
    seed: int,
    drop: bool,
    indirect: tuple[int, int],
) -> None:
    """Writes and reads in flight together (never overlapping, whose order is undefined) with
    answers shuffled and events lost: each read sees the writes before it, and the disk ends
    as the model."""
    queue, back = make(pages, disk=DISK, start=start, indirect=indirect)
    pages_per_request = indirect[1]
    back.drop = drop
    rng = random.Random(seed)
    model = bytearray(DISK)
    in_flight: dict[int, tuple[BlockIo, bytes | None]] = {}  # first id -> (io, a read's data)

    def progress() -> None:
        assert in_flight, "refused with nothing in flight: it would never go"
        back.take()
        events = back.events
        count = rng.randint(1, len(back.unanswered)) if back.unanswered else 0
        if back.answer(count, rng) and not drop:
            assert back.events == events + 1, "the front armed rsp_event: an event is due"
        queue.ring.arm_response_event()
        if not queue.ring.has_responses():
            return
        for io in queue.complete():
            _, expected = in_flight.pop(io.ids[0])
            assert io.status == blkif.STATUS_OKAY
            if expected is not None:
                into = bytearray(io.length)
                queue.read_out(io, into)
                assert into == expected
        queue.ring.arm_response_event()

    def overlaps(lo: int, hi: int) -> bool:
        return any(lo < io.offset + io.length and io.offset < hi for io, _ in in_flight.values())

    for writing, sector, count in ops:
        lo = sector * 512
        length = min(count * 512, DISK - lo, queue.max_io)
        data = rng.randbytes(length) if writing else None
        while True:
            if not overlaps(lo, lo + length):
                op = blkif.OP_WRITE if writing else blkif.OP_READ
                result = queue.submit(op, lo, length, data)
                if result is not None:
                    break
                needed = -(-length // 4096)
                per = pages_per_request if needed > 11 else 11
                assert (
                    queue.largest_free_run() < needed
                    or queue.ring.free_requests() < -(-needed // per)
                    or per > 11  # or no indirect page is free (the queue does not say)
                )
            progress()
        io, _ = result
        needed = -(-length // 4096)
        assert len(io.ids) == -(-needed // (pages_per_request if needed > 11 else 11))
        if data is not None:
            model[lo : lo + length] = data
        in_flight[io.ids[0]] = (io, None if writing else bytes(model[lo : lo + length]))
    while in_flight:
        progress()
    assert back.disk == model
    assert queue.free_pages() == queue.largest_free_run() == pages
    assert all(count <= pages_per_request for count in back.segments_seen)
