"""The runner against real targets: host processes here, Docker in test_docker_target.py."""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from rich.console import Console

from harness import runner
from harness.progress import QuietProgress
from harness.runner import RunSettings
from harness.store import Store
from harness.suites.base import RepeatContext
from harness.suites.boot import BOOT_PROBE, BootSuite
from harness.targets.base import Availability, Instance, LaunchSettings, Log, Target, Workload
from harness.targets.process import ProcessTarget
from harness.targets.veth import VethTarget
from hostkit import namespaces
from hostkit.interrupts import terminate_as_interrupt
from tests.support.netns import require
from tests.support.processes import HANG, processes_running
from tests.support.runs import run_suite


class UnavailableTarget(Target):
    """A target whose host lacks what it needs, as a machine without QEMU lacks QEMU."""

    name = "nowhere"
    description = "needs something this machine lacks"

    def availability(self) -> Availability:
        return Availability(False, "the nowhere hypervisor is not installed", "install it")

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        raise AssertionError("an unavailable target must never be launched")


class BrokenPrepareTarget(ProcessTarget):
    name = "broken"

    def prepare(
        self, workload: Workload, log: Log, own: Sequence[Mapping[str, str]] = ({},)
    ) -> None:
        raise RuntimeError("image recipe is broken")


class UnsureTarget(ProcessTarget):
    name = "unsure"

    def availability(self) -> Availability:
        raise OSError("cannot read /dev/kvm")


class StuckCreatingTarget(ProcessTarget):
    """Hangs creating its instance, as an SSH upload to a host that stopped answering does:
    there is no instance yet for the watchdog to stop."""

    name = "stuck"

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        time.sleep(3600)
        raise AssertionError("the watchdog should have interrupted the sleep")


class BrokenParamsTarget(ProcessTarget):
    name = "confused"

    def sample_params(self) -> dict[str, str]:
        raise RuntimeError("cannot tell its own accelerator")


def test_boot_on_process_records_every_repeat(tmp_path: Path) -> None:
    store, run = run_suite(
        tmp_path, BootSuite(), [ProcessTarget()], RunSettings(repeat=3, warmup=1)
    )
    samples = store.samples(run.id)
    by_metric: dict[str, list[float]] = {}
    for s in samples:
        assert s.failure is None, s.failure
        assert s.value is not None
        by_metric.setdefault(s.metric, []).append(s.value)
    assert run.complete
    assert set(by_metric) >= {
        "time_to_ready",
        "time_to_service",
        "host_cpu_seconds",
        "host_peak_memory",
    }
    assert all(len(values) == 3 for values in by_metric.values())  # the warm-up is not recorded
    assert all(0 < v < 5 for v in by_metric["time_to_ready"] + by_metric["time_to_service"])
    assert all(v > 1e6 for v in by_metric["host_peak_memory"])  # a Python process is MBs
    assert {s.repeat for s in samples} == {0, 1, 2}
    assert store.run(run.id).metadata["targets"] == {"process": ProcessTarget().metadata()}


def test_a_hanging_workload_is_killed_at_the_timeout_and_recorded_failed(tmp_path: Path) -> None:
    began = time.monotonic()
    store, run = run_suite(
        tmp_path, BootSuite(HANG), [ProcessTarget()], RunSettings(repeat=2, warmup=0, timeout=1.5)
    )
    elapsed = time.monotonic() - began
    samples = store.samples(run.id)
    assert run.complete  # the run finished: its repeats failed, it did not
    assert len(samples) == 4 and all(s.value is None for s in samples)
    assert all("timed out after 1.5 s" in (s.failure or "") for s in samples)
    assert "never ready" in (samples[0].failure or "")  # the console tail says what it printed
    assert elapsed < 30
    assert processes_running(HANG.script) == []


def test_an_unavailable_or_broken_target_does_not_stop_the_others(tmp_path: Path) -> None:
    targets: list[Target] = [
        UnavailableTarget(),
        BrokenPrepareTarget(),
        BrokenParamsTarget(),
        UnsureTarget(),
        ProcessTarget(),
    ]
    store, run = run_suite(tmp_path, BootSuite(), targets, RunSettings(2, 0))
    samples = store.samples(run.id)
    failures = {s.target: s.failure for s in samples if s.failure}
    assert "nowhere is unavailable: the nowhere hypervisor is not installed" in failures["nowhere"]
    assert "preparing broken failed: RuntimeError: image recipe is broken" in failures["broken"]
    assert "cannot tell its own accelerator" in failures["confused"]
    assert "unsure is unavailable: checking it failed: OSError: cannot read" in failures["unsure"]
    measured = [s for s in samples if s.target == "process" and s.metric == "time_to_ready"]
    assert len(measured) == 2 and all(s.value is not None for s in measured)


