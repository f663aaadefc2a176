"""Bookkeeping for data out of order: the receiver's reorder queue and the sender's record of
what the peer has selectively acknowledged (RFC 2018).

Sequence numbers here are a connection's unwrapped ones: plain ints that never wrap.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview

# A chunk smaller than this on average is not worth its overhead (a list slot, an int and a
# bytes object: about 100 bytes): past `max_chunks`, a reorder queue of such chunks reneges.
_WORTHWHILE_CHUNK = 512


class ReorderQueue:
    """Data that arrived beyond a hole, held until the hole fills (RFC 9293 3.10.7.4, seventh
    step: segments beyond RCV.NXT may be kept for later processing).

    Chunks never overlap: only bytes not held yet are stored. The window bounds the bytes held;
    `max_chunks` bounds the count of chunks smaller than a segment worth the overhead, so that
    many tiny segments cannot cost more in per-chunk overhead than their payload says. Full
    segments are never dropped for their number: a window's worth of them may come after one
    hole, and each one dropped after it was SACKed costs the sender a retransmission timeout.

    The runs of contiguous data (the SACK blocks) are kept alongside, updated per arrival, so
    that an ACK costs the same however many segments wait behind the hole.
    """

    __slots__ = (
        "_chunks",
        "_max_chunks",
        "_run_ends",
        "_run_starts",
        "_starts",
        "duplicate",
        "last",
        "size",
    )

    def __init__(self, max_chunks: int) -> None:
        self._chunks: list[bytes] = []
        self._starts: list[int] = []  # sorted; _starts[i] is where _chunks[i] begins
        self._max_chunks = max_chunks
        # The contiguous runs of held data, sorted, neither overlapping nor touching.
        self._run_starts: list[int] = []
        self._run_ends: list[int] = []
        self.size = 0  # bytes held
        self.last = -1  # where the latest arrival began: its block is reported first
        # The first run of the latest arrival that was held already (start, end), for a
        # D-SACK (RFC 2883); None if all of it was new.
        self.duplicate: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, start: int, data: Buffer) -> int:
        """Keep the bytes of `data` (beginning at `start`) that are not held yet; return how
        many bytes the queue grew by (dropping chunks past the bound counts negative)."""
        end = start + len(data)
        base = start
        starts, chunks = self._starts, self._chunks
        self.last = start
        duplicate: tuple[int, int] | None = None
        grown = 0
        i = bisect_right(starts, start) - 1
        if i < 0 or starts[i] + len(chunks[i]) <= start:
            i += 1  # no chunk covers `start`: the first that may overlap comes next
        pos = start
        while pos < end:
            if i < len(starts) and starts[i] <= pos:
                held_end = starts[i] + len(chunks[i])  # held already: skip it
                if held_end > pos:
                    if duplicate is None:
                        duplicate = (pos, min(held_end, end))
                    elif duplicate[1] == pos:  # the same run of duplicates goes on
                        duplicate = (duplicate[0], min(held_end, end))
                    pos = held_end
                i += 1
                continue
            stop = min(end, starts[i]) if i < len(starts) else end
            piece = bytes(data[pos - base : stop - base])
            starts.insert(i, pos)
            chunks.insert(i, piece)
            grown += len(piece)
            i += 1
            pos = stop
        self.size += grown
        self.duplicate = duplicate
        if grown:
            self._merge_run(start, end)
        if len(chunks) > self._max_chunks and self.size < len(chunks) * _WORTHWHILE_CHUNK:
            grown -= self._drop_farthest()
        return grown

    def _merge_run(self, start: int, end: int) -> None:
        """[start, end) is held now: merge it into the runs it overlaps or touches."""
        run_starts, run_ends = self._run_starts, self._run_ends
        i = bisect_left(run_ends, start)  # the first run that ends at `start` or later
        j = bisect_right(run_starts, end, i)  # past the last run that starts by `end`
        if i < j:
            start = min(start, run_starts[i])
            end = max(end, run_ends[j - 1])
        run_starts[i:j] = (start,)
        run_ends[i:j] = (end,)

    def _drop_farthest(self) -> int:
        """Renege on chunks farthest from the hole (RFC 2018 8 allows it) until the bound
        holds: the sender retransmits them when it finds out. Return the bytes dropped."""
        starts, chunks = self._starts, self._chunks
        dropped = 0
        while len(chunks) > self._max_chunks and self.size < len(chunks) * _WORTHWHILE_CHUNK:
            starts.pop()
            size = len(chunks.pop())
            self.size -= size
            dropped += size
        run_starts, run_ends = self._run_starts, self._run_ends
        if not chunks:
            run_starts.clear()
            run_ends.clear()
            return dropped
        held_end = starts[-1] + len(chunks[-1])
        while run_starts[-1] >= held_end:
            run_starts.pop()
            run_ends.pop()
        run_ends[-1] = held_end  # chunks within a run are contiguous: it ends with the last
        return dropped

    def take(self, rcv_nxt: int) -> list[bytes]:
        """Remove and return, in order, the data that now continues the stream at `rcv_nxt`."""
        starts, chunks = self._starts, self._chunks
        ready: list[bytes] = []
        count = 0
        for start, chunk in zip(starts, chunks, strict=False):
            if start > rcv_nxt:
                break
            count += 1
            self.size -= len(chunk)
            if start + len(chunk) > rcv_nxt:
                piece = chunk[rcv_nxt - start :] if start < rcv_nxt else chunk
                ready.append(piece)
                rcv_nxt += len(piece)
        if count:
            del starts[:count]
            del chunks[:count]
            # The runs taken are those now below RCV.NXT; the rest all start above it.
            taken = bisect_right(self._run_starts, rcv_nxt)
            del self._run_starts[:taken]
            del self._run_ends[:taken]
        return ready

    def blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` SACK blocks (start, end): contiguous runs of held data, the run with
        the latest arrival first (RFC 2018 4), then the others from the lowest."""
        run_starts, run_ends = self._run_starts, self._run_ends
        last = self.last
        first = bisect_right(run_starts, last) - 1
        if first >= 0 and last < run_ends[first]:
            blocks = [(run_starts[first], run_ends[first])]
        else:
            blocks = []
            first = -1
        i = 0
        count = len(run_starts)
        while len(blocks) < limit and i < count:
            if i != first:
                blocks.append((run_starts[i], run_ends[i]))
            i += 1
        return blocks

    def clear(self) -> int:
        """Drop everything; return the bytes freed."""
        freed = self.size
        self._chunks.clear()
        self._starts.clear()
        self._run_starts.clear()
        self._run_ends.clear()
        self.size = 0
        return freed


