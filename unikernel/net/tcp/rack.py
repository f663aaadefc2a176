"""RACK, time-based loss detection (RFC 8985 6), and the record that lets a recovery be undone
when it proves spurious (RFC 3708, RFC 3522).

Sans-IO: the sender (sender.py) feeds in what it sent and when, what each ACK delivered and the
time; these classes answer with decisions (which ranges are lost, when to look again) and never
send, arm a timer or read a clock. They are used only where SACK is negotiated: RACK needs to
know which segments sent after a hole were delivered (RFC 8985 2).

Sequence numbers are the connection's unwrapped ones. Times are the `now` the layer passes in.

The transmission record is a run-length list over [SND.UNA, SND.MAX): entry i covers
[starts[i], starts[i + 1]) (the last one up to `end`), with the time it was last sent, the order
of that transmission among all of ours, and flags (retransmitted, marked lost). New data sent in
one go at one time is one entry, so a bulk transfer costs one entry per output() call rather
than one per segment. The order breaks ties between transmissions at the same time exactly,
where RFC 8985 6.2 step 2 falls back on sequence numbers (RACK_sent_after): within one entry,
which is new data sent in sequence order, the sequence number still decides.
"""

from __future__ import annotations

from bisect import bisect_right

RETRANSMITTED = 1
LOST = 2
DUP_THRESH = 3  # RFC 8985 6.2 step 4 (RFC 5681's DupThresh)
REO_WND_PERSIST = 16  # RFC 8985 6.2 step 4: D-SACK-free recoveries before reo_wnd resets
# Our timestamp clock's tick (RFC 7323): the reordering window's base is never below it, so a
# path whose RTT the clock can hardly tell from zero (a LAN, a tap device) still tolerates a
# quarter of a millisecond of reordering, where min_RTT / 4 alone would tolerate none.
GRANULARITY = 0.001
_INF = float("inf")
# Times are floats in seconds: a segment whose wait ends within this of now is due, lest
# rounding (ts + (now - ts) may exceed now) put off by a timer what is due at once.
_EPSILON = 1e-6
_MAX_UNDO_RANGES = 512  # an episode retransmitting more than this is not undone


