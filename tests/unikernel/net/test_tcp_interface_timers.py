"""TCP wired to interfaces as open_network() wires it (attach_tcp): its timers fire in the
interface's timer thread, with no thread of TCP's own.

Two stacks on a vnet switch, a fake clock: the times asserted are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from unikernel.core.clock import FakeClock
from unikernel.core.nursery import open_nursery
from unikernel.core.scheduler import fail_after, now, run, sleep
from unikernel.drivers.vnet import Switch
from unikernel.net.interface import Interface
from unikernel.net.service import attach_tcp
from unikernel.net.tcp_sockets import TcpSocket, TcpSockets

from .wire import ip, make_stack

SERVER = ip("10.0.0.2")


def run_net(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run(main, clock=FakeClock())


def tcp_on_switch(switch: Switch) -> tuple[list[Interface], list[TcpSockets]]:
    """Stacks 10.0.0.1 and 10.0.0.2 on the switch, each with TCP attached."""
    interfaces = []
    for n in (1, 2):
        stack = make_stack(n, f"10.0.0.{n}/24")
        interfaces.append(Interface(stack, switch.port(stack.mac)).start())
    return interfaces, [attach_tcp(interface) for interface in interfaces]


async def shut(interfaces: list[Interface]) -> None:
    for interface in interfaces:
        await interface.aclose()
        interface.netif.close()


async def receive_all(sock: TcpSocket) -> bytes:
    chunks = []
    while chunk := await sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_tcp_retransmits_through_the_interfaces_timer_alone() -> None:
    payload = bytes(range(256)) * 400

    async def main() -> tuple[bytes, int, list[object]]:
        interfaces, (client, server) = tcp_on_switch(Switch(loss=0.05, seed=3))
        listener = server.listen(7)

        async def echo() -> None:
            conn = await listener.accept()
            while data := await conn.recv(4096):
                await conn.send(data)
            conn.close()

        try:
            with fail_after(120):
                async with open_nursery() as nursery:
                    nursery.spawn(echo)
                    conn = await client.connect(SERVER, 7, timeout=30)
                    reader = nursery.spawn(receive_all, conn)
                    await conn.send(payload)
                    conn.shutdown()
                echoed = await reader.join()
        finally:
            await shut(interfaces)
        retransmits = client.layer.stats["retransmits"] + server.layer.stats["retransmits"]
        return echoed, retransmits, [client._timer_thread, server._timer_thread]

    echoed, retransmits, own_threads = run_net(main)
    assert echoed == payload
    assert retransmits > 0  # lost segments came again: TCP's timers fired
    assert own_threads == [None, None]


def test_a_keepalive_armed_with_nothing_to_send_still_wakes_the_interfaces_timer() -> None:
    async def main() -> tuple[str, float]:
        interfaces, (client, server) = tcp_on_switch(Switch())
        listener = server.listen(7)
        conn = await client.connect(SERVER, 7, timeout=5)
        await listener.accept()
        await sleep(1.0)  # the handshake's timers have all fired: the timer sleeps
        await shut(interfaces[1:])  # the server vanishes, unannounced
        start = now()
        conn.keepalive(idle=5.0, interval=1.0, count=2)  # sends nothing yet
        try:
            with fail_after(60):  # a timer nobody woke would leave recv() waiting till then
                await conn.recv(100)
            return "recv returned", now() - start
        except TimeoutError as error:
            return str(error), now() - start
        finally:
            await shut(interfaces[:1])

    reason, waited = run_net(main)
    assert reason != "timed out after 60 s", "TCP's keepalive timer never fired"
    assert waited == 7.0  # idle 5 s, then 2 probes 1 s apart, unanswered
