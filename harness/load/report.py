"""What a load generator measured, in one shape whichever generator it was."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SESSION_TYPE = "SESSION"  # the request type locust_sessions counts a whole session as

# A generator using more than this share of the cores it had was the bottleneck, not the
# server: locust itself warns at 90 % of a core.
CLIENT_BOUND_SHARE = 0.9


@dataclass(frozen=True)
class LoadReport:
    requests_per_second: float
    sessions_per_second: float | None  # None: the generator has no sessions (wrk)
    latency_p50: float  # seconds, of a request
    latency_p95: float | None
    latency_p99: float
    requests: int
    errors: int  # requests that failed: refused, reset, timed out, or a status not 2xx
    client_cpu_seconds: float  # the generator's own processes, user + system
    client_cores: int  # how many cores' worth of processes it ran
    seconds: float  # how long it measured
    client_warned: bool = False  # the generator said it was short of CPU

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    @property
    def client_cpu(self) -> float:
        """Cores the generator kept busy on average."""
        return self.client_cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def client_bound(self) -> bool:
        """Whether the generator, not the server, was the limit."""
        return self.client_warned or self.client_cpu >= CLIENT_BOUND_SHARE * self.client_cores


def histogram_percentile(counts: Mapping[float, int], share: float) -> float:
    """The value below which `share` of a histogram's samples lie (value -> how many)."""
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no samples")
    wanted = share * total
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= wanted:
            return value
    return max(counts)