class Rack:
    """RACK's per-connection state (RFC 8985 6.1) and the transmission record."""

    __slots__ = (
        "_end",
        "_flags",
        "_orders",
        "_sent",
        "_starts",
        "_times",
        "dsack_round",
        "end_seq",
        "fack",
        "min_rtt",
        "reo_wnd_incr",
        "reo_wnd_persist",
        "reordering_seen",
        "rtt",
        "xmit_order",
        "xmit_ts",
    )

    def __init__(self, start: int) -> None:
        self._starts: list[int] = []
        self._times: list[float] = []
        self._orders: list[int] = []
        self._flags: list[int] = []
        self._end = start  # SND.MAX as recorded here
        self._sent = 0  # transmissions so far: the order of the latest
        # RACK.xmit_ts, RACK.end_seq: the most recently sent segment delivered, and the order
        # of its transmission (-1: none yet).
        self.xmit_ts = 0.0
        self.xmit_order = -1
        self.end_seq = start
        self.rtt = 0.0  # RACK.rtt: the RTT of that segment
        self.min_rtt = _INF  # RACK.min_RTT
        self.fack = start  # RACK.fack: the highest sequence delivered
        self.reordering_seen = False
        self.reo_wnd_incr = 1  # RACK.reo_wnd_mult
        self.reo_wnd_persist = REO_WND_PERSIST
        self.dsack_round = -1  # RACK.dsack_round (-1: none)

    def __len__(self) -> int:
        return len(self._starts)

    # What left (RFC 8985 6.1).

    def sent(self, start: int, end: int, now: float, retransmission: bool) -> None:
        """[start, end) went out at `now`; a retransmission takes the range's new time and
        clears any mark of loss."""
        starts = self._starts
        if start >= self._end:
            if (
                not retransmission
                and starts
                and start == self._end
                and self._flags[-1] == 0
                and self._orders[-1] == self._sent
                and self._times[-1] == now
            ):
                self._end = end  # continues the latest transmission: the same entry
                return
            self._sent += 1
            starts.append(start)
            self._times.append(now)
            self._orders.append(self._sent)
            self._flags.append(RETRANSMITTED if retransmission else 0)
            self._end = end
            return
        self._sent += 1
        end = min(end, self._end)
        first = self._split(start)
        last = self._split(end) if end < self._end else len(starts)
        del starts[first + 1 : last]
        del self._times[first + 1 : last]
        del self._orders[first + 1 : last]
        del self._flags[first + 1 : last]
        self._times[first] = now
        self._orders[first] = self._sent
        self._flags[first] = RETRANSMITTED

    def _split(self, seq: int) -> int:
        """The index of the entry that starts at `seq`, cutting the one around it in two."""
        starts = self._starts
        i = bisect_right(starts, seq) - 1
        if i < 0:
            starts.insert(0, seq)  # below everything recorded: should not happen
            self._times.insert(0, 0.0)
            self._orders.insert(0, 0)
            self._flags.insert(0, 0)
            return 0
        if starts[i] == seq:
            return i
        starts.insert(i + 1, seq)
        self._times.insert(i + 1, self._times[i])
        self._orders.insert(i + 1, self._orders[i])
        self._flags.insert(i + 1, self._flags[i])
        return i + 1

    def acked(self, una: int) -> None:
        """Forget what the cumulative acknowledgment `una` covers."""
        starts = self._starts
        if not starts or starts[0] >= una:
            return
        if una >= self._end:
            starts.clear()
            self._times.clear()
            self._orders.clear()
            self._flags.clear()
            return
        i = bisect_right(starts, una) - 1
        if i:
            del starts[:i]
            del self._times[:i]
            del self._orders[:i]
            del self._flags[:i]
        starts[0] = una

    # An ACK arriving (RFC 8985 6.2).

    def sample_rtt(self, rtt: float) -> None:
        """Step 1: an RTT measurement (RFC 6298 or 7323) for RACK.min_RTT."""
        if rtt < self.min_rtt:
            self.min_rtt = rtt

    def delivered(self, ranges: list[tuple[int, int]], now: float, echo_ms: int) -> None:
        """Steps 1 to 3 for the ranges an ACK newly delivered, cumulatively or by SACK (in
        ascending order): the RTT, the most recently sent segment delivered, reordering.
        `echo_ms` is the ACK's TSecr on our clock in whole milliseconds (-1: no timestamps)."""
        starts, times, orders, flags = self._starts, self._times, self._orders, self._flags
        count = len(starts)
        best_order = self.xmit_order
        best_end = self.end_seq
        best_ts = self.xmit_ts
        min_rtt = self.min_rtt
        fack = self.fack
        for low, high in ranges:
            i = bisect_right(starts, low) - 1
            if i < 0:
                i = 0
            while i < count and starts[i] < high:
                piece_end = min(high, starts[i + 1] if i + 1 < count else self._end)
                ts = times[i]
                rtt = now - ts
                if flags[i] & RETRANSMITTED:
                    # Step 2: an ACK for a retransmitted range may be for its first copy, and
                    # would then make RACK.rtt far too short: skip it if the timestamps say
                    # so, or if it came back sooner than any round trip can.
                    valid = (echo_ms < 0 or echo_ms >= int(ts * 1000)) and rtt >= min_rtt
                else:
                    valid = True
                    if piece_end < fack:
                        # Step 3: original data delivered below what was delivered already
                        # arrived out of order.
                        self.reordering_seen = True
                    if rtt < min_rtt:
                        min_rtt = rtt
                if piece_end > fack:
                    fack = piece_end
                order = orders[i]
                if valid and (order > best_order or (order == best_order and piece_end > best_end)):
                    best_order = order
                    best_end = piece_end
                    best_ts = ts
                    self.rtt = rtt
                i += 1
        self.min_rtt = min_rtt
        self.fack = fack
        self.xmit_order = best_order
        self.end_seq = best_end
        self.xmit_ts = best_ts

    def dsack(self, una: int, snd_max: int, present: bool) -> None:
        """Step 4's D-SACK part, for every ACK: each round trip that sees a D-SACK widens the
        reordering window by another min_RTT / 4."""
        if self.dsack_round >= 0 and una >= self.dsack_round:
            self.dsack_round = -1
        if present and self.dsack_round < 0:
            self.dsack_round = snd_max
            self.reo_wnd_incr += 1
            self.reo_wnd_persist = REO_WND_PERSIST

    def recovery_ended(self) -> None:
        """Step 4: after 16 recoveries without a D-SACK the window returns to its base."""
        self.reo_wnd_persist -= 1
        if self.reo_wnd_persist <= 0:
            self.reo_wnd_incr = 1
            self.reo_wnd_persist = REO_WND_PERSIST

    def reo_wnd(self, in_recovery: bool, sacked_segments: int, srtt: float) -> float:
        """Step 4: RACK.reo_wnd. Until reordering is seen, none in recovery nor once DupThresh
        segments are SACKed (RFC 5681's rule); otherwise min_RTT / 4 per D-SACK round, at most
        SRTT."""
        if not self.reordering_seen and (in_recovery or sacked_segments >= DUP_THRESH):
            return 0.0
        base = self.min_rtt if self.min_rtt > GRANULARITY else GRANULARITY
        return min(base / 4 * self.reo_wnd_incr, max(srtt, GRANULARITY))

    def detect_loss(self, sacked: list[list[int]], now: float, reo_wnd: float) -> float:
        """Step 5 (RACK_detect_loss): mark lost every range not delivered that was sent before
        the most recently sent segment delivered, by more than RACK.rtt + reo_wnd ago. Return
        when the last of the others would be (0: none), for the reordering timer: a time, not
        a delay, so that the timer firing at it finds them due to the last bit.
        `sacked` is the scoreboard: sorted [start, end) ranges."""
        if self.xmit_order < 0:
            return 0.0
        starts, times, orders, flags = self._starts, self._times, self._orders, self._flags
        latest = self.xmit_order
        latest_end = self.end_seq
        wait = self.rtt + reo_wnd  # lost once this long has passed since sent
        now += _EPSILON
        timeout = 0.0
        k = 0  # the first SACKed range that may still reach the entry looked at
        n_sacked = len(sacked)
        i = 0
        while i < len(starts):
            start = starts[i]
            end = starts[i + 1] if i + 1 < len(starts) else self._end
            order = orders[i]
            if order == latest and start < latest_end < end:
                self._split(latest_end)  # only the part below RACK.end_seq went before
                end = latest_end
            while k < n_sacked and sacked[k][1] <= start:
                k += 1
            if k < n_sacked and sacked[k][0] <= start and sacked[k][1] >= end:
                i += 1  # delivered
                continue
            flag = flags[i]
            if order > latest or (order == latest and start >= latest_end):
                if not flag & RETRANSMITTED:
                    # New data goes out in sequence order, and a retransmission comes later
                    # than the data's first copy: nothing from here on was sent before.
                    break
                i += 1
                continue
            if flag & LOST:
                i += 1
                continue
            due = times[i] + wait
            if due <= now:
                flags[i] = flag | LOST
            elif due > timeout:
                timeout = due
            i += 1
        return timeout

    def mark_lost_on_timeout(self, now: float, reo_wnd: float) -> None:
        """RFC 8985 6.3: on a retransmission timeout, the first range and every range sent
        longer than RACK.rtt + reo_wnd ago are lost; the others may still arrive."""
        starts, times, flags = self._starts, self._times, self._flags
        wait = self.rtt + reo_wnd
        now += _EPSILON
        for i in range(len(starts)):
            if i == 0 or times[i] + wait <= now:
                flags[i] |= LOST  # SACKed parts are skipped where marks are read (next_lost)

    def unmark_lost(self) -> None:
        """Forget which ranges were judged lost: the recovery that judged so proved needless,
        and what it had not resent yet is most likely still on its way too. RACK marks what
        is still missing again once its wait has passed."""
        flags = self._flags
        if LOST in flags or LOST | RETRANSMITTED in flags:
            self._flags = [flag & ~LOST for flag in flags]

    def next_lost(self, seq: int, sacked: list[list[int]]) -> tuple[int, int]:
        """The first range at or above `seq` marked lost and not SACKed; (-1, -1) if none."""
        starts, flags = self._starts, self._flags
        if LOST not in flags and LOST | RETRANSMITTED not in flags:
            return -1, -1  # the common case, found at C speed
        count = len(starts)
        i = bisect_right(starts, seq) - 1
        if i < 0:
            i = 0
        while i < count:
            if flags[i] & LOST:
                low = max(starts[i], seq)
                high = starts[i + 1] if i + 1 < count else self._end
                for left, right in sacked:
                    if right <= low:
                        continue
                    if left >= high:
                        break
                    if left > low:
                        return low, left
                    low = right
                    if low >= high:
                        break
                if low < high:
                    return low, high
            i += 1
        return -1, -1


