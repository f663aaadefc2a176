"""The dns suite: authoritative DNS queries per second, as the paper measured its DNS appliance
against BIND and NSD, for zones of 100, 1,000 and 10,000 names.

What it needs: an authoritative server for the benchmark zone on the target (NSD or BIND9 from
Debian on Linux targets, run by workloads/dns/dns_server.py; our DNS appliance, with the zone
compiled in, on the unikernels), and Debian's dnsperf on the host side of the target's link,
run inside the link's namespace when the target has one.
How it runs: one launch per repeat; once the server answers, dnsperf sends the query mix
(workloads/dns/dns_server.query_lines: names present and absent, several types, the wildcard,
the delegation) over UDP for `seconds`, one client keeping OUTSTANDING queries in flight.
What it returns: queries per second, the latency p50 and p99 of an answer (from dnsperf's
per-answer report), the share of queries lost, the share of one CPU dnsperf itself used
(near 1.0, the client was the bottleneck, not the server), and the time from the launch to the
server answering (booting, and loading or unpacking the zone).

Parameters: names (100, 1000, 10000), seconds (5); on Linux targets server (nsd, bind9); on
the unikernels memoise (off, on: the paper's memoised responses), with server=unikernel. Each
target takes the servers and settings of its kind from what was asked (server=unikernel,nsd
runs NSD on Linux targets and the appliance on the unikernels; memoise is the unikernels' only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from harness.load.client import run_client
from harness.model import Measurement, Metric, Params
from harness.suites.base import MEMORY, Param, RepeatContext, Suite, choice, seconds, whole
from harness.targets.base import Instance, Log, Target, Workload
from hostkit import cache
from unikernel.devices import Console, Network, Port
from workloads import linux_script, unikernel_app
from workloads.dns.dns_server import READY_LINE, ZONE_SIZES, query_lines

QPS = Metric("queries_per_second", "queries/s", "higher")
LATENCY_P50 = Metric("query_latency_p50", "s", "lower")
LATENCY_P99 = Metric("query_latency_p99", "s", "lower")
LOST = Metric("queries_lost", "ratio", "lower")
CLIENT_CPU = Metric("client_cpu", "cores", "lower")
READY = Metric("time_to_serving", "s", "lower")

LINUX_SERVERS = ("nsd", "bind9")
UNIKERNEL_SERVER = "unikernel"
OUTSTANDING = 100  # dnsperf's default: queries in flight at once
QUERY_TIMEOUT = 2.0  # seconds before dnsperf counts a query lost
CLIENT_GRACE = 30.0  # seconds past the run's own length before a silent dnsperf is killed

DNS = Workload(
    name="dns",
    script=linux_script("dns", "dns_server.py"),
    args=("--server", "{server}", "--listen", "{dns}", "--names", "{names}"),
    devices=(
        Console(ready_marker=READY_LINE),
        Network(ports=(Port("dns", "udp", number=53),)),
    ),
    unikernel_app=unikernel_app("dns"),
    programs=("nsd", "named"),
)

DEFAULTS: dict[str, tuple[str, ...]] = {
    "names": tuple(str(n) for n in ZONE_SIZES),
    "seconds": ("5",),
}


@dataclasses.dataclass(frozen=True)
class DnsperfReport:
    queries_per_second: float
    sent: int
    lost: int
    latencies: list[float]  # seconds, one per answer
    client_cpu_seconds: float = 0.0  # dnsperf's own: not in what it prints


class DnsSuite(Suite):
    name = "dns"
    params: ClassVar[Mapping[str, Param] | None] = {
        "names": whole("names"),  # which zone sizes there are, param_sets says
        "seconds": seconds(),
        "server": choice(*LINUX_SERVERS, UNIKERNEL_SERVER),
        "memoise": choice("off", "on"),  # the unikernels' only
        "memory": MEMORY,
    }
    description = "authoritative DNS queries/s with dnsperf, zones of 100 to 10,000 names"
    metrics = (QPS, LATENCY_P50, LATENCY_P99, LOST)
    default_repeat = 3
    default_warmup = 0  # every repeat is a fresh launch

    def workload(self, target: Target) -> Workload:
        return DNS

    def param_sets(self, requested: Mapping[str, Sequence[str]], target: Target) -> list[Params]:
        chosen = {**DEFAULTS, **requested}
        for names in chosen["names"]:
            if not names.isdigit() or int(names) not in ZONE_SIZES:
                sizes = ", ".join(str(n) for n in ZONE_SIZES)
                raise ValueError(f"names={names}: the benchmark zones have {sizes} names")
        if target.family == "unikernel":
            servers: tuple[str, ...] = (UNIKERNEL_SERVER,)
            chosen.setdefault("memoise", ("off", "on"))
            for memoise in chosen["memoise"]:
                if memoise not in ("off", "on"):
                    raise ValueError(f"memoise={memoise}: say off or on")
        else:
            servers = LINUX_SERVERS
            chosen.pop("memoise", None)  # only the unikernel memoises
        # Asked for servers of several kinds (server=unikernel,nsd), each target runs its own.
        asked = tuple(chosen.get("server", servers))
        unknown = [s for s in asked if s not in (*LINUX_SERVERS, UNIKERNEL_SERVER)]
        if unknown:
            known = ", ".join((*LINUX_SERVERS, UNIKERNEL_SERVER))
            raise ValueError(f"server={','.join(unknown)}: the servers are {known}")
        wanted = tuple(s for s in asked if s in servers)
        if not wanted:
            raise ValueError(f"server={','.join(asked)}: {target.name} runs {', '.join(servers)}")
        chosen["server"] = wanted
        return super().param_sets(chosen, target)

    def prepare(
        self, target: Target, workload: Workload, param_sets: Sequence[Params], log: Log
    ) -> None:
        for names in sorted({int(params["names"]) for params in param_sets}):
            query_file(names)

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        instance = ctx.create(DNS)
        t0 = instance.start()
        serving, _ = instance.ready(ctx.deadline)
        report = run_dnsperf(instance, query_file(int(params["names"])), params, ctx)
        if len(report.latencies) < 2:
            answered = len(report.latencies)
            raise RuntimeError(f"the server answered {answered} of {report.sent} queries")
        latencies = sorted(report.latencies)
        seconds = float(params["seconds"])
        return [
            Measurement(QPS, report.queries_per_second),
            Measurement(LATENCY_P50, statistics.median(latencies)),
            Measurement(
                LATENCY_P99, latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)]
            ),
            Measurement(LOST, report.lost / report.sent if report.sent else 1.0),
            Measurement(CLIENT_CPU, report.client_cpu_seconds / seconds),
            Measurement(READY, serving - t0),
        ]


def query_file(names: int) -> Path:
    """dnsperf's query file for the zone of `names` names, in the cache: written once."""
    text = "\n".join(query_lines(names)) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = cache.root() / "dns-queries" / f"queries-{names}-{digest}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text)
        partial.replace(path)  # whole or absent, whoever else writes it at the same time
    return path


