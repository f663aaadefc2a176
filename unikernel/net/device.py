"""A declared network, wired to its frame device: the build picks the driver for the target (a
TAP device hosted, AF_PACKET on the VM's NIC under QEMU and Xen) and hands the application this.

    network = await devices.network().open()
"""

from __future__ import annotations

import os

from unikernel.net.service import ADDRESS_VARIABLE, NetworkService, open_network

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from unikernel.devices import Network
    from unikernel.drivers import Netif
    from unikernel.net.tcp import TcpConfig


class NetworkDevice:
    def __init__(self, declared: Network, open_netif: Callable[[], Netif]) -> None:
        self.declared = declared
        self.name = declared.name
        self._open_netif = open_netif

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
        return await open_network(
            self._open_netif(), environ=environ, timeout=timeout, tcp_config=tcp_config
        )
