"""A declared network, wired to its frame device: the build picks the driver for the target (a
TAP device hosted, AF_PACKET on the VM's NIC under QEMU and Xen, or under Xen with
drivers="python" our own netfront, which connects when the app opens the network) and hands the
application this.

    network = await devices.network().open()            # our stack: UDP and TCP
    network = await devices.network().open_streams()    # TCP only: ours, or hosted the host's

A hosted build can also hand a stream application the host kernel's TCP instead of our stack
(UNIKERNEL_NETWORK=sockets; unikernel.net.host_sockets): the build passes `open_host` there.
"""

from __future__ import annotations

import os

from unikernel.drivers import Netif
from unikernel.net.service import (
    ADDRESS_VARIABLE,
    NetworkConfigError,
    NetworkService,
    open_network,
)

NETWORK_VARIABLE = "UNIKERNEL_NETWORK"  # "stack" (ours, the default) or "sockets" (hosted)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from unikernel.devices import Network
    from unikernel.net.streams import StreamNetwork
    from unikernel.net.tcp import TcpConfig

    OpenHost = Callable[[Mapping[str, str]], StreamNetwork]


class NetworkDevice:
    def __init__(
        self,
        declared: Network,
        open_netif: Callable[[], Netif | Awaitable[Netif]],
        open_host: OpenHost | None = None,
    ) -> None:
        self.declared = declared
        self.name = declared.name
        self._open_netif = open_netif
        self._open_host = open_host  # hosted builds only: the host kernel's TCP

    def configured(self, environ: Mapping[str, str] | None = None) -> bool:
        """Whether whoever launched us gave this network an address (else it would wait for
        DHCP): a launch with no link to the host gives none."""
        return ADDRESS_VARIABLE in (os.environ if environ is None else environ)

    async def open(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        tcp_config: TcpConfig | None = None,
    ) -> NetworkService:
        """The device, up and configured, with our stack's threads running on it."""
        netif = self._open_netif()
        if not isinstance(netif, Netif):  # a driver that connects first (netfront)
            netif = await netif
        return await open_network(netif, environ=environ, timeout=timeout, tcp_config=tcp_config)

    async def open_streams(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        tcp_config: TcpConfig | None = None,
    ) -> StreamNetwork:
        """TCP for a stream application: our stack's, or with UNIKERNEL_NETWORK=sockets (hosted
        builds) the host kernel's."""
        environ = os.environ if environ is None else environ
        mode = environ.get(NETWORK_VARIABLE, "stack")
        if mode == "sockets":
            if self._open_host is None:
                raise NetworkConfigError(
                    f"{NETWORK_VARIABLE}=sockets: only a hosted build can use the host's "
                    "sockets; this image has its own stack only"
                )
            return self._open_host(environ)
        if mode != "stack":
            raise NetworkConfigError(f"{NETWORK_VARIABLE}={mode!r}: say stack or sockets")
        return await self.open(environ=environ, timeout=timeout, tcp_config=tcp_config)
