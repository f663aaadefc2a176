"""The Xen lab end to end: it boots, the boot suite runs the unikernel and the Linux guest in it
and stores their samples as Xen's, a guest that never becomes ready is destroyed, and taking
the lab down leaves no QEMU, namespace or overlay behind.

Slow (the lab boots Xen and dom0 under emulation, about a minute) and run by CI. The images it
boots are built by ./run-tests before pytest starts (`python -m baselines.xen_lab`, the Linux VM
disk and the specialized Xen kernel), or here on first use.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from rich.console import Console

from baselines import block_data, xen_lab
from harness.cli import cli
from harness.leftovers import sweep
from harness.progress import QuietProgress
from harness.runner import Runner, RunSettings
from harness.store import Store
from harness.suites.block import BlockSuite
from harness.suites.boot import BOOT_PROBE, BootSuite
from harness.suites.tcp import TcpSuite
from harness.targets import xen as xen_target
from harness.targets.base import LaunchSettings, Target
from harness.targets.xen import Dom0Lease, xen_targets
from harness.xen import lab
from hostkit import namespaces
from tests.support.netns import require
from tests.support.processes import dead_pid
from tests.support.runs import run_suite
from unikernel.devices import Console as ConsoleDevice

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def running_lab() -> Iterator[lab.LabState]:
    require("qemu-system-x86_64", "qemu-img", "mkfs.ext4", "debootstrap")
    if lab.status() is not None:
        pytest.fail("a Xen lab is running already; `bench lab xen down` before these tests")
    state = lab.up(print)
    try:
        yield state
    finally:
        if lab.status() is not None:  # the last test stops it the way the next run would
            assert lab.down()
        assert lab.status() is None
        assert not psutil.pid_exists(state.pid) or psutil.Process(state.pid).status() == "zombie"
        assert not os.path.exists(f"{namespaces.NETNS_DIR}/{lab.NAMESPACE}")
        assert not Path(state.overlay).exists()


def guests(state: lab.LabState) -> list[str]:
    """The domains dom0 runs besides itself."""
    dom0 = lab.dom0(state)
    try:
        lines = dom0.check("xl list").splitlines()[1:]
    finally:
        dom0.close()
    return [line.split()[0] for line in lines if not line.startswith("Domain-0")]


def run_boot(
    tmp_path: Path,
    targets: list[Target],
    suite: BootSuite,
    timeout: float,
    params: dict[str, list[str]] | None = None,
) -> Store:
    store = Store(tmp_path / "bench.sqlite")
    settings = RunSettings(repeat=1, warmup=0, timeout=timeout, params=params or {})
    Runner(store, settings, QuietProgress(Console(quiet=True))).run(suite, targets, "t")
    return store


def test_status_shows_the_running_lab_and_how_to_log_in(running_lab: lab.LabState) -> None:
    result = CliRunner().invoke(cli, ["lab", "xen", "status"])
    assert result.exit_code == 0, result.output
    assert f"QEMU pid {running_lab.pid}" in result.output
    assert f"ip netns exec {lab.NAMESPACE} ssh" in result.output
    assert running_lab.xen_version.startswith("4.17")


def test_the_boot_suite_runs_both_guests_in_the_lab_as_xen_samples(
    tmp_path: Path, running_lab: lab.LabState
) -> None:
    """Both guests, each launched by xl as it is and pre-created; the unikernel with Linux's
    front-ends and with ours: the probe's answer came through our netfront."""
    params = {"launch": ["xl-create", "pre-created"], "drivers": ["kernel", "python"]}
    store = run_boot(tmp_path, xen_targets(Dom0Lease("lab")), BootSuite(), 600, params)
    found: dict[tuple[str, str, str, str], float] = {}
    for sample in store.samples(store.last_run().id):
        assert sample.failure is None and sample.value is not None, sample.failure
        assert sample.params["hypervisor"] == "xen"
        assert sample.params["accel"] == running_lab.accel
        variant = (str(sample.params["launch"]), str(sample.params.get("drivers", "")))
        found[sample.target, *variant, sample.metric] = sample.value
    variants = [
        ("unikernel-xen", launch, drivers)
        for launch in params["launch"]
        for drivers in params["drivers"]
    ] + [("linux-xen", launch, "") for launch in params["launch"]]
    for variant in variants:
        # No order between the two: the marker comes back through xenconsoled and SSH, the
        # probe's reply through dom0's bridge, and either way may be the quicker.
        assert 0 < found[*variant, "time_to_ready"] < 600
        assert 0 < found[*variant, "time_to_service"] < 600
        # Building the guest paused is a phase of its own, off the clock.
        assert ((*variant, "phase_precreate") in found) == (variant[1] == "pre-created")
    for launch in params["launch"]:
        for drivers in params["drivers"]:
            # The unikernel's marker says how much of its boot was its own; the rest was Xen's.
            kernel = found["unikernel-xen", launch, drivers, "guest_launch_to_kernel"]
            assert 0 < kernel < found["unikernel-xen", launch, drivers, "time_to_ready"]
    assert guests(running_lab) == []
    assert lab.status() is not None  # a lab the run did not start is left running


