"""Blkfront end to end in our scheduler: bring-up against a fake xenstored and a fake blkback
that follows xenstore as the real one does, data written and read back over the ring, I/O
split and in flight from several threads, answers out of order, failures, lost events."""

from __future__ import annotations

import errno
import random
from typing import Any

import pytest

from tests.unikernel.xen.fake_xen import (
    VBD_BACK,
    VBD_FRONT,
    BlkbackDriver,
    World,
    run_world,
)
from tests.unikernel.xen.fake_xenstored import WRITE
from unikernel.block.interface import BlockError
from unikernel.core.scheduler import now, spawn, yield_
from unikernel.drivers.xen import blkif, frontend
from unikernel.drivers.xen.blkfront import DATA_PAGES, Blkfront, open_blkfront
from unikernel.drivers.xen.frontend import FrontendError

KIB = 1024
DISK = 1024 * KIB


def disk_image(size: int = DISK, seed: int = 1) -> bytearray:
    return bytearray(random.Random(seed).randbytes(size))


async def connect(
    w: World, disk: bytearray, *, data_pages: int = DATA_PAGES, **driver: Any
) -> tuple[Blkfront, BlkbackDriver]:
    back = w.blkback(disk, **driver)
    blk = await open_blkfront(
        xenstore=w.xs,
        evtchn=w.hv.evtchn(),
        grants=w.hv.grant_pool,
        ensure_limit=w.hv.ensure_limit,
        data_pages=data_pages,
    )
    return blk, back


async def read(blk: Blkfront, offset: int, length: int) -> bytes:
    buffer = bytearray(length)
    await blk.read(offset, memoryview(buffer))
    return bytes(buffer)


def test_bring_up_publishes_the_reference_keys_and_reads_the_geometry() -> None:
    async def main(w: World) -> None:
        granted = frontend.granted_pages()
        blk, driver = await connect(w, disk_image())
        try:
            (pool,) = w.hv.pools
            assert driver.channel is not None
            assert w.front_keys(VBD_FRONT) == {
                # libxl's
                "backend": VBD_BACK,
                "backend-id": "0",
                "virtual-device": "51712",
                "device-type": "disk",
                # ours (xen-frontends.md §4)
                "ring-ref": str(pool.grefs[0]),
                "event-channel": str(driver.channel.port),
                "protocol": "x86_64-abi",
                "feature-persistent": "1",
                "state": "4",
            }
            writes = [
                (p.split(b"\0")[0].decode(), p.split(b"\0")[1].decode(), tx)
                for k, p, tx in w.store.requests
                if k == WRITE
            ]
            in_tx = writes[:5]
            assert len({tx for *_, tx in in_tx}) == 1 and in_tx[0][2] != 0
            assert in_tx[-1][:2] == ("device/vbd/51712/state", "3")  # Initialised, with the rest
            assert writes[5:] == [("device/vbd/51712/state", "4", 0)]  # once blkback connected
            assert w.store.commits == 1
            # The ring, an indirect page per slot, 4 MiB of data pages: blkback's 1056
            # persistent grants and the ring.
            assert (pool.count, pool.domid) == (1 + 32 + 1024, 0)
            assert w.hv.limit_checks == [granted + 1057]
            assert (blk.capacity, blk.sector_size, blk.read_only) == (DISK, 512, False)
            assert blk.name == "51712" and blk.max_io == 1024 * 4096
            assert driver.states == ["2", "4"]
        finally:
            blk.close()
        assert pool.closed and w.hv.evtchns[0].closed

    run_world(main)


@pytest.mark.parametrize(
    ("indirect", "segments", "indirect_requests"),
    [
        (256, [16, 16, 16, 2], 3),  # a piece is one indirect request; 2 pages go in the slot
        (12, [12, 4, 12, 4, 12, 4, 2], 6),  # a piece of 16 pages: two indirect requests
        (None, [11, 5, 11, 5, 11, 5, 2], 0),  # not offered: 11 pages a request at most
    ],
)
def test_writes_read_back_and_large_ones_are_split(
    indirect: int | None, segments: list[int], indirect_requests: int
) -> None:
    async def main(w: World) -> None:
        disk = bytearray(DISK)
        # At most 64 KiB at once.
        blk, driver = await connect(w, disk, data_pages=16, indirect=indirect)
        back = driver.blkback
        assert back is not None
        try:
            data = random.Random(5).randbytes(200 * KIB)
            await blk.write(4096, memoryview(data))
            assert disk[4096 : 4096 + len(data)] == data and not any(disk[:4096])
            assert blk.requests == 4  # 64 + 64 + 64 + 8 KiB
            assert back.segments_seen == segments
            assert back.indirect_seen == indirect_requests
            assert await read(blk, 4096, len(data)) == data
            assert await read(blk, DISK - 512, 512) == bytes(512)  # the last sector
            await blk.write(DISK - 1024, memoryview(b"\xab" * 1024))
            assert disk[-1024:] == b"\xab" * 1024
            assert blk.counts()["free_pages"] == 16 and blk.counts()["in_flight"] == 0
        finally:
            blk.close()

    run_world(main)


