"""The interface ioctls both NIC drivers need, on any socket the kernel offers: struct ifreq
and the numbers from <linux/sockios.h>, <linux/if.h> and <linux/if_arp.h>, which Python 3.11's
_socket lacks."""

from __future__ import annotations

import fcntl
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
ARPHRD_ETHER = 1
IFNAMSIZ = 16

# struct ifreq is 40 bytes: the name, then a union read as flags, an MTU or a sockaddr.
IFREQ_FLAGS = "16sH22x"
IFREQ_MTU = "16si20x"
IFREQ_HWADDR = "16sH6s16x"

ETHERNET_MTU = 1500
FRAME_OVERHEAD = 18  # Ethernet header plus one VLAN tag, over the MTU


def mtu(fd: int, name: str) -> int:
    """The interface's MTU; Ethernet's 1500 if the kernel will not say."""
    try:
        answer = fcntl.ioctl(fd, SIOCGIFMTU, struct.pack(IFREQ_MTU, name.encode(), 0))
    except OSError:
        return ETHERNET_MTU
    value: int = struct.unpack(IFREQ_MTU, answer)[1]
    return value


def hardware_address(fd: int, name: str) -> tuple[int, bytes]:
    """The interface's hardware type (ARPHRD_*) and address."""
    answer = fcntl.ioctl(fd, SIOCGIFHWADDR, struct.pack(IFREQ_HWADDR, name.encode(), 0, b""))
    family, address = struct.unpack(IFREQ_HWADDR, answer)[1:]
    return family, bytes(address)