def test_a_netback_that_never_connects_is_a_clear_error_and_the_guest_is_destroyed(
    tmp_path: Path, running_lab: lab.LabState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hotplug script that succeeds without making the port: netback waits for
    # hotplug-status=connected for ever, and our netfront at its timeout.
    monkeypatch.setattr(xen_target, "install_vif_port_script", lambda dom0: "/bin/true")
    unikernel = [t for t in xen_targets(Dom0Lease("lab")) if t.name == "unikernel-xen"]
    params = {"launch": ["pre-created"], "drivers": ["python"]}
    store = run_boot(tmp_path, unikernel, BootSuite(), 90, params)
    failures = [s.failure or "" for s in store.samples(store.last_run().id)]
    assert failures and all("timed out" in f or "no reply" in f for f in failures), failures
    assert any("hotplug-status" in f and "FrontendError" in f for f in failures), failures
    assert guests(running_lab) == []


def test_a_unikernel_guest_reads_the_block_data_dom0_holds(
    tmp_path: Path, running_lab: lab.LabState
) -> None:
    """Through Linux's blkfront and through ours; the appliance checks every block's stamps."""
    unikernel = [t for t in xen_targets(Dom0Lease("lab")) if t.name == "unikernel-xen"]
    params = {"block_size": ["65536"], "depth": ["2"], "mode": ["direct"], "seconds": ["1"]}
    params["drivers"] = ["kernel", "python"]
    store, run = run_suite(tmp_path, BlockSuite(), unikernel, RunSettings(1, 0, 600, params=params))
    samples = [s for s in store.samples(run.id) if s.metric == "read_throughput"]
    assert sorted(str(s.params["drivers"]) for s in samples) == ["kernel", "python"]
    assert all(s.value is not None and s.value > 0 for s in samples), [s.failure for s in samples]
    assert running_lab.block_data == str(block_data.data_path())
    assert guests(running_lab) == []


def test_the_tcp_suite_runs_over_both_front_ends_on_a_plain_link(
    tmp_path: Path, running_lab: lab.LabState
) -> None:
    """iperf3 to the guest through Linux's netfront and through ours, offloads off: dom0 turns
    the vif's off for Linux's (which would get 64 KiB GSO packets, failing the sample)."""
    unikernel = [t for t in xen_targets(Dom0Lease("lab")) if t.name == "unikernel-xen"]
    params = {"drivers": ["kernel", "python"], "direction": ["to-target"], "flows": ["1"]}
    params |= {"seconds": ["2"], "offloads": ["off"]}
    store, run = run_suite(tmp_path, TcpSuite(), unikernel, RunSettings(1, 0, 600, params=params))
    samples = [s for s in store.samples(run.id) if s.metric == "throughput"]
    assert sorted(str(s.params["drivers"]) for s in samples) == ["kernel", "python"]
    assert all(s.value is not None and s.value > 1 for s in samples), [s.failure for s in samples]
    assert guests(running_lab) == []


def test_a_guest_that_never_becomes_ready_is_destroyed(
    tmp_path: Path, running_lab: lab.LabState
) -> None:
    never = dataclasses.replace(
        BOOT_PROBE, devices=(ConsoleDevice("A-MARKER-NO-GUEST-PRINTS"), *BOOT_PROBE.devices[1:])
    )
    unikernel = xen_targets(Dom0Lease("lab"))[0]
    store = run_boot(tmp_path, [unikernel], BootSuite(never), timeout=60)
    samples = store.samples(store.last_run().id)
    assert samples and all("timed out after 60 s" in (s.failure or "") for s in samples)
    assert guests(running_lab) == []


def test_a_dom0_named_in_a_hosts_file_is_driven_over_ssh(
    tmp_path: Path, running_lab: lab.LabState
) -> None:
    # The lab's dom0 as any dom0 someone else runs: no bridge the harness knows of, so only
    # the ready marker is measured; the emulated CPU is found and guests get tsc_mode native.
    image = xen_lab.find_lab_image()
    assert image is not None
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(
        "[[host]]\n"
        'name = "rack7"\n'
        f'address = "{running_lab.address}"\n'
        f'user = "{image.ssh_user}"\n'
        f'key = "{image.ssh_private_key}"\n'
        f'host_key = "{image.ssh_host_key}"\n'
        f'namespace = "{running_lab.namespace}"\n'
    )
    store_path = tmp_path / "bench.sqlite"
    arguments = ["--store", str(store_path), "run", "--suite", "boot", "--target", "unikernel-xen"]
    arguments += ["--xen-dom0", "rack7", "--hosts", str(hosts), "--repeat", "1", "--warmup", "0"]
    result = CliRunner().invoke(cli, [*arguments, "--timeout", "300"])
    assert result.exit_code == 0, result.output
    with Store(store_path) as store:
        run = store.last_run()
        samples = store.samples(run.id)
        target = run.metadata["targets"]["unikernel-xen"]  # type: ignore[index]
    assert {s.metric for s in samples} >= {"time_to_ready", "guest_kernel_to_main"}
    assert "time_to_service" not in {s.metric for s in samples}
    assert all(s.params["hypervisor"] == "xen" and s.failure is None for s in samples)
    assert target["dom0"] == "ssh:rack7" and target["tsc_mode"] == "native"
    assert guests(running_lab) == []


def test_guests_a_dead_harness_left_in_the_lab_are_destroyed_by_the_next_run(
    running_lab: lab.LabState,
) -> None:
    unikernel = xen_targets(Dom0Lease("lab"))[0]
    workload = BootSuite().workload(unikernel)
    unikernel.prepare(workload, print)
    guest = unikernel.create(workload, LaunchSettings())
    try:
        guest.start()
        (name,) = guests(running_lab)
        dead = f"unibench-{dead_pid()}-0"  # as if the harness that made it had died
        dom0 = lab.dom0(running_lab)
        try:
            dom0.check(f"xl rename {name} {dead}")
        finally:
            dom0.close()
        assert guests(running_lab) == [dead]
        said: list[str] = []
        next_run = Dom0Lease("lab")
        next_run.acquire("unikernel-xen", said.append)
        next_run.release("unikernel-xen")
        assert guests(running_lab) == []
        assert any(dead in line for line in said)
    finally:
        guest.stop()  # nothing of it is left to destroy under its first name
        unikernel.release()


def test_a_lab_whose_run_died_is_stopped_by_the_next_run_and_a_users_is_not(
    running_lab: lab.LabState,
) -> None:
    # Last in this file: it stops the module's lab.
    sweep(print)
    assert lab.status() == running_lab  # `bench lab xen up`'s: the user's, and it stays
    state_file = lab.STATE_DIR / "state.json"
    owned = dataclasses.replace(running_lab, owner=f"{dead_pid()}.1")
    state_file.write_text(json.dumps(dataclasses.asdict(owned)))
    removed = sweep(print)
    assert any("the Xen lab" in line for line in removed)
    assert lab.status() is None
    assert not psutil.pid_exists(running_lab.pid) or (
        psutil.Process(running_lab.pid).status() == "zombie"
    )
    assert not Path(running_lab.overlay).exists()
