"""IPv4 fragment reassembly (RFC 791, RFC 815), with bounded memory and a timeout.

Where fragments overlap, the bytes that arrived first win: a later fragment only fills holes,
so it cannot rewrite a header that was already received (the overlapping-fragment attack).
A fragment that contradicts what is known (a second, different end; data past the end) drops
the whole datagram.

Limits, each a reason the stack counts drops under: concurrent datagrams (a new one is refused
while `max_datagrams` are pending), bytes held across all of them, fragments per datagram, and
`timeout` seconds from a datagram's first fragment.
"""

from __future__ import annotations

from unikernel.net.ipv4 import HEADER_LEN, MAX_LENGTH, Packet
from unikernel.net.malformed import Malformed

TYPE_CHECKING = False
if TYPE_CHECKING:
    Key = tuple[bytes, bytes, int, int]

_FRAGMENT_FIELDS = 0x3FFF  # more fragments, and the offset


class _Datagram:
    __slots__ = ("data", "deadline", "end", "first", "fragments", "ranges")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.data = bytearray()
        self.ranges: list[tuple[int, int]] = []  # received [start, stop), sorted and merged
        self.end: int | None = None  # the payload's length, once the last fragment came
        self.fragments = 0
        self.first: Packet | None = None  # the fragment at offset 0, for its header fields


class Reassembler:
    def __init__(
        self,
        *,
        max_datagrams: int = 64,
        max_bytes: int = 1 << 20,
        max_fragments: int = 64,
        timeout: float = 30.0,
    ) -> None:
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.max_fragments = max_fragments
        self.timeout = timeout
        self.held_bytes = 0
        self.dropped: dict[str, int] = {}
        # Insertion order is deadline order, as every datagram gets the same timeout.
        self._pending: dict[Key, _Datagram] = {}

    def __len__(self) -> int:
        """Datagrams being reassembled."""
        return len(self._pending)

    def add(self, fragment: Packet, now: float) -> Packet | None:
        """Take a fragment; return the whole datagram once it is complete.

        Raises Malformed for a fragment that no datagram could contain. Fragments refused for
        lack of room, and datagrams given up, are counted in `dropped`.
        """
        start = fragment.offset
        size = len(fragment.payload)
        stop = start + size
        if stop + HEADER_LEN > MAX_LENGTH:
            raise Malformed("fragment-overflow")
        if fragment.more_fragments and (size == 0 or size & 7):
            raise Malformed("fragment-length")  # only the last may be short of a multiple of 8
        key = (fragment.source, fragment.destination, fragment.protocol, fragment.ident)
        datagram = self._pending.get(key)
        if datagram is None:
            if len(self._pending) >= self.max_datagrams:
                self._count("reassembly-full")
                return None
            datagram = self._pending[key] = _Datagram(now + self.timeout)
        reason = self._place(datagram, fragment, start, stop)
        if reason is not None:
            self._discard(key, reason)
            return None
        if datagram.end is None or datagram.ranges != [(0, datagram.end)]:
            return None
        self._forget(key)
        return self._whole(datagram)

    def _place(self, datagram: _Datagram, fragment: Packet, start: int, stop: int) -> str | None:
        """Copy the fragment's new bytes in; the reason to give the datagram up, if any."""
        datagram.fragments += 1
        if datagram.fragments > self.max_fragments:
            return "too-many-fragments"
        highest = datagram.ranges[-1][1] if datagram.ranges else 0
        if not fragment.more_fragments:
            if (datagram.end is not None and datagram.end != stop) or highest > stop:
                return "fragment-conflict"
            datagram.end = stop
        elif datagram.end is not None and stop > datagram.end:
            return "fragment-conflict"
        data = datagram.data
        if stop > len(data):
            grow = stop - len(data)
            if self.held_bytes + grow > self.max_bytes:
                return "reassembly-memory"
            data.extend(bytes(grow))
            self.held_bytes += grow
        payload = fragment.payload
        for hole_start, hole_stop in _holes(datagram.ranges, start, stop):
            data[hole_start:hole_stop] = payload[hole_start - start : hole_stop - start]
        datagram.ranges = _merge(datagram.ranges, start, stop)
        if start == 0 and datagram.first is None:
            datagram.first = _header_fields(fragment)
        return None

    def _whole(self, datagram: _Datagram) -> Packet:
        first = datagram.first
        assert first is not None  # the ranges cover offset 0
        return Packet(
            first.source,
            first.destination,
            first.protocol,
            memoryview(datagram.data),
            first.header,
            first.ttl,
            first.tos,
            first.ident,
            first.flags & ~_FRAGMENT_FIELDS,
        )

    def expire(self, now: float) -> int:
        """Give up the datagrams whose time is up; how many."""
        expired = 0
        for key, datagram in list(self._pending.items()):
            if datagram.deadline > now:
                break
            self._discard(key, "reassembly-timeout")
            expired += 1
        return expired

    def next_deadline(self) -> float | None:
        for datagram in self._pending.values():
            return datagram.deadline
        return None

    def _discard(self, key: Key, reason: str) -> None:
        self._forget(key)
        self._count(reason)

    def _forget(self, key: Key) -> None:
        self.held_bytes -= len(self._pending.pop(key).data)

    def _count(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def _header_fields(fragment: Packet) -> Packet:
    """The fragment's header, copied: its views point into a buffer the driver may reuse."""
    return Packet(
        fragment.source,
        fragment.destination,
        fragment.protocol,
        memoryview(b""),
        memoryview(bytes(fragment.header)),
        fragment.ttl,
        fragment.tos,
        fragment.ident,
        fragment.flags,
    )


def _holes(ranges: list[tuple[int, int]], start: int, stop: int) -> list[tuple[int, int]]:
    """The parts of [start, stop) that `ranges` do not cover."""
    holes = []
    position = start
    for low, high in ranges:
        if high <= position:
            continue
        if low >= stop:
            break
        if low > position:
            holes.append((position, low))
        position = max(position, high)
    if position < stop:
        holes.append((position, stop))
    return holes


def _merge(ranges: list[tuple[int, int]], start: int, stop: int) -> list[tuple[int, int]]:
    """`ranges` with [start, stop) added, still sorted, touching ranges joined."""
    merged = []
    for low, high in ranges:
        if high < start or low > stop:
            merged.append((low, high))
        else:
            start, stop = min(start, low), max(stop, high)
    merged.append((start, stop))
    merged.sort()
    return merged