def test_reads_in_flight_from_several_threads_complete_out_of_order() -> None:
    async def main(w: World) -> None:
        disk = disk_image()
        blk, driver = await connect(w, disk)
        back = driver.blkback
        assert back is not None
        back.batch = 8  # answer once eight wait, in a shuffled order
        back.rng = random.Random(3)
        offsets = [(i * 37 % 100) * 8 * KIB for i in range(8)]
        try:
            threads = [spawn(read, blk, offset, 8 * KIB) for offset in offsets]
            results = [await thread.join() for thread in threads]
            assert results == [bytes(disk[o : o + 8 * KIB]) for o in offsets]
            assert back.peak == 8 and len(back.answered) == 8
            assert back.answered != back.taken  # not in the order asked
            assert blk.counts()["free_pages"] == DATA_PAGES
        finally:
            blk.close()

    run_world(main)


def test_small_and_large_ios_from_several_threads_share_the_pages_without_sticking() -> None:
    async def main(w: World) -> None:
        disk = disk_image()
        blk, driver = await connect(w, disk, data_pages=16)  # runs of at most 16 pages
        back = driver.blkback
        assert back is not None
        back.rng = random.Random(6)
        sizes = [4, 64, 8, 60, 0.5, 200, 12, 64, 4, 36, 1, 48]  # KiB; 200 is cut in four
        regions, at = [], 0
        for size in sizes:
            regions.append((at, int(size * KIB)))
            at += int(size * KIB) + 4096
        expected = bytearray(disk)
        writes = {}
        for k, (offset, length) in enumerate(regions):
            if k % 2:
                writes[k] = random.Random(k).randbytes(length)
                expected[offset : offset + length] = writes[k]

        async def io(k: int) -> bytes | None:
            offset, length = regions[k]
            if k in writes:
                await blk.write(offset, memoryview(writes[k]))
                return None
            return await read(blk, offset, length)

        try:
            threads = [spawn(io, k) for k in range(len(regions))]
            results = [await thread.join() for thread in threads]
            for k, (offset, length) in enumerate(regions):
                if k not in writes:
                    assert results[k] == bytes(disk[offset : offset + length]), f"read {k}"
            assert disk == expected
            assert blk.counts()["free_pages"] == 16 and blk.counts()["in_flight"] == 0
            assert back.peak > 1
        finally:
            blk.close()

    run_world(main)


def test_an_error_status_is_a_block_error_naming_the_sectors() -> None:
    async def main(w: World) -> None:
        disk = disk_image()
        blk, driver = await connect(w, disk, data_pages=16)
        back = driver.blkback
        assert back is not None
        try:
            back.fail_sectors = {16, 128}
            with pytest.raises(BlockError) as failed:
                await read(blk, 8192, 4096)
            assert failed.value.errno == errno.EIO
            assert failed.value.strerror == (
                "vbd 51712: read of sectors 16..23 (4096 bytes at 8192) failed: status -1"
                " (BLKIF_RSP_ERROR)"
            )
            # Split in two, the second piece failing: the error names it, every page comes back.
            with pytest.raises(BlockError, match=r"read of sectors 128\.\.255 "):
                await read(blk, 0, 128 * KIB)
            with pytest.raises(BlockError, match=r"write of sectors 16\.\.16 "):
                await blk.write(8192, memoryview(bytes(512)))
            assert blk.counts()["free_pages"] == 16
            assert await read(blk, 4096, 4096) == bytes(disk[4096:8192])  # still usable
        finally:
            blk.close()

    run_world(main)


def test_bad_requests_are_refused_before_any_request_goes_out() -> None:
    async def main(w: World) -> None:
        blk, driver = await connect(w, disk_image())
        back = driver.blkback
        assert back is not None and driver.channel is not None
        try:
            for offset, size in [(100, 512), (0, 1000), (0, 0), (DISK - 512, 1024), (-512, 512)]:
                with pytest.raises(BlockError):
                    await blk.read(offset, memoryview(bytearray(size)))
                with pytest.raises(BlockError):
                    await blk.write(offset, memoryview(bytearray(size)))
            with pytest.raises(BlockError, match="contiguous, writable"):
                await blk.read(0, memoryview(bytes(512)))  # read-only memory
            assert back.segments_seen == [] and driver.channel.notifications == 0
        finally:
            blk.close()

    run_world(main)


