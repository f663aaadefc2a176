"""Bookkeeping for data out of order: the receiver's reorder queue and the sender's record of
what the peer has selectively acknowledged (RFC 2018).

Sequence numbers here are a connection's unwrapped ones: plain ints that never wrap.
"""

from __future__ import annotations

from bisect import bisect_right

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytes | bytearray | memoryview


class ReorderQueue:
    """Data that arrived beyond a hole, held until the hole fills (RFC 9293 3.10.7.4, seventh
    step: segments beyond RCV.NXT may be kept for later processing).

    Chunks never overlap: only bytes not held yet are stored. The window bounds the bytes held;
    `max_chunks` bounds the count, so that many tiny segments cannot cost more in per-chunk
    overhead than their payload says.
    """

    __slots__ = ("_chunks", "_max_chunks", "_starts", "last", "size")

    def __init__(self, max_chunks: int) -> None:
        self._chunks: list[bytes] = []
        self._starts: list[int] = []  # sorted; _starts[i] is where _chunks[i] begins
        self._max_chunks = max_chunks
        self.size = 0  # bytes held
        self.last = -1  # where the latest arrival began: its block is reported first

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, start: int, data: Buffer) -> int:
        """Keep the bytes of `data` (beginning at `start`) that are not held yet; return how
        many bytes the queue grew by (dropping chunks past the bound counts negative)."""
        end = start + len(data)
        base = start
        starts, chunks = self._starts, self._chunks
        self.last = start
        grown = 0
        i = bisect_right(starts, start) - 1
        if i < 0 or starts[i] + len(chunks[i]) <= start:
            i += 1  # no chunk covers `start`: the first that may overlap comes next
        pos = start
        while pos < end:
            if i < len(starts) and starts[i] <= pos:
                pos = max(pos, starts[i] + len(chunks[i]))  # held already: skip it
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
        while len(chunks) > self._max_chunks:
            # Renege on the chunk farthest from the hole (RFC 2018 8 allows it): the sender
            # retransmits what a timeout finds missing.
            starts.pop()
            dropped = len(chunks.pop())
            self.size -= dropped
            grown -= dropped
        return grown

    def take(self, rcv_nxt: int) -> list[bytes]:
        """Remove and return, in order, the data that now continues the stream at `rcv_nxt`."""
        starts, chunks = self._starts, self._chunks
        ready: list[bytes] = []
        while starts and starts[0] <= rcv_nxt:
            start = starts.pop(0)
            chunk = chunks.pop(0)
            self.size -= len(chunk)
            if start + len(chunk) > rcv_nxt:
                piece = chunk[rcv_nxt - start :] if start < rcv_nxt else chunk
                ready.append(piece)
                rcv_nxt += len(piece)
        return ready

    def blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` SACK blocks (start, end): contiguous runs of held data, the run with
        the latest arrival first (RFC 2018 4), then the others from the lowest."""
        runs: list[tuple[int, int]] = []
        for start, chunk in zip(self._starts, self._chunks, strict=True):
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], start + len(chunk))
            else:
                runs.append((start, start + len(chunk)))
        last = self.last
        first = [run for run in runs if run[0] <= last < run[1]]
        rest = [run for run in runs if not run[0] <= last < run[1]]
        return (first + rest)[:limit]

    def clear(self) -> int:
        """Drop everything; return the bytes freed."""
        freed = self.size
        self._chunks.clear()
        self._starts.clear()
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
