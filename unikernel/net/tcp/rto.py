"""The retransmission timeout (RFC 6298): a smoothed round-trip time and its variation.

Samples come from one timed segment per round trip that is never a retransmission (Karn's
algorithm, RFC 6298 3), and after a timeout from echoed timestamps (RFC 7323 4.1).
"""

from __future__ import annotations

_ALPHA = 0.125  # RFC 6298 2.3
_BETA = 0.25
_K = 4
CLOCK_GRANULARITY = 0.001  # G: our timestamps tick in milliseconds


class RttEstimator:
    __slots__ = ("_max", "_min", "_rto", "backoffs", "has_sample", "rttvar", "srtt")

    def __init__(self, initial: float, minimum: float, maximum: float) -> None:
        self._min = minimum
        self._max = maximum
        self._rto = initial  # RFC 6298 2.1: 1 s until the first sample
        self.srtt = 0.0
        self.rttvar = 0.0
        self.has_sample = False
        self.backoffs = 0  # timeouts in a row, each doubling the timer (5.5)

    @property
    def rto(self) -> float:
        """The timeout to arm now, backed off and bounded (2.4, 2.5)."""
        return min(self._rto * (1 << min(self.backoffs, 16)), self._max)

    def sample(self, rtt: float) -> None:
        if self.has_sample:
            # RFC 6298 2.3, RTTVAR first: it uses the old SRTT.
            self.rttvar += _BETA * (abs(self.srtt - rtt) - self.rttvar)
            self.srtt += _ALPHA * (rtt - self.srtt)
        else:
            self.srtt = rtt  # 2.2
            self.rttvar = rtt / 2
            self.has_sample = True
        rto = self.srtt + max(CLOCK_GRANULARITY, _K * self.rttvar)
        self._rto = min(max(rto, self._min), self._max)

    def reset(self, initial: float) -> None:
        """Forget the backoff and set the base timeout (RFC 6298 5.7: 3 s when the handshake
        needed a retransmission and gave no sample)."""
        self._rto = initial
        self.backoffs = 0