def test_a_read_only_disk_refuses_writes_clearly() -> None:
    async def main(w: World) -> None:
        disk = disk_image()
        blk, driver = await connect(w, disk, info=4)  # VDISK_READONLY
        assert driver.channel is not None
        try:
            assert blk.read_only
            with pytest.raises(BlockError) as refused:
                await blk.write(0, memoryview(bytes(512)))
            assert refused.value.errno == errno.EROFS
            assert "write at 0 refused: the disk is read-only" in str(refused.value)
            await blk.flush()  # nothing to flush
            assert driver.channel.notifications == 0
            assert await read(blk, 512, 512) == bytes(disk[512:1024])
        finally:
            blk.close()

    run_world(main)


def test_lost_events_cost_a_poll_interval_not_a_hang() -> None:
    async def main(w: World) -> None:
        disk = disk_image()
        blk, driver = await connect(w, disk)
        assert driver.channel is not None
        driver.channel.lose = 1000  # every event blkback sends, lost
        try:
            start = now()
            assert await read(blk, 0, 4096) == bytes(disk[:4096])
            assert now() - start == pytest.approx(blk.poll_interval)
            assert blk.counts()["rescues"] >= 1 and blk.counts()["wakeups"] == 0
        finally:
            blk.close()

    run_world(main)


def test_final_check_takes_an_answer_that_came_as_we_re_armed_without_an_event() -> None:
    """Blkback answers while we re-arm rsp_event and, having read it before our store reached
    it, sends no event: the final check takes the answer at once, not a poll interval later."""

    async def main(w: World) -> None:
        disk = disk_image()
        blk, driver = await connect(w, disk)
        back = driver.blkback
        assert back is not None
        back.batch = 2  # holds the read's answer
        evtchn = w.hv.evtchns[0]

        def answer_silently(port: int) -> None:
            if back.unanswered:
                back.drop = True
                back.answer()
                back.drop = False

        try:
            start = now()
            reader = spawn(read, blk, 0, 4096)
            for _ in range(20):
                await yield_()
            assert back.unanswered and not reader.done
            evtchn.on_unmask = answer_silently  # at the safety net's first look
            assert await reader.join() == bytes(disk[:4096])
            assert now() - start == pytest.approx(blk.poll_interval)  # not twice that
            assert blk.counts()["rescues"] == 1 and blk.counts()["wakeups"] == 0
        finally:
            blk.close()

    run_world(main)


def test_flush_goes_out_and_an_unsupported_one_stops() -> None:
    async def main(w: World) -> None:
        blk, driver = await connect(w, disk_image(), flush=False)  # answers EOPNOTSUPP
        back = driver.blkback
        assert back is not None
        try:
            await blk.write(0, memoryview(bytes(4096)))
            await blk.flush()
            assert back.ops == [blkif.OP_WRITE, blkif.OP_FLUSH_DISKCACHE]
            assert not blk.flush_supported
            await blk.flush()
            assert back.ops == [blkif.OP_WRITE, blkif.OP_FLUSH_DISKCACHE]  # none sent again
        finally:
            blk.close()

    run_world(main)


def test_a_cancelled_reader_leaves_its_pages_to_be_freed_on_the_answer() -> None:
    async def main(w: World) -> None:
        disk = disk_image()
        blk, driver = await connect(w, disk, data_pages=16)
        back = driver.blkback
        assert back is not None
        back.batch = 2  # holds the first read's answer until a second request comes
        try:
            reader = spawn(read, blk, 0, 16 * KIB)
            for _ in range(20):
                await yield_()
            assert blk.counts()["free_pages"] == 12 and back.unanswered
            reader.cancel()
            for _ in range(5):
                await yield_()
            assert reader.done
            assert await read(blk, 8192, 4096) == bytes(disk[8192:12288])  # answers both
            assert blk.counts()["free_pages"] == 16  # the orphan's pages are back
        finally:
            blk.close()

    run_world(main)


