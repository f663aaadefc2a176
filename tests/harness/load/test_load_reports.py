"""Reading what the load generators report: locust's final statistics (merged request
histograms, sessions apart), wrk's text, and when the generator was the bottleneck."""

from __future__ import annotations

import pytest

from harness.load.locust_run import parse_locust_stats
from harness.load.report import LoadReport, histogram_percentile
from harness.load.wrk import parse_wrk, wrk_argv


def entry(method: str, name: str, times: dict[str, int], failures: int = 0) -> dict[str, object]:
    return {
        "name": name,
        "method": method,
        "start_time": 1000.0,
        "last_request_timestamp": 1010.0,
        "num_requests": sum(times.values()),
        "num_failures": failures,
        "response_times": times,
    }


def test_locust_requests_are_merged_and_sessions_counted_apart() -> None:
    entries = [
        entry("GET", "request", {"1": 700, "2": 200}, failures=3),
        entry("POST", "request", {"5": 90, "40": 10}, failures=1),
        entry("SESSION", "session", {"12": 100}, failures=4),
    ]
    report = parse_locust_stats(entries, 5.0, client_cores=2, warned=False, seconds=10)
    assert report.requests == 1000
    assert report.requests_per_second == pytest.approx(100.0)
    assert report.sessions_per_second == pytest.approx(9.6)  # failed sessions are not sessions
    assert report.errors == 4
    assert report.error_rate == pytest.approx(0.004)
    # 990 of the 1000 took 5 ms or less: the 99th percentile is 5 ms, not the 40 ms tail.
    assert (report.latency_p50, report.latency_p95, report.latency_p99) == (0.001, 0.005, 0.005)
    assert report.client_cores == 2  # a worker per core
    assert report.client_cpu == pytest.approx(0.5)
    assert not report.client_bound


def test_locust_without_requests_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no request"):
        parse_locust_stats(
            [entry("SESSION", "session", {})], 1.0, client_cores=2, warned=False, seconds=5
        )


def report(cpu_seconds: float, warned: bool = False) -> LoadReport:
    return LoadReport(1.0, None, 0.1, None, 0.2, 10, 0, cpu_seconds, 2, 10.0, warned)


def test_a_generator_is_the_bottleneck_at_nine_tenths_of_its_cores_or_when_it_says_so() -> None:
    assert not report(17.9).client_bound
    assert report(18.0).client_bound
    assert report(1.0, warned=True).client_bound


def test_histogram_percentiles() -> None:
    counts = {1.0: 50, 2.0: 45, 9.0: 5}
    assert histogram_percentile(counts, 0.5) == 1.0
    assert histogram_percentile(counts, 0.95) == 2.0
    assert histogram_percentile(counts, 0.99) == 9.0
    with pytest.raises(ValueError):
        histogram_percentile({}, 0.5)


WRK = """Running 10s test @ http://10.203.0.2:80/
  2 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.34ms    3.21ms  80.00ms   90.00%
    Req/Sec     4.10k   300.00     5.00k    70.00%
  Latency Distribution
     50%   11.50ms
     75%   13.00ms
     90%   15.00ms
     99%    1.20s
  81234 requests in 10.01s, 60.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 3
Requests/sec:   8115.28
Transfer/sec:      5.99MB
"""


def test_wrk_report() -> None:
    parsed = parse_wrk(WRK, 12.0, threads=2)
    assert parsed.requests == 81234
    assert parsed.requests_per_second == pytest.approx(81234 / 10.01)
    assert parsed.latency_p50 == pytest.approx(0.0115)
    assert parsed.latency_p99 == pytest.approx(1.2)
    assert parsed.errors == 10
    assert parsed.sessions_per_second is None and parsed.latency_p95 is None
    assert parsed.client_cpu == pytest.approx(12.0 / 10.01)


def test_wrk_without_a_distribution_is_an_error() -> None:
    with pytest.raises(ValueError, match="no totals"):
        parse_wrk("unable to connect to 10.0.0.1:80 Connection refused\n", 0.0, threads=1)


def test_wrk_runs_a_thread_per_core_but_never_more_than_connections() -> None:
    argv = wrk_argv("http://h/", connections=1, seconds=2.4, threads=8)
    assert "--threads=1" in argv and "--connections=1" in argv and "--duration=2s" in argv
    assert "--latency" in argv
