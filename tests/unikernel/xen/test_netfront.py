"""Netfront end to end in our scheduler: bring-up against a fake xenstored and a fake netback
that follows xenstore as the real one does, frames both ways under the real Stack and
Interface, the final check, a full tx ring, and failures that give everything back."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from tests.unikernel.net.test_net_integration import echo_server
from tests.unikernel.xen.fake_xen import (
    VIF_BACK,
    VIF_FRONT,
    VIF_MAC,
    NetbackDriver,
    World,
    run_world,
)
from tests.unikernel.xen.fake_xenstored import WRITE
from unikernel.core.scheduler import now, spawn
from unikernel.core.sync import Event
from unikernel.drivers.xen import frontend, netif
from unikernel.drivers.xen.frontend import FrontendError
from unikernel.drivers.xen.netfront import POOL_PAGES, Netfront, open_netfront
from unikernel.net.config import static
from unikernel.net.interface import Interface
from unikernel.net.ipv4 import parse_address
from unikernel.net.sockets import UdpSocket, ping
from unikernel.net.stack import Stack

HOST_MAC = bytes.fromhex("feffffffffff")  # what netback gives vifD.N


async def connect(w: World, **options: Any) -> tuple[Netfront, NetbackDriver]:
    driver = w.netback()
    netfront = await open_netfront(
        0,
        xenstore=w.xs,
        evtchn=w.hv.evtchn(),
        grants=w.hv.grant_pool,
        ensure_limit=w.hv.ensure_limit,
        **options,
    )
    return netfront, driver


def frames(count: int, size: int = 60) -> list[bytes]:
    return [struct.pack("<I", i) + bytes([i % 251]) * (size - 4) for i in range(count)]


def test_bring_up_publishes_the_reference_keys_in_one_transaction() -> None:
    async def main(w: World) -> None:
        granted = frontend.granted_pages()
        netfront, driver = await connect(w)
        try:
            (pool,) = w.hv.pools
            (evtchn,) = w.hv.evtchns
            assert driver.channel is not None and driver.netback is not None
            assert w.front_keys(VIF_FRONT) == {
                # libxl's
                "backend": VIF_BACK,
                "backend-id": "0",
                "handle": "0",
                "mac": VIF_MAC,
                "mtu": "1500",
                # ours (xen-frontends.md §3 step 6)
                "tx-ring-ref": str(pool.grefs[0]),
                "rx-ring-ref": str(pool.grefs[1]),
                "event-channel": str(driver.channel.port),
                "request-rx-copy": "1",
                "feature-rx-notify": "1",
                "feature-no-csum-offload": "1",
                "state": "4",
            }
            writes = [
                (p.split(b"\0")[0].decode(), tx) for k, p, tx in w.store.requests if k == WRITE
            ]
            assert len(writes) == 7 and w.store.commits == 1
            assert len({tx for _, tx in writes}) == 1 and writes[0][1] != 0  # one transaction
            assert writes[-1][0] == "device/vif/0/state"  # Connected, with the rest
            assert (pool.count, pool.domid) == (POOL_PAGES, 0) == (386, 0)
            assert w.hv.limit_checks == [granted + 386]
            assert driver.netback.posted_rx() == 256  # every buffer, before connecting
            assert driver.channel.notifications == 1  # the kick
            assert netfront.mac == bytes.fromhex("00163e5e6c01") and netfront.mtu == 1500
            assert netfront.fileno() == evtchn.fileno() and netfront.handle == 0
            assert w.value(f"{VIF_BACK}/state") == "4"
            assert netfront.read_batch(64) == []  # nothing yet, and no blocking
        finally:
            netfront.close()
        assert pool.closed and evtchn.closed

    run_world(main)


def test_ping_and_udp_echo_through_netfront_under_the_stack() -> None:
    async def main(w: World) -> tuple[list[bytes], list[float], dict[str, int]]:
        netfront, driver = await connect(w)
        guest = Interface(Stack(netfront.mac, config=static("10.0.0.2/24")), netfront).start()
        vif = driver.vif(HOST_MAC)
        host = Interface(Stack(HOST_MAC, config=static("10.0.0.1/24")), vif).start()
        server = spawn(echo_server, host, 7)
        try:
            rtts = [
                await ping(guest, "10.0.0.1", data=b"x" * 56),
                await ping(host, "10.0.0.2", data=b"y" * 1472),  # a 1514-byte frame each way
            ]
            answers = []
            with UdpSocket(guest) as sock:
                for n in range(20):
                    await sock.sendto(b"question %d" % n, ("10.0.0.1", 7))
                    data, peer = await sock.recvfrom(timeout=1.0)
                    assert peer == ("10.0.0.1", 7)
                    answers.append(data)
            return answers, rtts, netfront.counts()
        finally:
            server.cancel()
            await guest.aclose()
            await host.aclose()
            netfront.close()

    answers, rtts, counts = run_world(main)
    assert answers == [b"QUESTION %d" % n for n in range(20)]
    assert all(rtt >= 0.0 for rtt in rtts)
    assert counts["rx_frames"] >= 22 and counts["tx_frames"] >= 22
    assert counts["rx_errors"] == counts["tx_errors"] == counts["tx_refused"] == 0


def test_final_check_takes_frames_pushed_before_the_event_was_asked_for() -> None:
    """Netback on another CPU fills the buffers we re-post before we re-arm rsp_event: its
    push passes no event index, so no event comes for those frames. The final check must
    take them, or they would sit in the ring while fileno() stays quiet."""

    async def main(w: World) -> None:
        netfront, driver = await connect(w)
        back = driver.netback
        (evtchn,) = w.hv.evtchns
        assert back is not None and driver.channel is not None
        try:
            evtchn.on_notify = lambda port: back.deliver_rx()
            sent = frames(300)
            for i, frame in enumerate(sent):  # every third one with its checksum vouched for
                back.queue_frames([frame], flags=netif.NETRXF_DATA_VALIDATED if i % 3 == 0 else 0)
            back.deliver_rx()  # 256: every posted buffer
            assert evtchn.readable() and driver.channel.events == 1
            got = netfront.read_batch(1000)
            assert got == sent  # the 44 that came without an event too
            assert netfront.vouched() == sum(1 << i for i in range(0, 300, 3))
            assert netfront.rescues >= 1 and driver.channel.events == 1
            assert not back.rx_waiting and not evtchn.readable()
            assert netfront.read_batch(1000) == []
            # A full batch leaves the rest for the next call, which the Interface makes at once.
            back.queue_frames(frames(10))
            back.deliver_rx()
            assert len(netfront.read_batch(4)) == 4 and len(netfront.read_batch(64)) == 6
        finally:
            netfront.close()

    run_world(main)


def test_read_batch_unmasks_the_port_once_however_many_times_it_looks() -> None:
    """After the first unmask the port is live: a later look needs a barrier, not another
    system call, and what the back end sends meanwhile is still seen (by that look, or as an
    event for the next call)."""

    async def main(w: World) -> None:
        netfront, driver = await connect(w)
        back = driver.netback
        (evtchn,) = w.hv.evtchns
        assert back is not None and driver.channel is not None
        try:
            sent = frames(300)
            back.queue_frames(sent)
            back.deliver_rx()  # 256
            looks = []

            def deliver_at_each_look(port: int) -> None:
                looks.append(port)
                back.deliver_rx(limit=20)  # inside the barrier: after our ask for an event

            evtchn.on_unmask = deliver_at_each_look
            unmasks = evtchn.unmasks
            got = netfront.read_batch(1000)
            assert got[:276] == sent[:276] and evtchn.unmasks - unmasks == 1 == len(looks)
            assert netfront.rescues == 1  # the 20 delivered at the look, taken at once
            assert evtchn.readable(), "their push passed rsp_event: an event for the next call"
            while back.rx_waiting:
                back.deliver_rx()
                got += netfront.read_batch(1000)
            assert got == sent
        finally:
            netfront.close()

    run_world(main)


def test_many_frames_in_through_the_interface_with_an_eager_back_end() -> None:
    async def main(w: World) -> list[bytes]:
        netfront, driver = await connect(w)
        back = driver.netback
        assert back is not None
        w.hv.evtchns[0].on_notify = lambda port: back.deliver_rx()
        # Batches larger than the ring: each read drains it, and re-posting refills it.
        stack = Stack(netfront.mac, config=static("10.0.0.2/24"))
        guest = Interface(stack, netfront, batch=1000).start()
        host = Interface(Stack(HOST_MAC, config=static("10.0.0.1/24")), driver.vif(HOST_MAC))
        host.start()
        got: list[bytes] = []
        done = Event()

        def receive(source: bytes, port: int, to: bytes, payload: memoryview, at: float) -> None:
            got.append(bytes(payload))
            if len(got) == 600:
                done.set()

        try:
            guest.stack.udp_bind(9, receive)
            await ping(host, "10.0.0.2")  # ARP, both ways
            for n in range(600):
                host.stack.udp_send(5000, parse_address("10.0.0.2"), 9, b"%d" % n, now())
            host.flush()  # 600 frames at once: more than the 256 receive buffers
            await done.wait()
            return got
        finally:
            await guest.aclose()
            await host.aclose()
            netfront.close()

    assert run_world(main) == [b"%d" % n for n in range(600)]


def test_full_tx_ring_queues_then_refuses_and_completions_wake_the_reader() -> None:
    async def main(w: World) -> None:
        netfront, driver = await connect(w, tx_queue=100)
        (evtchn,) = w.hv.evtchns
        vif = driver.vif(HOST_MAC)
        vif.hold_tx = True  # netback answers tx only once dom0 frees the packets: later
        try:
            sent = frames(600, size=1514)
            taken = netfront.write_batch(sent)
            assert taken == 256 + 100  # the ring, then the queue; the rest is refused
            counts = netfront.counts()
            assert (counts["tx_refused"], counts["tx_queued"]) == (244, 100)
            pending = sent[taken:]
            received: list[bytes | bytearray | memoryview] = []
            while len(received) < 600:
                received += vif.read_batch(1000)  # what is on the ring; no answers yet
                vif.back.answer_tx()
                assert evtchn.readable(), "a completion must wake the reader"
                queued = netfront.counts()["tx_queued"]
                assert netfront.read_batch(64) == []  # reclaims, pushes the queue on
                if queued:
                    assert netfront.counts()["tx_queued"] < queued
                    assert vif.back.tx.unconsumed_requests() > 0
                taken = netfront.write_batch(pending)
                pending = pending[taken:]
            assert received == sent
            assert netfront.counts()["tx_frames"] == 600
        finally:
            netfront.close()

    run_world(main)


def test_a_burst_beyond_ring_and_queue_gets_through_the_interface_in_order() -> None:
    """The Interface's writer waits for fileno() writable, which the event channel always
    is: it spins, yielding, until completions make room. Real time: spinning stops a fake
    clock."""

    async def main(w: World) -> tuple[list[bytes], int]:
        netfront, driver = await connect(w, tx_queue=64)
        vif = driver.vif(HOST_MAC)
        guest = Interface(Stack(netfront.mac, config=static("10.0.0.2/24")), netfront).start()
        host = Interface(Stack(HOST_MAC, config=static("10.0.0.1/24")), vif).start()
        got: list[bytes] = []
        done = Event()

        def receive(source: bytes, port: int, to: bytes, payload: memoryview, at: float) -> None:
            got.append(bytes(payload))
            if len(got) == 700:
                done.set()

        try:
            host.stack.udp_bind(9, receive)
            await ping(guest, "10.0.0.1")  # ARP, both ways
            vif.hold_tx = True
            for n in range(700):
                guest.stack.udp_send(5000, parse_address("10.0.0.1"), 9, b"%d" % n, now())
            guest.flush()  # one write_batch: 256 on the ring, 64 queued, 380 to the backlog
            refused = netfront.counts()["tx_refused"]
            vif.release_tx()
            await done.wait()
            return got, refused
        finally:
            await guest.aclose()
            await host.aclose()
            netfront.close()

    got, refused = run_world(main, real_time=True)
    assert refused == 700 - 256 - 64
    assert got == [b"%d" % n for n in range(700)]


def test_a_back_end_that_never_connects_fails_at_the_timeout_and_all_is_given_back() -> None:
    async def main(w: World) -> None:
        granted = frontend.granted_pages()
        driver = w.netback(hotplug=False)
        evtchn = w.hv.evtchn()
        start = now()
        with pytest.raises(FrontendError) as caught:
            await open_netfront(
                xenstore=w.xs, evtchn=evtchn, grants=w.hv.grant_pool, ensure_limit=None
            )
        assert now() - start == pytest.approx(10.0, abs=0.1)  # the default timeout
        assert str(caught.value).startswith(
            f"{VIF_BACK}/state stayed 2 (InitWait) for 10 s, awaiting 4 (Connected): the"
            " hotplug script did not write hotplug-status=connected?"
        )
        (pool,) = w.hv.pools
        assert driver.channel is not None  # it did bind, and map our rings
        assert pool.closed and w.hv.granted == 0 and frontend.granted_pages() == granted
        assert evtchn.closed and evtchn.unbound == [driver.channel.port]
        # We said Closing then Closed; the back end followed.
        await w.dom0_xs.wait_until(f"{VIF_BACK}/state", lambda v: v == "6")
        assert w.value(f"{VIF_FRONT}/state") == "6" and driver.states == ["2", "5", "6"]
        states = [p for k, p, _ in w.store.requests if k == WRITE and p.startswith(b"device/")]
        assert states[-2:] == [b"device/vif/0/state\x005", b"device/vif/0/state\x006"]

    run_world(main)


def test_no_back_end_at_all_fails_before_anything_is_taken() -> None:
    async def main(w: World) -> None:
        evtchn = w.hv.evtchn()
        with pytest.raises(FrontendError, match=r"stayed 1 \(Initialising\) for 3 s.*netback"):
            await open_netfront(
                xenstore=w.xs, evtchn=evtchn, grants=w.hv.grant_pool, ensure_limit=None, timeout=3
            )
        assert not w.hv.pools and evtchn.closed and not evtchn.unbound
        assert w.value(f"{VIF_FRONT}/state") == "1"  # untouched: a later try may still work
        with pytest.raises(FrontendError, match=r"no device/vif/3 in xenstore; there is 0"):
            await open_netfront(3, xenstore=w.xs, evtchn=w.hv.evtchn(), grants=w.hv.grant_pool)

    run_world(main)


def test_a_netback_without_rx_copy_is_refused() -> None:
    async def main(w: World) -> None:
        w.netback(probe={})
        evtchn = w.hv.evtchn()
        with pytest.raises(FrontendError, match="feature-rx-copy is None"):
            await open_netfront(xenstore=w.xs, evtchn=evtchn, grants=w.hv.grant_pool)
        assert not w.hv.pools and evtchn.closed

    run_world(main)


def test_aclose_says_closing_then_closed_and_gives_everything_back() -> None:
    async def main(w: World) -> None:
        granted = frontend.granted_pages()
        netfront, driver = await connect(w)
        (pool,) = w.hv.pools
        (evtchn,) = w.hv.evtchns
        assert netfront.write_batch(frames(3)) == 3
        assert driver.netback is not None and driver.netback.take_tx() == 3
        await netfront.aclose()
        assert driver.states == ["2", "4", "5", "6"] and w.value(f"{VIF_FRONT}/state") == "6"
        assert pool.closed and evtchn.closed and frontend.granted_pages() == granted
        assert netfront.read_batch(8) == []
        with pytest.raises(OSError, match="closed"):
            netfront.write_batch(frames(1))

    run_world(main)


def test_close_tells_the_back_end_without_waiting() -> None:
    async def main(w: World) -> None:
        netfront, driver = await connect(w)
        netfront.close()  # as from a finally block, or outside any thread
        assert w.hv.pools[0].closed and w.hv.evtchns[0].closed
        await w.dom0_xs.wait_until(f"{VIF_BACK}/state", lambda v: v == "6")
        assert driver.states == ["2", "4", "5", "6"]
        netfront.close()  # twice: nothing

    run_world(main)
