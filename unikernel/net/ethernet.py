"""Ethernet II frames: destination MAC, source MAC, EtherType, payload.

The NIC adds and strips the frame check sequence and pads short frames, so neither appears
here. 802.1Q tagged frames arrive as EtherType 0x8100, which the stack does not take.
"""

from __future__ import annotations

import struct

from unikernel.net.malformed import Malformed

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview

HEADER_LEN = 14
IPV4 = 0x0800
ARP = 0x0806
BROADCAST = b"\xff" * 6
_HEADER = struct.Struct("!6s6sH")


class Frame:
    """A received frame; `payload` is a view into the frame's buffer, not a copy."""

    __slots__ = ("destination", "ethertype", "payload", "source")

    def __init__(self, destination: bytes, source: bytes, ethertype: int, payload: memoryview):
        self.destination = destination
        self.source = source
        self.ethertype = ethertype
        self.payload = payload


def parse(frame: Buffer) -> Frame:
    if len(frame) < HEADER_LEN:
        raise Malformed("truncated")
    destination, source, ethertype = _HEADER.unpack_from(frame)
    return Frame(destination, source, ethertype, memoryview(frame)[HEADER_LEN:])


def header(destination: bytes, source: bytes, ethertype: int) -> bytes:
    return destination + source + ethertype.to_bytes(2, "big")


def build(destination: bytes, source: bytes, ethertype: int, payload: Buffer) -> bytes:
    return b"".join((destination, source, ethertype.to_bytes(2, "big"), payload))


def is_group(mac: bytes | memoryview) -> bool:
    """Multicast or broadcast: the I/G bit, the lowest bit of the first octet."""
    return bool(mac[0] & 1)


def format_mac(mac: bytes) -> str:
    return mac.hex(":")


def parse_mac(text: str) -> bytes:
    """'02:00:00:00:00:01' (or with dashes) to 6 bytes; ValueError otherwise."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(part) == 2 and _is_hex(part) for part in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes.fromhex("".join(parts))


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def local_mac(seed: bytes) -> bytes:
    """A locally administered unicast MAC made from 6 bytes of `seed` (random bytes, say)."""
    if len(seed) < 6:
        raise ValueError("a MAC needs 6 bytes of seed")
    return bytes([(seed[0] & 0xFC) | 0x02]) + bytes(seed[1:6])
