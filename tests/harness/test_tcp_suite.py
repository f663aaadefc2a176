"""The tcp suite: which parameters each target measures, the iperf3 client it runs, and real
transfers against Debian's iperf3 on Linux targets (loopback, a veth link, containers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.console import Console

from harness.console import ConsoleClosed, ConsoleWatcher
from harness.model import Params
from harness.progress import QuietProgress
from harness.runner import Runner, RunSettings
from harness.store import Store
from harness.suites.base import RepeatContext
from harness.suites.tcp import TcpSuite, check_plain_link, client_argv, link_report
from harness.targets import all_targets
from harness.targets.base import LaunchSettings, Target
from harness.targets.process import ProcessTarget
from harness.targets.unikernel import unikernel_targets
from harness.targets.veth import VethTarget
from hostkit import namespaces
from tests.support.netns import require


class FakeInstance:
    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace

    def address(self, port: str) -> tuple[str, int] | None:
        return ("10.0.0.2", 5201) if port == "iperf3" else None


def measure(tmp_path: Path, targets: list[Target], params: dict[str, list[str]]) -> Store:
    store = Store(tmp_path / "bench.sqlite")
    settings = RunSettings(repeat=1, warmup=0, timeout=120, params=params)
    Runner(store, settings, QuietProgress(Console(quiet=True))).run(TcpSuite(), targets, "t")
    return store


def throughputs(store: Store) -> dict[tuple[str, str, str], float]:
    found = {}
    for sample in store.samples(store.last_run().id):
        assert sample.failure is None, f"{sample.target}: {sample.failure}"
        if sample.metric == "throughput":
            assert sample.value is not None
            key = (sample.target, str(sample.params["direction"]), str(sample.params["offloads"]))
            found[key] = sample.value
    return found


def test_every_combination_by_default_but_only_the_offloads_a_link_has() -> None:
    suite = TcpSuite()
    reference = suite.param_sets({}, VethTarget())
    assert len(reference) == 8  # 2 directions x 2 flow counts x offloads off and on
    assert {p["offloads"] for p in reference} == {"off", "on"}
    hosted = suite.param_sets({}, all_targets()["unikernel-hosted"])
    assert {p["offloads"] for p in hosted} == {"off", "on"} and len(hosted) == 8
    loopback = suite.param_sets({"offloads": ["off"]}, ProcessTarget())
    assert {p["offloads"] for p in loopback} == {"on"}  # what the link can do, not nothing
    asked = suite.param_sets({"flows": ["4"], "seconds": ["1"]}, VethTarget())
    assert {(p["flows"], p["seconds"]) for p in asked} == {("4", "1")}


def test_the_client_runs_inside_the_targets_namespace_and_reverses_for_from_target() -> None:
    params: Params = {"direction": "from-target", "flows": "10", "seconds": "5"}
    argv = client_argv(FakeInstance("ns1"), params)  # type: ignore[arg-type]
    assert argv[:4] == ["ip", "netns", "exec", "ns1"]
    assert argv[4:8] == ["iperf3", "--client", "10.0.0.2", "--port"]
    assert "--reverse" in argv and argv[argv.index("--parallel") + 1] == "10"
    forward = client_argv(FakeInstance(None), {**params, "direction": "to-target"})  # type: ignore[arg-type]
    assert forward[0] == "iperf3" and "--reverse" not in forward
    with pytest.raises(ValueError, match="to-target or from-target"):
        client_argv(FakeInstance(None), {**params, "direction": "up"})  # type: ignore[arg-type]


def test_linux_over_loopback_and_over_a_veth_link_both_ways(tmp_path: Path) -> None:
    require("iperf3")
    params = {"seconds": ["1"], "flows": ["2"]}
    found = throughputs(measure(tmp_path, [ProcessTarget(), VethTarget()], params))
    assert set(found) == {
        ("process", "to-target", "on"),
        ("process", "from-target", "on"),
        ("linux-veth", "to-target", "off"),
        ("linux-veth", "from-target", "off"),
        ("linux-veth", "to-target", "on"),
        ("linux-veth", "from-target", "on"),
    }
    assert all(mbits > 10 for mbits in found.values()), found
    assert namespaces.held() == []


@pytest.mark.docker
def test_a_container_runs_debians_iperf3_copied_from_the_host(
    tmp_path: Path, docker_client: object
) -> None:
    require("iperf3")
    from harness.targets.docker import docker_targets

    minimal = next(t for t in docker_targets() if t.name == "docker-minimal")
    found = throughputs(measure(tmp_path, [minimal], {"seconds": ["1"], "flows": ["1"]}))
    assert set(found) == {
        ("docker-minimal", "to-target", "on"),
        ("docker-minimal", "from-target", "on"),
    }
    assert all(mbits > 10 for mbits in found.values()), found


@pytest.mark.parametrize("name", ["unikernel-hosted", "unikernel-hosted-veth"])
def test_the_hosted_unikernel_runs_our_iperf3_against_debians_client(
    tmp_path: Path, name: str
) -> None:
    """On its TAP device, and on a veth end it takes whole with AF_PACKET rings."""
    require("iperf3")
    hosted = next(t for t in unikernel_targets() if t.name == name)
    found = throughputs(measure(tmp_path, [hosted], {"seconds": ["1"], "flows": ["1", "4"]}))
    assert {(direction, offloads) for _, direction, offloads in found} == {
        ("to-target", "off"),
        ("from-target", "off"),
        # With virtio-net headers (the TAP device's, the packet socket's): super-packets both
        # ways. Offloads off, the suite fails a sample whose link delivered one.
        ("to-target", "on"),
        ("from-target", "on"),
    }
    assert all(mbits > 1 for mbits in found.values()), found


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a first run builds the VM image
def test_a_linux_vm_runs_iperf3_over_ssh(tmp_path: Path) -> None:
    require("iperf3")
    from harness.targets.linux_vm import LinuxVmTarget

    vm = LinuxVmTarget("linux-vm-minimal", "under test")
    params = {"seconds": ["1"], "flows": ["1"], "direction": ["to-target"], "offloads": ["off"]}
    found = throughputs(measure(tmp_path, [vm], params))
    assert list(found) == [("linux-vm-minimal", "to-target", "off")]
    assert all(mbits > 1 for mbits in found.values()), found


class ConsoleInstance(FakeInstance):
    def __init__(self, lines: list[bytes]) -> None:
        super().__init__(None)
        self.console = ConsoleWatcher(iter(lines), name="guest")
        self.console.start()


def context() -> RepeatContext:
    target = next(t for t in unikernel_targets() if t.name == "unikernel-hosted")
    return RepeatContext(target, LaunchSettings(), deadline=time.perf_counter() + 30)


def test_the_appliance_s_link_counters_are_read_from_its_console() -> None:
    instance = ConsoleInstance(
        [b"iperf3: test 1 ...\n", b"iperf3: link backlog=0 rx_super_packets=0 tx_frames=812\n"]
    )
    counts = link_report(instance, context())  # type: ignore[arg-type]
    assert counts == {"backlog": 0, "rx_super_packets": 0, "tx_frames": 812}
    check_plain_link(instance, context())  # type: ignore[arg-type]


def test_offloads_off_fails_where_the_link_delivered_super_packets() -> None:
    instance = ConsoleInstance([b"iperf3: link backlog=0 rx_super_packets=11182\n"])
    with pytest.raises(RuntimeError, match="delivered 11182 GSO super-packets"):
        check_plain_link(instance, context())  # type: ignore[arg-type]


def test_an_appliance_that_logs_no_counters_fails_the_check_once_its_console_ends() -> None:
    instance = ConsoleInstance([b"iperf3: test 1 ...\n"])
    started = time.perf_counter()
    with pytest.raises(ConsoleClosed, match="iperf3: link"):
        check_plain_link(instance, context())  # type: ignore[arg-type]
    assert time.perf_counter() - started < 5
