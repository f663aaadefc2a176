"""A network namespace holding a TAP device whose kernel side is Linux's host (10.77.0.1/24),
and our stack run on the unikernel's side of it: what the Linux interop tests share."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from tests.support.netns import Netns, require
from unikernel.core.scheduler import fail_after, run
from unikernel.drivers import Netif
from unikernel.drivers.tap import TapNetif
from unikernel.net.config import static
from unikernel.net.interface import Interface
from unikernel.net.sockets import UdpSocket
from unikernel.net.stack import Stack

T = TypeVar("T")

TAP = "unibench0"
LINUX = "10.77.0.1"  # the kernel's side of the TAP device
OURS = "10.77.0.2"  # the unikernel's, when configured statically
DHCP_FIRST, DHCP_LAST = "10.77.0.50", "10.77.0.60"
TEST_TIMEOUT = 30.0  # for a whole test body; every wait inside has a shorter bound


@pytest.fixture
def netns() -> Iterator[Netns]:
    require()
    namespace = Netns()
    try:
        yield namespace
    finally:
        namespace.close()


@pytest.fixture
def tap(netns: Netns) -> Iterator[TapNetif]:
    """The TAP device, up with Linux's address, the unikernel's side attached."""
    yield from _tap(netns, offloads=False)


@pytest.fixture
def offloading_tap(netns: Netns) -> Iterator[TapNetif]:
    """The TAP device as a virtio-net NIC: partial checksums and TCP super-packets both ways."""
    yield from _tap(netns, offloads=True)


def _tap(netns: Netns, offloads: bool) -> Iterator[TapNetif]:
    netns.ip("tuntap", "add", "dev", TAP, "mode", "tap")
    netns.ip("address", "add", f"{LINUX}/24", "dev", TAP)
    netns.ip("link", "set", TAP, "up")
    netif = netns.call_inside(lambda: TapNetif(TAP, existing=True, offloads=offloads))
    try:
        yield netif
    finally:
        netif.close()


def on_stack(
    netif: Netif,
    cidr: str | None,
    body: Callable[[Interface], Coroutine[Any, Any, T]],
    timeout: float = TEST_TIMEOUT,
) -> T:
    """body(interface) run on the scheduler, with our stack on the netif, bounded at `timeout`
    seconds. Whatever Linux sent, we must have parsed: the only drops allowed are frames not
    for us (IPv6's multicast, for one)."""

    async def main() -> T:
        config = None if cidr is None else static(cidr)
        stack = Stack(netif.mac, mtu=netif.mtu, config=config, segmentation=netif.segmentation)
        interface = Interface(stack, netif).start()
        try:
            with fail_after(timeout):
                result = await body(interface)
        finally:
            interface.close()
        drops = stack.drop_counts()
        assert set(drops) <= {"ethernet.not-for-us", "ethernet.ethertype"}, drops
        return result

    return run(main)


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


async def echo_server(interface: Interface, port: int) -> None:
    with UdpSocket(interface) as sock:
        sock.bind(port)
        while True:
            data, peer = await sock.recvfrom()
            await sock.sendto(data, peer)