@pytest.mark.parametrize(
    ("cancelled", "answered_first"),
    [((), 1), ((), 3), ((0,), 0), ((3,), 0), ((0, 1), 0), ((1, 0), 0), ((0, 1, 2, 3, 4, 5, 6), 0)],
    ids=[
        "the-reaper-s-read-first",
        "three-first",
        "the-reaper-cancelled",
        "a-sleeper-cancelled",
        "reaper-and-its-heir-cancelled",
        "heir-then-reaper-cancelled",
        "all-but-one-cancelled",
    ],
)
def test_the_reaping_passes_on_when_the_reaper_leaves(
    cancelled: tuple[int, ...], answered_first: int
) -> None:
    """One reader reaps for all and the others sleep until their own read is done. When the
    reaper's read is answered first, or the reaper, or the reader it hands the reaping to, is
    cancelled, another one reaps: the rest finish (a sleeper with no reaper would sleep on,
    and the run would fail at its deadline)."""

    async def main(w: World) -> None:
        disk = disk_image()
        blk, driver = await connect(w, disk)
        back = driver.blkback
        assert back is not None
        back.batch = 1000  # nothing is answered unless the test says so
        offsets = [k * 64 * KIB for k in range(8)]
        try:
            readers = [spawn(read, blk, offset, 32 * KIB) for offset in offsets]
            for _ in range(20):
                await yield_()
            assert len(back.unanswered) == 8 and not any(r.done for r in readers)
            back.answer(answered_first)  # the oldest first: the reaper's is the first
            for k in cancelled:
                readers[k].cancel()
            for _ in range(20):
                await yield_()
            assert all(readers[k].done for k in range(answered_first))
            assert blk.counts()["in_flight"] == 8 - answered_first
            back.answer()
            for k, reader in enumerate(readers):
                if k not in cancelled:
                    expected = bytes(disk[offsets[k] : offsets[k] + 32 * KIB])
                    assert await reader.join() == expected
            assert blk.counts()["in_flight"] == 0
            assert blk.counts()["free_pages"] == DATA_PAGES  # the cancelled ones' too
        finally:
            blk.close()

    run_world(main)


def test_close_fails_the_requests_in_flight() -> None:
    async def main(w: World) -> None:
        blk, driver = await connect(w, disk_image())
        back = driver.blkback
        assert back is not None
        back.batch = 100  # never answers
        reader = spawn(read, blk, 4096, 4096)
        for _ in range(20):
            await yield_()
        blk.close()
        with pytest.raises(BlockError) as closed:
            await reader.join()
        assert closed.value.errno == errno.ECANCELED
        assert "closed (read of sectors 8..15 (4096 bytes at 4096) was in flight)" in str(
            closed.value
        )
        assert w.hv.pools[0].closed and w.hv.evtchns[0].closed
        await w.dom0_xs.wait_until(f"{VBD_BACK}/state", lambda v: v == "6")
        assert driver.states == ["2", "4", "5", "6"]
        with pytest.raises(BlockError, match="closed"):
            await read(blk, 0, 512)

    run_world(main)


def test_aclose_waits_for_the_back_end_to_close() -> None:
    async def main(w: World) -> None:
        blk, driver = await connect(w, disk_image())
        await blk.aclose()
        assert driver.states == ["2", "4", "5", "6"]
        assert w.value(f"{VBD_FRONT}/state") == "6" and w.hv.pools[0].closed

    run_world(main)


def test_a_back_end_that_never_connects_fails_at_the_timeout_and_all_is_given_back() -> None:
    async def main(w: World) -> None:
        granted = frontend.granted_pages()
        driver = w.blkback(disk_image(), hotplug=False)
        evtchn = w.hv.evtchn()
        start = now()
        with pytest.raises(FrontendError) as caught:
            await open_blkfront(
                xenstore=w.xs,
                evtchn=evtchn,
                grants=w.hv.grant_pool,
                ensure_limit=w.hv.ensure_limit,
                timeout=4,
            )
        assert now() - start == pytest.approx(4.0, abs=0.1)
        assert str(caught.value).startswith(
            f"{VBD_BACK}/state stayed 2 (InitWait) for 4 s, awaiting 4 (Connected): the block"
            " hotplug script did not set the disk up?"
        )
        assert w.hv.pools[0].closed and frontend.granted_pages() == granted
        assert evtchn.closed and driver.channel is not None
        assert evtchn.unbound == [driver.channel.port]
        await w.dom0_xs.wait_until(f"{VBD_BACK}/state", lambda v: v == "6")
        assert w.value(f"{VBD_FRONT}/state") == "6"

    run_world(main)


def test_the_first_vbd_is_the_default_and_a_missing_one_is_named() -> None:
    async def main(w: World) -> None:
        with pytest.raises(FrontendError, match="no device/vbd/51728 in xenstore; there is 51712"):
            await open_blkfront("51728", xenstore=w.xs, evtchn=w.hv.evtchn())
        assert not w.hv.pools and w.hv.evtchns[0].closed

    run_world(main)
