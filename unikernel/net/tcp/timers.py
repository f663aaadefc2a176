"""The timers of one connection, as absolute times (inf: not armed), and their one deadline.

A connection runs five timers, but the layer keeps a single heap entry per connection, at
`deadline`, the earliest of them:

- the retransmission timer (RFC 6298), which doubles as the persist timer that probes a zero
  window (RFC 9293 3.8.6.1; `persist`), as the tail loss probe's timeout (RFC 8985 7.2;
  `tlp`) and as RACK's reordering timer (RFC 8985 6.2 step 5; `reo`): they never run at once,
  so they share `rtx_at`;
- the delayed ACK (RFC 5681 4.2; `dack_at`);
- keep-alive (RFC 1122 4.2.3.6; `ka_at`, off until Connection.keepalive());
- `close_at`: the end of TIME-WAIT (2 MSL), or of FIN-WAIT-2 for a connection the application
  has closed.

This class only holds the times and arms them; what a timer does when it fires is the
sender's or the connection's business (Connection.on_timer() dispatches). The sender and the
receiver read the fields freely but arm timers only through the methods below.
"""

from __future__ import annotations

_INF = float("inf")


class Timers:
    __slots__ = (
        "close_at",
        "dack_at",
        "deadline",
        "ka_at",
        "ka_count",
        "ka_idle",
        "ka_interval",
        "ka_probes",
        "persist",
        "reo",
        "rtx_at",
        "tlp",
    )

    def __init__(self) -> None:
        self.rtx_at = _INF  # retransmission, persist or tail loss probe: see the flags
        self.persist = False  # rtx_at is the persist timer
        self.tlp = False  # rtx_at is the tail loss probe's timeout (RFC 8985 7.2)
        self.reo = False  # rtx_at is RACK's reordering timer (RFC 8985 6.2 step 5)
        self.dack_at = _INF
        self.ka_at = _INF
        self.close_at = _INF
        self.ka_idle = 0.0  # keep-alive off until keepalive()
        self.ka_interval = 0.0
        self.ka_count = 0
        self.ka_probes = 0  # probes in a row the peer did not answer
        self.deadline = _INF

    def rearm(self) -> float:
        """Recompute `deadline`, the earliest timer, and return it."""
        deadline = min(self.rtx_at, self.dack_at, self.ka_at, self.close_at)
        self.deadline = deadline
        return deadline

    def stop(self) -> None:
        """Disarm everything: the connection is gone."""
        self.rtx_at = self.dack_at = self.ka_at = self.close_at = self.deadline = _INF

    # The retransmission timer and its two other uses.

    def arm_rtx(self, at: float) -> None:
        self.rtx_at = at
        self.persist = self.tlp = self.reo = False

    def arm_persist(self, at: float) -> None:
        self.rtx_at = at
        self.persist = True
        self.tlp = self.reo = False

    def arm_tlp(self, at: float) -> None:
        self.rtx_at = at
        self.persist = self.reo = False
        self.tlp = True

    def arm_reo(self, at: float) -> None:
        """RACK's reordering timer, in place of the retransmission timer until it fires: then
        the sender arms that again (RFC 8985 6.2 step 5)."""
        self.rtx_at = at
        self.persist = self.tlp = False
        self.reo = True

    def arm_rtx_if_idle(self, at: float) -> None:
        """Arm the retransmission timer unless some use of it runs already (a SYN's)."""
        if self.rtx_at == _INF:
            self.rtx_at = at

    def stop_rtx(self) -> None:
        self.rtx_at = _INF
        self.persist = self.tlp = self.reo = False

    def fire_rtx(self) -> None:
        """The timer went off: disarm it but keep the flags, which say what it was for."""
        self.rtx_at = _INF

    # The others.

    def arm_dack(self, at: float) -> None:
        self.dack_at = at

    def cancel_dack(self) -> None:
        self.dack_at = _INF

    def arm_close(self, at: float) -> None:
        self.close_at = at

    def keepalive(self, idle: float, interval: float, count: int, now: float) -> None:
        self.ka_idle = idle
        self.ka_interval = interval
        self.ka_count = count
        self.ka_probes = 0
        self.ka_at = now + idle if idle > 0 else _INF

    def heard_from_peer(self, now: float) -> None:
        """A segment arrived: the keep-alive idle time starts over (keep-alive on)."""
        self.ka_at = now + self.ka_idle
        self.ka_probes = 0

    def keepalive_later(self, now: float) -> None:
        """Nothing to probe now (data in flight, or not synchronized): look again later."""
        self.ka_at = now + self.ka_idle

    def keepalive_probe(self, now: float) -> bool:
        """Count one more keep-alive probe; False once `ka_count` went unanswered."""
        if self.ka_probes >= self.ka_count:
            return False
        self.ka_probes += 1
        self.ka_at = now + self.ka_interval
        return True

    def time_wait(self, close_at: float) -> None:
        """TIME-WAIT: only the end of 2 MSL (and a delayed ACK already owed) stays armed."""
        self.rtx_at = self.ka_at = _INF
        self.persist = self.tlp = self.reo = False
        self.close_at = close_at
