"""The dns suite: its parameters, how it reads dnsperf, and the real servers measured by the
real dnsperf."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runner import RunSettings
from harness.suites.dns import DnsSuite, parse_dnsperf, query_file
from harness.targets import all_targets
from harness.targets.process import ProcessTarget
from tests.support.netns import require
from tests.support.runs import run_suite, values
from workloads.dns.dns_server import ZONE_SIZES

DNSPERF_OUTPUT = """DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 10.0.0.2 -p 53 -d q.txt -l 5 -v
[Status] Sending queries (to 10.0.0.2:53)
> NOERROR h1.unibench.test. A 0.000200
> NXDOMAIN absent5.unibench.test. A 0.000400
> NOERROR h3.unibench.test. AAAA 0.001000
[Timeout] Query timed out: msg id 3
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         4
  Queries completed:    3 (75.00%)
  Queries lost:         1 (25.00%)

  Response codes:       NOERROR 2 (66.67%), NXDOMAIN 1 (33.33%)
  Average packet size:  request 37, response 132
  Run time (s):         5.000120
  Queries per second:   0.599986

  Average Latency (s):  0.000533 (min 0.000200, max 0.001000)
  Latency StdDev (s):   0.000416
"""


def test_dnsperf_is_read_answer_by_answer() -> None:
    report = parse_dnsperf(DNSPERF_OUTPUT)
    assert report.latencies == [0.0002, 0.0004, 0.001]
    assert (report.sent, report.lost) == (4, 1)
    assert report.queries_per_second == pytest.approx(0.599986)


def test_output_without_statistics_is_an_error_that_shows_it() -> None:
    with pytest.raises(ValueError, match=r"no statistics.*socket: permission denied"):
        parse_dnsperf("Error: socket: permission denied\n")


def test_linux_targets_run_nsd_and_bind9_the_unikernels_memoise_or_not() -> None:
    targets = all_targets()
    linux = DnsSuite().param_sets({}, ProcessTarget())
    assert {(p["server"], p["names"]) for p in linux} == {
        (server, str(names)) for server in ("nsd", "bind9") for names in ZONE_SIZES
    }
    assert all("memoise" not in p for p in linux)
    unikernel = DnsSuite().param_sets({"names": ["100"]}, targets["unikernel-hosted"])
    assert sorted((p["server"], p["memoise"]) for p in unikernel) == [
        ("unikernel", "off"),
        ("unikernel", "on"),
    ]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("names", "500", "100, 1000, 10000 names"),
        ("server", "unbound", "the servers are nsd, bind9, unikernel"),
        ("server", "unikernel", "process runs nsd, bind9"),
    ],
)
def test_bad_parameters_are_refused_with_what_to_say(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        DnsSuite().param_sets({name: [value]}, ProcessTarget())


def test_a_unikernel_target_refuses_a_linux_server() -> None:
    target = all_targets()["unikernel-hosted"]
    with pytest.raises(ValueError, match="runs unikernel"):
        DnsSuite().param_sets({"server": ["nsd"]}, target)


def test_servers_and_memoise_of_both_kinds_go_each_to_its_own_targets() -> None:
    asked = {"server": ["unikernel", "nsd"], "memoise": ["on"], "names": ["100"]}
    linux = DnsSuite().param_sets(asked, ProcessTarget())
    assert linux == [{"names": "100", "seconds": "5", "server": "nsd"}]
    unikernel = DnsSuite().param_sets(asked, all_targets()["unikernel-hosted"])
    assert unikernel == [{"memoise": "on", "names": "100", "seconds": "5", "server": "unikernel"}]


def test_the_query_file_is_written_once_and_is_the_mix() -> None:
    path = query_file(100)
    assert query_file(100) == path
    lines = path.read_text().splitlines()
    assert len(lines) == 10000
    assert {line.split()[1] for line in lines} >= {"A", "AAAA", "MX", "TXT", "SOA"}
    assert any(line.startswith("absent") for line in lines)


@pytest.mark.slow
def test_nsd_and_bind9_are_measured_by_dnsperf(tmp_path: Path) -> None:
    require("dnsperf", "nsd", "named")
    targets = [all_targets()["process"]]
    params = {"names": ["100"], "seconds": ["1"]}
    store, run = run_suite(tmp_path, DnsSuite(), targets, RunSettings(1, 0, 120, params=params))
    found = values(store.samples(run.id))
    assert len(found[("process", "queries_per_second")]) == 2  # nsd and bind9
    assert all(qps > 100 for qps in found[("process", "queries_per_second")])
    assert all(lost < 0.01 for lost in found[("process", "queries_lost")])
    p50, p99 = found[("process", "query_latency_p50")], found[("process", "query_latency_p99")]
    assert all(0 < a <= b < 1 for a, b in zip(p50, p99, strict=True))
    assert all(0 < ready < 60 for ready in found[("process", "time_to_serving")])
    assert run.complete


@pytest.mark.docker
@pytest.mark.slow
def test_nsd_and_bind9_run_in_both_containers_copied_from_the_host(
    tmp_path: Path, docker_client: object
) -> None:
    """The minimal image has only python3-minimal's library and no glibc beyond libc itself:
    the script makes do, and the servers come with the libraries they load."""
    require("dnsperf", "nsd", "named")
    targets = [all_targets()[name] for name in ("docker", "docker-minimal")]
    params = {"names": ["100"], "seconds": ["1"]}
    store, run = run_suite(tmp_path, DnsSuite(), targets, RunSettings(1, 0, 120, params=params))
    found = values(store.samples(run.id))
    for target in ("docker", "docker-minimal"):
        assert len(found[(target, "queries_per_second")]) == 2, target  # nsd and bind9
        assert all(qps > 100 for qps in found[(target, "queries_per_second")])
