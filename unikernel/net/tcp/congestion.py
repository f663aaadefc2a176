"""NewReno congestion control: slow start and congestion avoidance (RFC 5681 3.1), fast
retransmit and fast recovery with NewReno's partial acknowledgments (RFC 6582 3.2).

This object only keeps the windows; the connection decides what to retransmit. Sequence
numbers are the connection's unwrapped ones. Windows and flight sizes count bytes.
"""

from __future__ import annotations

_INFINITE = 1 << 62


def initial_window(smss: int, segments: int) -> int:
    """RFC 6928: ten segments, as Linux starts (RFC 5681 3.1 allows about four), but no more
    than 1460 bytes a segment would give."""
    return min(segments * smss, max(2 * smss, 1460 * segments))


class NewReno:
    __slots__ = ("_acked", "cwnd", "in_recovery", "recover", "smss", "ssthresh")

    def __init__(self, smss: int, initial_segments: int) -> None:
        self.smss = smss
        self.cwnd = initial_window(smss, initial_segments)
        self.ssthresh = _INFINITE  # RFC 5681 3.1: arbitrarily high at first
        self.recover = 0  # RFC 6582 3.2 step 1: nothing sent yet
        self.in_recovery = False
        self._acked = 0  # bytes acknowledged towards the next increase in congestion avoidance

    def on_ack(self, acked: int, flight: int) -> None:
        """New data acknowledged outside recovery, `flight` bytes having been outstanding.

        A window the sender does not use proves nothing about the path: grow it only while
        the flight fills at least half of it (RFC 7661's idea), or an application-limited or
        receiver-limited flow would build a huge window it could later dump at once.
        """
        if 2 * flight < self.cwnd:
            return
        if self.cwnd < self.ssthresh:
            # Slow start with appropriate byte counting, L = 1 SMSS (RFC 5681 3.1, eq. 2).
            self.cwnd += min(acked, self.smss)
        else:
            # Congestion avoidance: one SMSS per window of acknowledged bytes (RFC 5681 eq. 3's
            # byte-counting variant).
            self._acked += acked
            if self._acked >= self.cwnd:
                self._acked -= self.cwnd
                self.cwnd += self.smss

    def may_enter_recovery(self, ack: int) -> bool:
        """RFC 6582 3.2 step 2: a third duplicate ACK starts recovery only if it covers more
        than `recover`; otherwise the losses belong to a window we already reduced for."""
        return ack >= self.recover

    def enter_recovery(self, flight: int, snd_max: int) -> None:
        """Third duplicate ACK: halve, and inflate by the three segments that left the network
        (RFC 5681 3.2 steps 2 and 3)."""
        self.ssthresh = max(flight // 2, 2 * self.smss)
        self.cwnd = self.ssthresh + 3 * self.smss
        self.recover = snd_max
        self.in_recovery = True

    def on_dup_ack_in_recovery(self) -> None:
        """Each further duplicate means another segment has left the network (step 4)."""
        self.cwnd += self.smss

    def limit_unsacked(self, sacked: int) -> None:
        """With SACK, during recovery: let at least as much data be outstanding and not
        SACKed as ssthresh allows. The window thus inflates by what the SACK blocks show has
        left the network, as RFC 6675's pipe would let it, and not only by one segment a
        duplicate ACK (step 4), which undercounts as soon as ACKs are lost and then stalls
        recovery until the retransmission timer."""
        self.cwnd = max(self.cwnd, self.ssthresh + sacked)

    def is_full_ack(self, ack: int) -> bool:
        return ack >= self.recover

    def on_partial_ack(self, acked: int) -> None:
        """RFC 6582 3.2 step 3: deflate by what was acknowledged, add back one SMSS if that was
        at least one SMSS, so about ssthresh remains in flight when recovery ends."""
        self.cwnd -= acked
        if acked >= self.smss:
            self.cwnd += self.smss
        self.cwnd = max(self.cwnd, self.smss)

    def on_full_ack(self, flight: int) -> None:
        """RFC 6582 3.2 step 3, full acknowledgment, option 1 of the deflation."""
        self.cwnd = min(self.ssthresh, max(flight, self.smss) + self.smss)
        self.in_recovery = False
        self._acked = 0

    def on_probe_repair(self) -> None:
        """A tail loss probe repaired a loss (RFC 8985 7.4.2): reduce as fast recovery
        would have, without entering it."""
        self.ssthresh = max(self.cwnd // 2, 2 * self.smss)
        self.cwnd = self.ssthresh
        self._acked = 0

    def undo(self, cwnd: int, ssthresh: int) -> None:
        """The reduction proved needless (RFC 3708 5, RFC 3522): back to the windows from
        before it, or what has grown since if more, and out of recovery."""
        self.ssthresh = max(self.ssthresh, ssthresh)
        self.cwnd = max(self.cwnd, cwnd)
        self.in_recovery = False
        self._acked = 0

    def on_timeout(self, flight: int, snd_max: int, repeated: bool) -> None:
        """RFC 5681 3.1 eq. 4 and a loss window of one segment; ssthresh is held when the
        same segment times out again. RFC 6582 4: no fast retransmit for the data that was
        outstanding at the timeout."""
        if not repeated:
            self.ssthresh = max(flight // 2, 2 * self.smss)
        self.cwnd = self.smss
        self.recover = snd_max
        self.in_recovery = False
        self._acked = 0

    def on_idle(self, initial: int) -> None:
        """RFC 5681 4.1: after an idle period longer than the RTO, restart from the initial
        window rather than sending a burst the path may no longer take."""
        self.cwnd = min(self.cwnd, initial)