def test_pinning_is_applied_and_recorded(tmp_path: Path) -> None:
    store, run = run_suite(
        tmp_path, BootSuite(), [ProcessTarget()], RunSettings(repeat=1, warmup=0, cpus=1)
    )
    samples = store.samples(run.id)
    assert samples and all(s.params == {"cpus": 1} for s in samples)
    assert all(s.failure is None for s in samples)


@pytest.mark.parametrize("cpus", [10_000])
def test_impossible_pinning_fails_the_repeat_with_a_reason(tmp_path: Path, cpus: int) -> None:
    store, run = run_suite(
        tmp_path, BootSuite(), [ProcessTarget()], RunSettings(repeat=1, warmup=0, cpus=cpus)
    )
    failures = {s.failure for s in store.samples(run.id)}
    assert len(failures) == 1 and "asks for more CPUs than" in str(failures.pop())


def test_guest_phases_come_from_the_unikernels_marker_only() -> None:
    from harness.suites.boot import guest_phases

    vm = guest_phases("UNIBENCH-READY boottime=1.5 ready=1.75 target=qemu app=x", 2.0)
    assert [(m.metric.name, m.value) for m in vm] == [
        ("guest_launch_to_kernel", 0.25),  # 2 s from launch to marker, 1.75 s of it in the guest
        ("guest_kernel_to_main", 1.5),
        ("guest_boot_layer", 0.25),
    ]
    hosted = guest_phases("UNIBENCH-READY boottime=4000.0 ready=4000.5 target=hosted app=x", 1)
    assert [m.metric.name for m in hosted] == ["guest_boot_layer"]
    assert guest_phases("UNIBENCH-READY monotonic=12.0", 1.0) == []


def test_a_repeat_stuck_creating_its_instance_is_interrupted_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "WATCHDOG_GRACE", 0.5)
    monkeypatch.setattr(runner, "STUCK_GRACE", 0.5)
    began = time.monotonic()
    store, run = run_suite(
        tmp_path,
        BootSuite(),
        [StuckCreatingTarget(), ProcessTarget()],
        RunSettings(repeat=2, warmup=0, timeout=1.0),
    )
    elapsed = time.monotonic() - began
    samples = store.samples(run.id)
    stuck = [s for s in samples if s.target == "stuck"]
    assert run.complete
    assert stuck and all(s.value is None for s in stuck)
    assert all("timed out after 1 s" in (s.failure or "") for s in stuck)
    assert all("stuck" in (s.failure or "") for s in stuck)
    measured = [s for s in samples if s.target == "process" and s.metric == "time_to_ready"]
    assert len(measured) == 2 and all(s.value is not None for s in measured)
    assert elapsed < 20  # two stuck repeats of about 2 s each, not an hour


class InterruptedAsCreated(VethTarget):
    """Ctrl-C the moment a launch's namespaces exist, before the repeat holds the instance."""

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        instance = super().create(workload, settings)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # Python runs the handler here, or holds it back
        return instance


def test_ctrl_c_as_an_instance_is_created_leaves_it_held_and_then_stopped() -> None:
    require()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground job
    ctx = RepeatContext(InterruptedAsCreated(), LaunchSettings(), time.perf_counter() + 30)
    try:
        with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt):
            ctx.create(BOOT_PROBE)
        assert len(ctx.instances) == 1
        assert len(namespaces.held()) == 2  # the veth pair's two namespaces, still to stop
    finally:
        ctx.stop_all()
        signal.signal(signal.SIGINT, previous)
    assert namespaces.held() == []


class VariantTarget(ProcessTarget):
    """A target with a parameter of its own, as unikernel-xen has its drivers."""

    name = "variant"

    def __init__(self) -> None:
        super().__init__()
        self.params = {"drivers": ("kernel", "python")}
        self.prepared: list[Sequence[Mapping[str, str]]] = []
        self.launched: list[object] = []

    def prepare(
        self, workload: Workload, log: Log, own: Sequence[Mapping[str, str]] = ({},)
    ) -> None:
        self.prepared.append(list(own))
        super().prepare(workload, log, own)

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        self.launched.append(settings.workload_params.get("drivers"))
        return super().create(workload, settings)