class Undo:
    """One recovery episode's retransmissions, to tell whether all were needless: every one
    reported as a duplicate by D-SACK (RFC 3708 2), or the ACK that ends the episode echoing a
    timestamp older than the first retransmission (Eifel, RFC 3522 2). Then the window the
    episode cut is given back (the sender calls NewReno.undo())."""

    __slots__ = ("active", "cwnd", "first_tsval", "high", "ranges", "ssthresh")

    def __init__(self) -> None:
        self.active = False
        self.cwnd = 0  # the windows before the episode
        self.ssthresh = 0
        self.ranges: dict[int, int] = {}  # start -> end of each range retransmitted
        self.first_tsval = -1  # our TSval on the first retransmission (-1: none yet)
        self.high = 0  # the end of the highest range retransmitted

    def start(self, cwnd: int, ssthresh: int) -> None:
        self.active = True
        self.cwnd = cwnd
        self.ssthresh = ssthresh
        self.ranges = {}
        self.first_tsval = -1
        self.high = 0

    def cancel(self) -> None:
        self.active = False
        self.ranges = {}

    def retransmitted(self, start: int, end: int, tsval: int) -> None:
        if not self.active:
            return
        ranges = self.ranges
        if len(ranges) >= _MAX_UNDO_RANGES:
            self.cancel()
            return
        if ranges.get(start, 0) < end:
            ranges[start] = end
        if end > self.high:
            self.high = end
        if self.first_tsval < 0:
            self.first_tsval = tsval

    def dsack(self, left: int, right: int) -> bool:
        """A D-SACK for [left, right): strike the retransmissions it covers; whether every
        retransmission of the episode is now known to have been needless."""
        ranges = self.ranges
        if not self.active or not ranges:
            return False
        for start in [s for s, e in ranges.items() if left <= s and e <= right]:
            del ranges[start]
        return not ranges

    @property
    def all_spurious(self) -> bool:
        return self.active and self.high > 0 and not self.ranges

    def eifel(self, ack: int, echo_older: bool) -> bool:
        """At the ACK that ends the episode: whether it covers every retransmission and
        echoes a timestamp from before the first (RFC 3522 2: the first copies arrived)."""
        return self.active and self.first_tsval >= 0 and ack >= self.high and echo_older
