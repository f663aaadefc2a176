"""The network as an OS service: our stack, UDP and TCP on a frame device.

    network = await devices.network().open()    # see unikernel.net.device
    listener = network.listen(5201)
    sock = await network.connect("10.0.0.1", 80, timeout=5)
    with network.udp() as udp: ...

How the interface is configured comes from the environment, which the harness (or `unikernel
run`) fills and the kernel hands to PID 1 from its command line:

    UNIKERNEL_IP        an address/prefix ("10.0.0.2/24"), or "dhcp" (the default)
    UNIKERNEL_GATEWAY   the default router, with a static address
    UNIKERNEL_OFFLOADS  "off": send no TCP super-frames, even where the device would cut them
                        (a Xen vif under Linux's netfront offers TSO; the tcp suite's
                        offloads=off turns it down, as the paper measured)

The frame device underneath is the build's choice for the target (unikernel.net.device): the
kernel only moves Ethernet frames; IP, UDP and TCP are ours.
"""

from __future__ import annotations

import os

from unikernel.core.entropy import random_u32
from unikernel.core.scheduler import fail_after, now
from unikernel.net.config import Ipv4Config, static
from unikernel.net.interface import Interface
from unikernel.net.ipv4 import format_address, parse_address
from unikernel.net.sockets import UdpResponder, UdpSocket
from unikernel.net.stack import Stack
from unikernel.net.tcp import TcpConfig, TcpLayer
from unikernel.net.tcp_sockets import TcpListenerSocket, TcpSocket, TcpSockets

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from unikernel.drivers import Netif
    from unikernel.net.sockets import Answer

ADDRESS_VARIABLE = "UNIKERNEL_IP"
GATEWAY_VARIABLE = "UNIKERNEL_GATEWAY"
OFFLOADS_VARIABLE = "UNIKERNEL_OFFLOADS"
TCP_PROTOCOL = 6
_UNSET = bytes(4)


class NetworkConfigError(ValueError):
    """The environment describes a network we cannot set up; the message says what to change."""


def ipv4_config(environ: Mapping[str, str]) -> Ipv4Config | None:
    """The static configuration the environment asks for, or None for DHCP."""
    text = environ.get(ADDRESS_VARIABLE, "dhcp").strip()
    if text == "dhcp":
        return None
    gateway = environ.get(GATEWAY_VARIABLE) or None
    try:
        return static(text, gateway=gateway)
    except ValueError as error:
        raise NetworkConfigError(
            f"{ADDRESS_VARIABLE}={text!r}, {GATEWAY_VARIABLE}={gateway!r}: {error}; "
            "give an address/prefix such as 10.0.0.2/24 (and a gateway address), or dhcp"
        ) from None


def attach_tcp(interface: Interface, config: TcpConfig | None = None) -> TcpSockets:
    """TCP plugged into the interface's stack; its segments leave at once, written together
    (flush), its timers fire in the interface's timer thread, and what a read of frames
    brings is answered together (Stack.receive_batch)."""
    stack = interface.stack
    config = config or TcpConfig(mtu=stack.mtu, segmentation=stack.segmentation)
    layer = TcpLayer(random_u32, config, local_ip=stack.address or _UNSET)

    def send(destination: bytes, source: bytes, segment: bytes | bytearray) -> None:
        ip_send(destination, segment, now())

    sockets = TcpSockets(layer, send=send, wake_timer=interface.wake_timer, sent=interface.flush)
    ip_send = stack.register_protocol(
        TCP_PROTOCOL,
        sockets.input,
        tick=sockets.tick,
        next_deadline=layer.next_deadline,
        batch=(sockets.begin_batch, sockets.end_batch),
        run=sockets.input_run,
    )
    return sockets


class NetworkService:
    """One configured interface with UDP and TCP, for the application's threads."""

    def __init__(self, interface: Interface, tcp: TcpSockets, netif: Netif) -> None:
        self.interface = interface
        self.tcp = tcp
        self._netif = netif

    @property
    def stack(self) -> Stack:
        return self.interface.stack

    @property
    def address(self) -> str:
        """Our IPv4 address as text ("0.0.0.0" before DHCP has leased one)."""
        address = self.stack.address
        return format_address(address or _UNSET)

    def udp(self, port: int = 0) -> UdpSocket:
        """A UDP socket, bound to `port` when not 0."""
        sock = UdpSocket(self.interface)
        if port:
            sock.bind(port)
        return sock

    def answer_udp(self, port: int, answer: Answer) -> UdpResponder:
        """Answer each datagram to `port` with `answer(payload)` as it arrives (see
        UdpResponder); close the responder to stop."""
        return UdpResponder(self.interface, port, answer)

    async def connect(self, host: str, port: int, timeout: float | None = None) -> TcpSocket:
        self._follow_address()
        return await self.tcp.connect(parse_address(host), port, timeout)

    def listen(self, port: int, backlog: int = 128) -> TcpListenerSocket:
        self._follow_address()
        return self.tcp.listen(port, backlog)

    def counts(self) -> dict[str, int]:
        """The link's counters: the interface's backlog and the driver's own."""
        return {**self.interface.counts(), **self._netif.counts()}

    async def aclose(self) -> None:
        """Stop the driver threads, then let go of the device."""
        await self.interface.aclose()
        self._netif.close()

    def _follow_address(self) -> None:
        # DHCP may have leased (or changed) our address since TCP was attached.
        address = self.stack.address
        if address is not None:
            self.tcp.layer.local_ip = address


def offloads_wanted(environ: Mapping[str, str]) -> bool:
    """Whether to use the device's offloads (UNIKERNEL_OFFLOADS: on, the default, or off)."""
    text = environ.get(OFFLOADS_VARIABLE, "").strip() or "on"
    if text not in ("on", "off"):
        raise ValueError(f"{OFFLOADS_VARIABLE}={text!r}: say on or off")
    return text == "on"


async def open_network(
    netif: Netif,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    tcp_config: TcpConfig | None = None,
) -> NetworkService:
    """Our stack on `netif`, configured (waiting up to `timeout` seconds for a DHCP lease);
    the service owns the netif from here, and closes it on failure."""
    device = getattr(netif, "name", "the network device")
    try:
        environ = os.environ if environ is None else environ
        config = ipv4_config(environ)
        segmentation = netif.segmentation and offloads_wanted(environ)
        stack = Stack(netif.mac, mtu=netif.mtu, config=config, segmentation=segmentation)
        interface = Interface(stack, netif).start()
        service = NetworkService(interface, attach_tcp(interface, tcp_config), netif)
        if config is None:
            stack.start_dhcp(now(), hostname=environ.get("UNIKERNEL_HOSTNAME") or None)
            interface.flush()
            try:
                with fail_after(timeout):
                    await interface.configured.wait()
            except TimeoutError:
                await interface.aclose()
                raise TimeoutError(
                    f"{device}: no DHCP lease within {timeout:.0f} s; is a DHCP server on the "
                    f"link? Or set {ADDRESS_VARIABLE}=address/prefix"
                ) from None
        service._follow_address()
        return service
    except BaseException:
        netif.close()
        raise
