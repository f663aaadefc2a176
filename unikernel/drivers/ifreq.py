"""The interface ioctls both NIC drivers need, on any socket the kernel offers: struct ifreq
and the numbers from <linux/sockios.h>, <linux/if.h> and <linux/if_arp.h>, which Python 3.11's
_socket lacks."""

from __future__ import annotations

import array
import fcntl
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
SIOCETHTOOL = 0x8946
ETHTOOL_GTSO = 0x1E  # <linux/ethtool.h>: is TCP segmentation offload on?
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


def segments_tcp(fd: int, name: str) -> bool:
    """Whether the interface cuts TCP super-packets itself (TSO on, as `ethtool -k` shows). A
    kernel cuts them in software for a NIC without, but only with its own TCP (CONFIG_INET),
    which the image's kernel may lack."""
    value = array.array("I", (ETHTOOL_GTSO, 0))  # struct ethtool_value {cmd, data}
    request = struct.pack("16sQ16x", name.encode(), value.buffer_info()[0])
    try:
        fcntl.ioctl(fd, SIOCETHTOOL, request)
    except OSError:
        return False
    return bool(value[1])