def test_a_targets_own_parameter_is_measured_on_it_alone_and_recorded(tmp_path: Path) -> None:
    variant, plain = VariantTarget(), ProcessTarget()
    settings = RunSettings(repeat=1, warmup=0, params={"drivers": ["python", "kernel"]})
    store, run = run_suite(tmp_path, BootSuite(), [variant, plain], settings)
    ready = [s for s in store.samples(run.id) if s.metric == "time_to_ready"]
    assert all(s.failure is None for s in ready), [s.failure for s in ready]
    assert sorted(str(s.params.get("drivers")) for s in ready if s.target == "variant") == [
        "kernel",
        "python",
    ]
    assert [s.params for s in ready if s.target == "process"] == [{}]  # not its parameter
    # prepare() got each combination ready once, before the launches that needed them.
    assert variant.prepared == [[{"drivers": "python"}, {"drivers": "kernel"}]]
    assert variant.launched == ["python", "kernel"]
    # Not asked: its default, recorded all the same.
    quiet = VariantTarget()
    store, run = run_suite(tmp_path / "default", BootSuite(), [quiet], RunSettings(1, 0))
    assert {str(s.params.get("drivers")) for s in store.samples(run.id)} == {"kernel"}


@pytest.mark.parametrize(
    ("interleave", "order"),
    [
        (False, ["python", "python", "python", "kernel", "kernel", "kernel"]),
        (True, ["python", "kernel", "python", "kernel", "python", "kernel"]),
    ],
)
def test_interleaving_takes_the_parameter_sets_in_turn_repeat_by_repeat(
    tmp_path: Path, interleave: bool, order: list[str]
) -> None:
    variant = VariantTarget()
    params = {"drivers": ["python", "kernel"]}
    settings = RunSettings(repeat=2, warmup=1, params=params, interleave=interleave)
    store, run = run_suite(tmp_path, BootSuite(), [variant], settings)
    assert variant.launched == order  # the warm-ups too, each set's in its turn
    ready = [s for s in store.samples(run.id) if s.metric == "time_to_ready"]
    assert all(s.failure is None for s in ready), [s.failure for s in ready]
    kept = sorted((str(s.params["drivers"]), s.repeat) for s in ready)
    assert kept == [("kernel", 0), ("kernel", 1), ("python", 0), ("python", 1)]


def test_a_value_a_target_does_not_take_is_refused_naming_what_it_takes() -> None:
    suite, variant = BootSuite(), VariantTarget()
    suite.check_params({"drivers": ["pyhton"]}, [variant])  # left to the target that takes it
    with pytest.raises(ValueError, match="drivers=pyhton: variant takes kernel or python"):
        suite.measured_param_sets({"drivers": ["pyhton"]}, variant)
    with pytest.raises(ValueError, match="unknown parameter drivers"):
        suite.check_params({"drivers": ["python"]}, [ProcessTarget()])


def test_a_stop_that_fails_as_ctrl_c_comes_is_told_and_its_namespaces_still_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A namespace whose deletion fails while a Ctrl-C is held back: the interrupt must not
    hide the failure, and the run must not end with the namespace still there."""
    require()
    real_close = namespaces.NetworkNamespace.close

    def close_fails_and_ctrl_c(self: namespaces.NetworkNamespace) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # held back: the stop is under way
        time.sleep(0.1)
        if self.name.endswith(("1", "3", "5", "7", "9")):  # a veth pair's second, the server's
            raise namespaces.NamespaceError(f"ip netns delete {self.name} failed: busy")
        real_close(self)

    monkeypatch.setattr(namespaces.NetworkNamespace, "close", close_fails_and_ctrl_c)
    said = io.StringIO()
    store = Store(tmp_path / "bench.sqlite")
    bench = runner.Runner(
        store, RunSettings(repeat=1, warmup=0), QuietProgress(Console(file=said, width=200))
    )
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            bench.run(BootSuite(), [VethTarget()], "bench run --suite boot")
    finally:
        signal.signal(signal.SIGINT, previous)
    told = said.getvalue()
    assert "linux-veth: clean-up failed: NamespaceError: ip netns delete" in told, told
    assert "left by a launch of this run whose stop failed" in told, told
    assert namespaces.held() == []
