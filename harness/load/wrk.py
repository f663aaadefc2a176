"""Running Debian's wrk, the second generator for static pages: written in C with an event loop
per thread, it shows where locust's own ceiling lies.

    report = run_wrk(url, connections=100, seconds=10, namespace=..., timeout=...)

One thread per core and `connections` keep-alive connections, fetching one page over and over
(wrk has no sessions). --latency prints the percentiles of its latency histogram.
"""

from __future__ import annotations

import os
import re

from harness.load.client import run_client
from harness.load.report import LoadReport

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.M)
GRACE = 30.0  # seconds past the run's length before a silent wrk is killed


def wrk_argv(url: str, connections: int, seconds: float, threads: int) -> list[str]:
    threads = max(1, min(threads, connections))  # wrk needs a connection per thread at least
    return [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        "--latency",
        url,
    ]


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    namespace: str | None = None,
    timeout: float,
) -> LoadReport:
    threads = len(os.sched_getaffinity(0))
    argv = wrk_argv(url, connections, seconds, threads)
    if namespace is not None:
        argv = ["ip", "netns", "exec", namespace, *argv]
    done = run_client(argv, min(timeout, seconds + GRACE), "apt-get install wrk")
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.output.strip()[-500:]}")
    return parse_wrk(done.output, done.cpu_seconds, threads=min(threads, connections))


def parse_wrk(text: str, client_cpu_seconds: float, *, threads: int) -> LoadReport:
    """wrk's report with --latency: its total, its latency distribution, its errors."""
    total = _TOTAL.search(text)
    percentiles = {
        int(share): float(value) * _UNITS[unit] for share, value, unit in _PERCENTILE.findall(text)
    }
    if total is None or 50 not in percentiles or 99 not in percentiles:
        raise ValueError(f"wrk printed no totals or latency distribution: {text.strip()[-500:]}")
    requests = int(total.group(1))
    elapsed = float(total.group(2)) * _UNITS[total.group(3)]
    socket_errors = _ERRORS.search(text)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors is not None else 0
    non_2xx = _NON_2XX.search(text)
    if non_2xx is not None:
        errors += int(non_2xx.group(1))
    return LoadReport(
        requests_per_second=requests / elapsed if elapsed > 0 else 0.0,
        sessions_per_second=None,
        latency_p50=percentiles[50],
        latency_p95=None,  # wrk prints 50, 75, 90 and 99
        latency_p99=percentiles[99],
        requests=requests,
        errors=errors,
        client_cpu_seconds=client_cpu_seconds,
        client_cores=threads,
        seconds=elapsed,
    )
