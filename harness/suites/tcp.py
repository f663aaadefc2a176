"""The tcp suite: bulk TCP throughput between the host and a target, as the paper measured.

What it needs: an iperf3 server on the target (Debian's iperf3 on Linux targets, our iperf3
appliance on the unikernels) and Debian's iperf3 client on the host side of the target's link,
run inside the link's namespace when the target has one.
How it runs: one launch per repeat; once the server listens, the client runs for `seconds`
with `flows` parallel connections, sending to the target (`direction=to-target`) or receiving
from it (`from-target`, iperf3 -R).
What it returns: throughput in Mbit/s as the receiver counted it, and the retransmissions the
sender counted, where it counts them (Linux from TCP_INFO, our appliance from its connections).

Parameters: direction (to-target, from-target), flows (1, 10), offloads (off as in the paper,
on), seconds (5). A target measures only the offload settings its link has: a TAP device
without the virtio-net header has none to turn on, loopback has them always.

Our appliance logs its link's counters after each test ("iperf3: link ..."). With offloads
off, a unikernel's sample fails if its link delivered a GSO super-packet anyway: it would
measure another setting than the one it is filed under.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from harness.model import Measurement, Metric, Params
from harness.suites.base import Param, RepeatContext, Suite, choice, whole
from harness.targets.base import Instance, LaunchSettings, Target, Workload
from unikernel.devices import Console, Network, Port
from workloads import linux_script, unikernel_app

THROUGHPUT = Metric("throughput", "Mbit/s", "higher")
RETRANSMITS = Metric("retransmits", "segments", "lower")
IPERF3_PORT = 5201

IPERF3 = Workload(
    name="iperf3",
    script=linux_script("iperf3", "iperf3_server.py"),
    args=("--listen", "{iperf3}"),
    devices=(
        Console(ready_marker="listening on"),  # iperf3's "Server listening on", ours likewise
        Network(ports=(Port("iperf3", "tcp", number=IPERF3_PORT),), offloads=("off", "on")),
    ),
    unikernel_app=unikernel_app("iperf3"),
    programs=("iperf3",),
)

DEFAULTS: dict[str, tuple[str, ...]] = {
    "direction": ("to-target", "from-target"),
    "flows": ("1", "10"),
    "offloads": ("off", "on"),
    "seconds": ("5",),
}
CLIENT_GRACE = 30.0  # seconds past the test's own length before a silent client is killed
LINK_REPORT = "iperf3: link "  # our appliance's line of link counters, after each test
LINK_REPORT_WAIT = 10.0  # seconds from the client's exit


class TcpSuite(Suite):
    name = "tcp"
    params: ClassVar[Mapping[str, Param] | None] = {
        "direction": choice(*DEFAULTS["direction"]),
        "flows": whole("flows"),
        "offloads": choice(*DEFAULTS["offloads"]),
        "seconds": whole("seconds"),  # iperf3 --time takes whole seconds
    }
    description = "bulk TCP throughput with iperf3, 1 and 10 flows, both directions"
    metrics = (THROUGHPUT,)
    default_repeat = 3
    default_warmup = 0  # every repeat is a fresh launch; iperf3 measures after the handshake

    def workload(self, target: Target) -> Workload:
        return IPERF3

    def param_sets(self, requested: Mapping[str, Sequence[str]], target: Target) -> list[Params]:
        chosen = {**DEFAULTS, **requested}
        # Only the settings both the workload and the target's link can have are measured;
        # asked for none of those, the link's own.
        network = IPERF3.network
        assert network is not None
        possible = [o for o in target.link_offloads(IPERF3) if o in network.offloads]
        chosen["offloads"] = [o for o in chosen["offloads"] if o in possible] or possible
        return super().param_sets(chosen, target)

    def launch_settings(self, params: Params, cpus: int | None) -> LaunchSettings:
        return LaunchSettings(
            cpus=cpus, offloads=params.get("offloads") == "on", workload_params=params
        )

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        instance = ctx.create(IPERF3)
        instance.start()
        instance.ready(ctx.deadline)
        report = run_client(instance, params, ctx)
        if target.family == "unikernel" and params.get("offloads") == "off":
            check_plain_link(instance, ctx)
        end = report["end"]
        received = end["sum_received"]["bits_per_second"] / 1e6
        measurements = [Measurement(THROUGHPUT, received)]
        sent = end.get("sum_sent", {})
        if "retransmits" in sent:  # where the sender counts them
            measurements.append(Measurement(RETRANSMITS, float(sent["retransmits"])))
        return measurements


def client_argv(instance: Instance, params: Params) -> list[str]:
    address = instance.address("iperf3")
    if address is None:
        raise RuntimeError("the target gave the iperf3 server no address")
    host, port = address
    argv = ["iperf3", "--client", host, "--port", str(port), "--json"]
    argv += ["--time", str(params["seconds"]), "--parallel", str(params["flows"])]
    if params["direction"] == "from-target":
        argv.append("--reverse")
    elif params["direction"] != "to-target":
        raise ValueError(f"direction={params['direction']}: say to-target or from-target")
    if instance.namespace is not None:
        argv = ["ip", "netns", "exec", instance.namespace, *argv]
    return argv


def run_client(instance: Instance, params: Params, ctx: RepeatContext) -> dict[str, Any]:
    """Debian's iperf3 client against the instance; its JSON report."""
    argv = client_argv(instance, params)
    timeout = min(float(params["seconds"]) + CLIENT_GRACE, ctx.remaining())
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise RuntimeError("iperf3 is not installed: apt-get install iperf3") from None
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"iperf3 exited with {done.returncode} without a report: {done.stderr.strip()[-500:]}"
        ) from None
    if not isinstance(report, dict):
        raise RuntimeError("iperf3's report is not a JSON object")
    if "error" in report:
        raise RuntimeError(f"iperf3: {report['error']}")
    return report


def link_report(instance: Instance, ctx: RepeatContext) -> dict[str, int]:
    """The counters our appliance logged after the test (TimeoutError if it logged none)."""
    deadline = min(time.perf_counter() + LINK_REPORT_WAIT, ctx.deadline)
    _, line = instance.console.wait_for(LINK_REPORT, deadline)
    counts = {}
    for field in line.split(LINK_REPORT, 1)[1].split():
        name, _, value = field.partition("=")
        if value.isdigit():
            counts[name] = int(value)
    return counts


def check_plain_link(instance: Instance, ctx: RepeatContext) -> None:
    supers = link_report(instance, ctx).get("rx_super_packets", 0)
    if supers:
        raise RuntimeError(
            f"offloads=off, but the guest's link delivered {supers} GSO super-packets: the "
            "link still offloads segmentation, so this is not the offloads-off setting"
        )
