"""The hosted unikernel's network: the link its launcher made for it, in the network namespace
the process runs in, named in the environment.

    UNIKERNEL_TAP=NAME       a TAP device (tap.py): bench's unikernel-hosted, `unikernel run`
    UNIKERNEL_PACKET=NAME    one end of a veth pair, taken whole with an AF_PACKET socket, as
                             a VM takes its NIC: bench's unikernel-hosted-veth, on the link
                             linux-veth runs on. Offloads off, on PACKET_MMAP rings
                             (packet_ring.py): MTU-sized frames, a batch without a system
                             call each. On, one system call a frame (packet.py): frames of
                             up to 64 KiB make those few, and the rings' 64 KiB slots were
                             slower (to us, 2.7 against 4.0 Gbit/s, medians of 6, 2026-12-07)
    UNIKERNEL_LINK_OFFLOADS  "on": with the link's offloads (checksums, TCP super-packets);
                             "off", the default: every frame whole and checksummed
"""

from __future__ import annotations

import os

from unikernel.drivers import Netif

TAP_VARIABLE = "UNIKERNEL_TAP"
PACKET_VARIABLE = "UNIKERNEL_PACKET"
OFFLOADS_VARIABLE = "UNIKERNEL_LINK_OFFLOADS"


def launch_link() -> Netif:
    """The link whoever launched us made for this process (it must exist, in our namespace)."""
    offloads = os.environ.get(OFFLOADS_VARIABLE, "off")
    if offloads not in ("on", "off"):
        raise ValueError(f"{OFFLOADS_VARIABLE} is on or off, not {offloads!r}")
    packet = os.environ.get(PACKET_VARIABLE)
    if packet:
        if offloads == "on":
            from unikernel.drivers.packet import PacketNetif

            return PacketNetif(packet, offloads=True)
        from unikernel.drivers.packet_ring import PacketRingNetif

        return PacketRingNetif(packet, offloads=False)
    tap = os.environ.get(TAP_VARIABLE)
    if tap:
        from unikernel.drivers.tap import TapNetif

        return TapNetif(tap, existing=True, offloads=offloads == "on")
    raise FileNotFoundError(
        f"a hosted unikernel attaches to the link its launcher made: set {TAP_VARIABLE} to a "
        f"TAP device (ip tuntap add dev NAME mode tap) or {PACKET_VARIABLE} to an Ethernet "
        "interface (a veth end) in our network namespace; bench and `unikernel run` make one"
    )
