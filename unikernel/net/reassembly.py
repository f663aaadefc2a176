"""IPv4 fragment reassembly (RFC 791, RFC 815), with bounded memory and a timeout.

Where fragments overlap, the bytes that arrived first win: a later fragment only fills holes,
so it cannot rewrite a header that was already received (the overlapping-fragment attack).
A fragment that contradicts what is known (a second, different end; data past the end) drops
the whole datagram.

Limits, each a reason the stack counts drops under:
- `max_datagrams` pending at once: a fragment of a new datagram beyond them evicts the oldest
  pending one ("reassembly-evicted"). Refusing the new one instead would let a flood of
  fragment trains that never complete lock real traffic out until they time out; evicting the
  oldest costs a flood its own entries first, while a real datagram's fragments, which come
  back to back, complete unless a flood outpaces them by `max_datagrams` datagrams in between.
- `max_bytes` held across all of them, counted as the bytes actually kept (each fragment's
  bytes not already received, as overlaps keep the first) plus DATAGRAM_OVERHEAD for each
  datagram, and never by the highest offset seen: a few tiny fragments near 64 KiB cost what
  they hold. A fragment that would go past the budget evicts the oldest other datagrams
  ("reassembly-memory") until it fits; one that cannot fit alone drops its own datagram.
- `max_fragments` per datagram ("too-many-fragments"), which also bounds the pieces kept.
- `timeout` seconds from a datagram's first fragment ("reassembly-timeout").

Fragments are kept as the pieces that were new when they came, not in a buffer as long as the
datagram, and joined once the datagram is complete.
"""

from __future__ import annotations

from unikernel.net.ipv4 import HEADER_LEN, MAX_LENGTH, Packet
from unikernel.net.malformed import Malformed

TYPE_CHECKING = False
if TYPE_CHECKING:
    Key = tuple[bytes, bytes, int, int]

_FRAGMENT_FIELDS = 0x3FFF  # more fragments, and the offset
# What a pending datagram costs besides its bytes: its record, the lists and the copy of the
# first fragment's header come to about this much in CPython.
DATAGRAM_OVERHEAD = 1024


class _Datagram:
    __slots__ = ("deadline", "end", "first", "fragments", "held", "pieces", "ranges")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.pieces: list[tuple[int, bytes]] = []  # (offset, bytes): what each fragment added
        self.ranges: list[tuple[int, int]] = []  # received [start, stop), sorted and merged
        self.end: int | None = None  # the payload's length, once the last fragment came
        self.fragments = 0
        self.first: Packet | None = None  # the fragment at offset 0, for its header fields
        self.held = DATAGRAM_OVERHEAD  # what it counts against max_bytes


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
        # Insertion order is age and deadline order, as every datagram gets the same timeout.
        self._pending: dict[Key, _Datagram] = {}

    def __len__(self) -> int:
        """Datagrams being reassembled."""
        return len(self._pending)

    def add(self, fragment: Packet, now: float) -> Packet | None:
        """Take a fragment; return the whole datagram once it is complete.

        Raises Malformed for a fragment that no datagram could contain. Datagrams given up
        (evicted, contradicted, timed out) are counted in `dropped`.
        """
        start = fragment.offset
        size = len(fragment.payload)
        stop = start + size
        if stop + HEADER_LEN > MAX_LENGTH:
            raise Malformed("fragment-overflow")
        if fragment.more_fragments and (size == 0 or size & 7):
            raise Malformed("fragment-length")  # only the last may be short of a multiple of 8
        key = (fragment.source, fragment.destination, fragment.protocol, fragment.ident)
        pending = self._pending
        datagram = pending.get(key)
        if datagram is None:
            while len(pending) >= self.max_datagrams and pending:
                self._discard(next(iter(pending)), "reassembly-evicted")
            datagram = pending[key] = _Datagram(now + self.timeout)
            self.held_bytes += datagram.held
        reason = self._place(key, datagram, fragment, start, stop)
        if reason is not None:
            self._discard(key, reason)
            return None
        if datagram.end is None or datagram.ranges != [(0, datagram.end)]:
            return None
        self._forget(key)
        return self._whole(datagram)

    def _place(
        self, key: Key, datagram: _Datagram, fragment: Packet, start: int, stop: int
    ) -> str | None:
        """Keep the fragment's new bytes; the reason to give the datagram up, if any."""
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
        holes = _holes(datagram.ranges, start, stop)
        new = sum(hole_stop - hole_start for hole_start, hole_stop in holes)
        if not self._make_room(key, new):
            return "reassembly-memory"
        if not new:
            return None  # a duplicate, or inside what is there: nothing to keep
        payload = fragment.payload
        for hole_start, hole_stop in holes:
            # Copied: the payload is a view into a buffer the driver reuses.
            datagram.pieces.append(
                (hole_start, bytes(payload[hole_start - start : hole_stop - start]))
            )
        datagram.held += new
        self.held_bytes += new
        datagram.ranges = _merge(datagram.ranges, start, stop)
        if start == 0 and datagram.first is None:
            datagram.first = _header_fields(fragment)
        return None

    def _make_room(self, key: Key, size: int) -> bool:
        """Evict the oldest datagrams other than `key`'s until `size` more bytes fit; whether
        they do."""
        pending = self._pending
        while self.held_bytes + size > self.max_bytes:
            victim = next((other for other in pending if other != key), None)
            if victim is None:
                return False  # it cannot fit even alone
            self._discard(victim, "reassembly-memory")
        return True

    def _whole(self, datagram: _Datagram) -> Packet:
        first = datagram.first
        assert first is not None  # the ranges cover offset 0
        datagram.pieces.sort()
        data = b"".join(piece for _, piece in datagram.pieces)
        return Packet(
            first.source,
            first.destination,
            first.protocol,
            memoryview(data),
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
        self.held_bytes -= self._pending.pop(key).held

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