def dnsperf_argv(instance: Instance, queries: Path, params: Params) -> list[str]:
    address = instance.address("dns")
    if address is None:
        raise RuntimeError("the target gave the DNS server no address")
    host, port = address
    argv = ["dnsperf", "-s", host, "-p", str(port), "-d", str(queries)]
    argv += ["-l", str(params["seconds"]), "-q", str(OUTSTANDING), "-t", str(QUERY_TIMEOUT)]
    argv.append("-v")  # a line per answer, with its latency: dnsperf 2.10 has no percentiles
    if instance.namespace is not None:
        argv = ["ip", "netns", "exec", instance.namespace, *argv]
    return argv


def run_dnsperf(
    instance: Instance, queries: Path, params: Params, ctx: RepeatContext
) -> DnsperfReport:
    """Debian's dnsperf against the instance: its report, and the CPU time it took."""
    argv = dnsperf_argv(instance, queries, params)
    timeout = min(float(params["seconds"]) + QUERY_TIMEOUT + CLIENT_GRACE, ctx.remaining())
    done = run_client(argv, timeout, "apt-get install dnsperf")
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf exited with {done.returncode}: {done.output.strip()[-500:]}")
    return dataclasses.replace(parse_dnsperf(done.output), client_cpu_seconds=done.cpu_seconds)


def parse_dnsperf(text: str) -> DnsperfReport:
    """dnsperf's verbose output: "> RCODE NAME TYPE LATENCY" per answer, then its statistics."""
    latencies: list[float] = []
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("> "):
            parts = line.split()
            try:
                latencies.append(float(parts[-1]))
            except (ValueError, IndexError):
                raise ValueError(f"dnsperf: cannot read the answer line {line!r}") from None
        elif ":" in line:
            key, _, value = line.strip().partition(":")
            fields[key.strip()] = value.strip()
    try:
        qps = float(fields["Queries per second"])
        sent = int(fields["Queries sent"].split()[0])
        lost = int(fields["Queries lost"].split()[0])
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"dnsperf printed no statistics: {text.strip()[-500:]}") from None
    return DnsperfReport(qps, sent, lost, latencies)
