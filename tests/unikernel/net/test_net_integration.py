"""Stacks on a vnet switch, driven by their interfaces' threads on the scheduler, used through
the socket API; a fake clock makes every run the same."""

from __future__ import annotations

import errno
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from unikernel.core.clock import FakeClock
from unikernel.core.scheduler import fail_after, now, run, sleep, spawn
from unikernel.drivers.vnet import Port, Switch
from unikernel.net import dhcp, ipv4
from unikernel.net.interface import Interface
from unikernel.net.sockets import UdpResponder, UdpSocket, ping
from unikernel.net.stack import Stack

from .dhcp_server import ScriptedServer
from .wire import make_stack

Buffer = bytes | bytearray | memoryview


def run_net(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run(main, clock=FakeClock())


def attach(switch: Switch, stack: Stack, port: Port | None = None) -> Interface:
    return Interface(stack, port or switch.port(stack.mac)).start()


def network(switch: Switch, count: int) -> list[Interface]:
    return [attach(switch, make_stack(n, f"10.0.0.{n}/24")) for n in range(1, count + 1)]


def shut(interfaces: Sequence[Interface]) -> None:
    for interface in interfaces:
        interface.close()
        interface.netif.close()


async def echo_server(interface: Interface, port: int) -> None:
    with UdpSocket(interface) as sock:
        sock.bind(port)
        while True:
            data, peer = await sock.recvfrom()
            await sock.sendto(data.upper(), peer)


def test_three_stacks_ping_each_other() -> None:
    async def main() -> list[float]:
        switch = Switch()
        interfaces = network(switch, 3)
        try:
            rtts = []
            for source in interfaces:
                for n in (1, 2, 3):
                    rtts.append(await ping(source, f"10.0.0.{n}", data=b"x" * 56, sequence=n))
            return rtts
        finally:
            shut(interfaces)

    rtts = run_net(main)
    assert len(rtts) == 9 and all(rtt >= 0.0 for rtt in rtts)


def test_ping_to_nobody_times_out_after_arp_gives_up() -> None:
    async def main() -> tuple[float, dict[str, int]]:
        switch = Switch()
        (interface,) = network(switch, 1)
        try:
            with pytest.raises(TimeoutError):
                await ping(interface, "10.0.0.77", timeout=5.0)
            return now(), interface.stack.drop_counts()
        finally:
            shut([interface])

    finished, drops = run_net(main)
    assert finished == 5.0 and drops == {"arp.unresolved": 1}


def test_udp_request_and_reply_through_sockets_despite_loss() -> None:
    async def main() -> tuple[list[bytes], dict[str, int]]:
        switch = Switch(loss=0.25, duplicate=0.05, reorder=0.1, seed=4)
        interfaces = network(switch, 3)
        server = spawn(echo_server, interfaces[2], 7)
        answers = []
        try:
            with UdpSocket(interfaces[0]) as sock:
                for n in range(40):
                    question = b"question %d" % n
                    while True:  # a client's own retry: UDP promises nothing
                        await sock.sendto(question, ("10.0.0.3", 7))
                        try:
                            data, peer = await sock.recvfrom(timeout=0.5)
                        except TimeoutError:
                            continue
                        if data == question.upper():  # not a late duplicate of an old one
                            break
                    assert peer == ("10.0.0.3", 7)
                    answers.append(data)
            return answers, switch.counts
        finally:
            server.cancel()
            shut(interfaces)

    answers, counts = run_net(main)
    assert answers == [b"QUESTION %d" % n for n in range(40)]
    assert counts["lost"] > 5 and counts["duplicated"] > 0


def test_recvfrom_times_out_and_sockets_report_errors() -> None:
    async def main() -> float:
        switch = Switch()
        (interface,) = network(switch, 1)
        try:
            sock = UdpSocket(interface)
            assert sock.bind(5000) == 5000 and sock.getsockname() == ("10.0.0.1", 5000)
            with pytest.raises(OSError) as caught:
                sock.bind(5001)
            assert caught.value.errno == errno.EINVAL
            with pytest.raises(OSError) as caught:
                UdpSocket(interface).bind(5000)
            assert caught.value.errno == errno.EADDRINUSE
            with pytest.raises(OSError) as caught:
                await sock.sendto(b"x", ("192.0.2.1", 9))
            assert caught.value.errno == errno.ENETUNREACH
            with pytest.raises(OSError) as caught:
                await sock.sendto(bytes(70000), ("10.0.0.2", 9))
            assert caught.value.errno == errno.EMSGSIZE
            started = now()
            with pytest.raises(TimeoutError):
                await sock.recvfrom(timeout=2.5)
            waited = now() - started
            sock.close()
            with pytest.raises(OSError) as caught:
                await sock.recvfrom()
            assert caught.value.errno == errno.EBADF
            UdpSocket(interface).bind(5000)  # the port is free again
            return waited
        finally:
            shut([interface])

    assert run_net(main) == 2.5


def test_a_full_receive_queue_drops_datagrams() -> None:
    async def main() -> tuple[int, list[bytes]]:
        switch = Switch()
        a, b = network(switch, 2)
        try:
            receiver = UdpSocket(b, max_queued=3)
            receiver.bind(9)
            with UdpSocket(a) as sender:
                for n in range(5):
                    await sender.sendto(b"%d" % n, ("10.0.0.2", 9))
            await sleep(0.1)
            kept = [(await receiver.recvfrom(timeout=1))[0] for _ in range(3)]
            return receiver.dropped, kept
        finally:
            shut([a, b])

    assert run_net(main) == (2, [b"0", b"1", b"2"])


def test_a_stack_gets_its_address_by_dhcp_over_a_lossy_link() -> None:
    async def main() -> tuple[float, bytes | None, float]:
        switch = Switch(loss=0.3, seed=7)
        (server_interface,) = network(switch, 1)
        script = ScriptedServer(address="10.0.0.1", offer="10.0.0.50", lease=600)
        server = server_interface.stack

        def serve(source: bytes, port: int, to: bytes, payload: memoryview, at: float) -> None:
            reply = script.answer(payload)
            if reply is not None:
                server.udp_send(dhcp.SERVER_PORT, ipv4.BROADCAST, dhcp.CLIENT_PORT, reply, at)

        server.udp_bind(dhcp.SERVER_PORT, serve)
        client = attach(switch, Stack(bytes((2, 0, 0, 0, 0, 50))))
        try:
            client.stack.start_dhcp(now())
            client.flush()
            with fail_after(120):
                await client.configured.wait()
            configured_at = now()
            rtt = -1.0
            for _ in range(10):  # the link still loses frames
                try:
                    rtt = await ping(client, "10.0.0.1", timeout=1.0)
                    break
                except TimeoutError:
                    pass
            return configured_at, client.stack.address, rtt
        finally:
            shut([server_interface, client])

    configured_at, address, rtt = run_net(main)
    assert address == ipv4.parse_address("10.0.0.50") and rtt >= 0.0
    assert configured_at > 0.0  # lost messages were sent again after a backoff


class NarrowPort(Port):
    """A port that takes at most two frames per write, like a NIC with a short ring."""

    def write_batch(self, frames: Sequence[Buffer]) -> int:
        return super().write_batch(frames[:2])


def test_frames_a_full_netif_refuses_wait_in_the_backlog_in_order() -> None:
    async def main() -> tuple[list[bytes], int, int]:
        switch = Switch()
        stack = make_stack(1, "10.0.0.1/24")
        port = NarrowPort(switch, stack.mac, 1500)
        switch._ports.append(port)
        a = Interface(stack, port, max_backlog=16).start()
        b = attach(switch, make_stack(2, "10.0.0.2/24"))
        try:
            await ping(a, "10.0.0.2")  # resolved first: ARP holds only a few packets
            receiver = UdpSocket(b, max_queued=20)
            receiver.bind(9)
            most_waiting = 0
            with UdpSocket(a) as sender:
                for n in range(10):
                    # 5 fragments each: more than the port takes at once.
                    await sender.sendto(bytes([n]) * 6000, ("10.0.0.2", 9))
                    most_waiting = max(most_waiting, len(a._backlog))
            received = [(await receiver.recvfrom(timeout=1))[0] for _ in range(10)]
            return received, a.backlog_drops, most_waiting
        finally:
            shut([a, b])

    received, drops, most_waiting = run_net(main)
    assert received == [bytes([n]) * 6000 for n in range(10)] and drops == 0
    assert 0 < most_waiting <= 8  # sendto waited for the writer to drain it to half


def test_aclose_returns_once_the_driver_threads_have_ended_so_the_netif_may_go() -> None:
    async def main() -> list[bool]:
        switch = Switch()
        a, b = network(switch, 2)
        threads = list(b._threads)
        await ping(a, "10.0.0.2", timeout=1.0)  # traffic in flight
        await b.aclose()
        ended = [thread.done for thread in threads]
        b.netif.close()
        await sleep(0.1)  # nothing of b's may run on a closed netif now
        shut([a])
        return ended

    assert run_net(main) == [True, True, True]


def test_a_responder_answers_each_datagram_where_it_came_from_and_counts() -> None:
    def answer(request: memoryview) -> bytes | None:
        if bytes(request[:4]) == b"drop":
            return None  # left unanswered, as a DNS server leaves a response it was sent
        if bytes(request[:5]) == b"raise":
            raise ValueError("a bug in the answer must not stop the interface")
        return b"re: " + bytes(request)

    async def main() -> tuple[list[tuple[bytes, tuple[str, int]]], list[int]]:
        interfaces = network(Switch(), 3)
        received = []
        try:
            with UdpResponder(interfaces[2], 53, answer) as responder:
                for client in interfaces[:2]:
                    with UdpSocket(client) as sock:
                        for request in (b"drop", b"raise", b"hello"):
                            await sock.sendto(request, ("10.0.0.3", 53))
                        received.append(await sock.recvfrom(timeout=1.0))
                        with pytest.raises(TimeoutError):
                            await sock.recvfrom(timeout=0.5)  # nothing for the other two
                counts = [responder.answered, responder.unanswered, responder.failed]
            return received, counts
        finally:
            shut(interfaces)

    received, counts = run_net(main)
    assert received == [(b"re: hello", ("10.0.0.3", 53))] * 2
    assert counts == [2, 2, 2]