class Scoreboard:
    """The sender's view of the peer's SACK blocks: sorted, merged [start, end) ranges above
    SND.UNA, bounded in number (the peer decides how many blocks it sends us)."""

    __slots__ = ("_max", "ranges")

    def __init__(self, max_ranges: int) -> None:
        self.ranges: list[list[int]] = []
        self._max = max_ranges

    def __bool__(self) -> bool:
        return bool(self.ranges)

    @property
    def total(self) -> int:
        """Bytes SACKed."""
        return sum(end - start for start, end in self.ranges)

    @property
    def highest(self) -> int:
        """The end of the highest SACKed range (0 if none)."""
        return self.ranges[-1][1] if self.ranges else 0

    def add(self, start: int, end: int) -> int:
        """Record [start, end) as SACKed; return how many of its bytes were not already."""
        ranges = self.ranges
        i = 0
        while i < len(ranges) and ranges[i][1] < start:
            i += 1
        # Merge every range that touches [start, end).
        j = i
        new = end - start
        low, high = start, end
        while j < len(ranges) and ranges[j][0] <= end:
            left, right = ranges[j]
            new -= max(0, min(right, end) - max(left, start))  # held already
            low = min(low, left)
            high = max(high, right)
            j += 1
        ranges[i:j] = [[low, high]]
        if len(ranges) > self._max:
            ranges.pop()
        return new

    def prune(self, una: int) -> None:
        """Forget what the cumulative acknowledgment now covers."""
        ranges = self.ranges
        while ranges and ranges[0][1] <= una:
            ranges.pop(0)
        if ranges and ranges[0][0] < una:
            ranges[0][0] = una

    def uncovered(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) not SACKed, in order."""
        parts: list[tuple[int, int]] = []
        pos = start
        for left, right in self.ranges:
            if right <= pos:
                continue
            if left >= end:
                break
            if left > pos:
                parts.append((pos, left))
            pos = right
            if pos >= end:
                return parts
        parts.append((pos, end))
        return parts

    def skip(self, seq: int) -> int:
        """`seq`, or the end of the SACKed range it falls in: where the next byte worth
        sending is."""
        for start, end in self.ranges:
            if start > seq:
                break
            if seq < end:
                return end
        return seq

    def next_start(self, seq: int) -> int:
        """Where the first SACKed range above `seq` begins (-1 if none): a retransmission
        stops there."""
        for start, _ in self.ranges:
            if start > seq:
                return start
        return -1

    def clear(self) -> None:
        self.ranges.clear()
