"""ARP for IPv4 over Ethernet (RFC 826): the neighbour cache, resolution, replies.

The engine keeps IPv4 packets for an address it is resolving (a few per address, the oldest
dropped first), sends a broadcast request, repeats it every `retry_interval` seconds up to
`attempts` times, then gives up and drops them. A reply releases them as Ethernet frames.

As RFC 826 merges: an ARP packet updates the entry of its sender if there is one, and creates
one only when it is addressed to us (or answers our question). Entries live `lifetime` seconds;
a stale entry is simply resolved again on the next packet to that address.
"""

from __future__ import annotations

import struct

from unikernel.net import ethernet
from unikernel.net.ipv4 import ANY
from unikernel.net.malformed import Malformed

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview

REQUEST = 1
REPLY = 2
PACKET_LEN = 28
_ZERO_MAC = bytes(6)

# hardware type, protocol type, their lengths, operation, sender MAC and IP, target MAC and IP
_PACKET = struct.Struct("!HHBBH6s4s6s4s")


class ArpPacket:
    __slots__ = ("operation", "sender_ip", "sender_mac", "target_ip", "target_mac")

    def __init__(
        self,
        operation: int,
        sender_mac: bytes,
        sender_ip: bytes,
        target_mac: bytes,
        target_ip: bytes,
    ) -> None:
        self.operation = operation
        self.sender_mac = sender_mac
        self.sender_ip = sender_ip
        self.target_mac = target_mac
        self.target_ip = target_ip


def parse(data: Buffer) -> ArpPacket:
    if len(data) < PACKET_LEN:
        raise Malformed("truncated")
    hardware, protocol, hardware_len, protocol_len, operation, *addresses = _PACKET.unpack_from(
        data
    )
    if (hardware, protocol, hardware_len, protocol_len) != (1, ethernet.IPV4, 6, 4):
        raise Malformed("unsupported")  # ARP for another link or protocol
    if operation not in (REQUEST, REPLY):
        raise Malformed("operation")
    sender_mac, sender_ip, target_mac, target_ip = addresses
    if ethernet.is_group(sender_mac):
        raise Malformed("sender")
    return ArpPacket(operation, sender_mac, sender_ip, target_mac, target_ip)


def build(
    operation: int, sender_mac: bytes, sender_ip: bytes, target_mac: bytes, target_ip: bytes
) -> bytes:
    return _PACKET.pack(
        1, ethernet.IPV4, 6, 4, operation, sender_mac, sender_ip, target_mac, target_ip
    )


class _Resolution:
    __slots__ = ("attempts", "next_try", "packets")

    def __init__(self, next_try: float) -> None:
        self.attempts = 1
        self.next_try = next_try
        self.packets: list[bytes] = []


class ArpEngine:
    """Fed ARP payloads, IPv4 packets to send and the time; returns Ethernet frames to send."""

    def __init__(
        self,
        mac: bytes,
        address: bytes | None = None,
        *,
        lifetime: float = 60.0,
        retry_interval: float = 1.0,
        attempts: int = 3,
        max_queued: int = 8,
        max_resolving: int = 64,
        max_entries: int = 1024,
    ) -> None:
        self.mac = mac
        self.address = address  # None until the interface has one (DHCP in progress)
        self.lifetime = lifetime
        self.retry_interval = retry_interval
        self.attempts = attempts
        self.max_queued = max_queued
        self.max_resolving = max_resolving
        self.max_entries = max_entries
        self.dropped: dict[str, int] = {}
        self.conflicts = 0  # ARP packets from another host claiming our address
        # Insertion order is expiry order, as an update re-inserts with the same lifetime.
        self._cache: dict[bytes, tuple[bytes, float]] = {}
        self._resolving: dict[bytes, _Resolution] = {}

    def lookup(self, address: bytes, now: float) -> bytes | None:
        """The MAC for `address`, if known and fresh."""
        entry = self._cache.get(address)
        if entry is not None and entry[1] > now:
            return entry[0]
        return None

    def queue(self, address: bytes, packet: bytes, now: float) -> list[bytes]:
        """Hold an IPv4 packet until `address` is resolved; the frames to send now (a request,
        unless one is already out)."""
        resolution = self._resolving.get(address)
        if resolution is None:
            if len(self._resolving) >= self.max_resolving:
                self._count("resolving-full")
                return []
            resolution = self._resolving[address] = _Resolution(now + self.retry_interval)
            resolution.packets.append(packet)
            return [self._request(address)]
        if len(resolution.packets) >= self.max_queued:
            del resolution.packets[0]
            self._count("queue-full")
        resolution.packets.append(packet)
        return []

    def receive(self, payload: Buffer, now: float) -> list[bytes]:
        """Take an ARP packet; the frames to send: a reply, packets it released. Raises
        Malformed."""
        arp = parse(payload)
        address = self.address
        if address is not None and arp.sender_ip == address:
            if arp.sender_mac != self.mac:
                self.conflicts += 1
            return []
        frames = []
        for_us = address is not None and arp.target_ip == address
        sender = arp.sender_ip
        if sender != ANY and (for_us or sender in self._cache or sender in self._resolving):
            frames = self._learn(sender, arp.sender_mac, now)
        if for_us and arp.operation == REQUEST:
            assert address is not None
            reply = build(REPLY, self.mac, address, arp.sender_mac, sender)
            frames.append(ethernet.build(arp.sender_mac, self.mac, ethernet.ARP, reply))
        return frames

    def tick(self, now: float) -> list[bytes]:
        """Repeat requests that went unanswered, give up on those out of attempts, forget
        stale entries; the frames to send."""
        frames = []
        for address, resolution in list(self._resolving.items()):
            if resolution.next_try > now:
                continue
            if resolution.attempts >= self.attempts:
                del self._resolving[address]
                self._count("unresolved", len(resolution.packets))
                continue
            resolution.attempts += 1
            resolution.next_try = now + self.retry_interval
            frames.append(self._request(address))
        cache = self._cache
        while cache:
            oldest = next(iter(cache))
            if cache[oldest][1] > now:
                break
            del cache[oldest]
        return frames

    def next_deadline(self) -> float | None:
        """When tick() has requests to repeat (stale entries need no timer)."""
        resolving = self._resolving
        if not resolving:  # nearly always: asked after every read and write of frames
            return None
        return min(r.next_try for r in resolving.values())

    def announce(self) -> bytes:
        """A gratuitous ARP request for our address, so that neighbours update their caches."""
        if self.address is None:
            raise ValueError("no address to announce")
        request = build(REQUEST, self.mac, self.address, _ZERO_MAC, self.address)
        return ethernet.build(ethernet.BROADCAST, self.mac, ethernet.ARP, request)

    def __len__(self) -> int:
        """Entries in the cache, fresh or stale."""
        return len(self._cache)

    def _learn(self, address: bytes, mac: bytes, now: float) -> list[bytes]:
        cache = self._cache
        cache.pop(address, None)
        if len(cache) >= self.max_entries:
            del cache[next(iter(cache))]
        cache[address] = (mac, now + self.lifetime)
        resolution = self._resolving.pop(address, None)
        if resolution is None:
            return []
        return [ethernet.build(mac, self.mac, ethernet.IPV4, p) for p in resolution.packets]

    def _request(self, address: bytes) -> bytes:
        request = build(REQUEST, self.mac, self.address or ANY, _ZERO_MAC, address)
        return ethernet.build(ethernet.BROADCAST, self.mac, ethernet.ARP, request)

    def _count(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
