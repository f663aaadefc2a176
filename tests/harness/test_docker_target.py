"""The docker targets for real, against the engine: boots, a hanging workload, clean-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import docker
import pytest
from rich.console import Console

from harness.leftovers import sweep
from harness.progress import QuietProgress
from harness.runner import Runner, RunSettings
from harness.store import Store
from harness.suites.boot import BootSuite
from harness.targets.base import Target
from harness.targets.docker import LABEL, DockerTarget, cgroup_v2_peak, docker_targets
from hostkit.owners import token
from tests.support.processes import HANG

pytestmark = pytest.mark.docker


def our_containers(client: docker.DockerClient) -> list[str]:
    containers = client.containers.list(all=True, filters={"label": f"{LABEL}={token()}"})
    return [c.short_id for c in containers]


def run_boot(
    tmp_path: Path, suite: BootSuite, targets: list[Target], settings: RunSettings
) -> Store:
    store = Store(tmp_path / "bench.sqlite")
    Runner(store, settings, QuietProgress(Console(quiet=True))).run(suite, targets, "test")
    return store


def test_boot_in_both_images(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    store = run_boot(tmp_path, BootSuite(), docker_targets(), RunSettings(repeat=2, warmup=0))
    run = store.last_run()
    samples = store.samples(run.id)
    assert [s.failure for s in samples if s.failure] == []
    for target in ("docker", "docker-minimal"):
        metrics = {s.metric for s in samples if s.target == target}
        assert metrics >= {
            "time_to_ready",
            "time_to_service",
            "phase_create",
            "phase_start_call",
            "host_cpu_seconds",
            "host_peak_memory",
        }
        ready = [s.value for s in samples if s.target == target and s.metric == "time_to_ready"]
        assert len(ready) == 2 and all(v is not None and 0 < v < 30 for v in ready)
    targets_meta = run.metadata["targets"]
    assert isinstance(targets_meta, dict)
    assert targets_meta["docker"]["engine_version"]
    assert our_containers(docker_client) == []


def test_a_hanging_container_is_killed_recorded_and_removed(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    target = DockerTarget("docker", "debian-python", "test")
    store = run_boot(
        tmp_path, BootSuite(HANG), [target], RunSettings(repeat=1, warmup=0, timeout=3)
    )
    samples = store.samples(store.last_run().id)
    assert samples and all(s.value is None for s in samples)
    assert all("timed out after 3 s" in (s.failure or "") for s in samples)
    assert "never ready" in (samples[0].failure or "")
    assert our_containers(docker_client) == []


def test_containers_left_by_a_dead_harness_are_removed(docker_client: docker.DockerClient) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = dead.stdout.strip()
    target = DockerTarget("docker", "debian-python", "test")
    workload = BootSuite().workload(target)
    target.prepare(workload, lambda _: None)
    tag = target.image(workload)
    # Labels hold owner tokens (pid.start); an older label holds only the pid.
    left = [
        docker_client.containers.create(tag, command=["true"], labels={LABEL: label})
        for label in (dead_pid, f"{dead_pid}.12345")
    ]
    mine = docker_client.containers.create(tag, command=["true"], labels={LABEL: token()})
    try:
        removed = sweep(lambda _: None)  # what every run does first, whatever its targets
        remaining = {c.id for c in docker_client.containers.list(all=True)}
        assert not remaining & {c.id for c in left}
        assert mine.id in remaining  # a live harness's containers are its own business
        assert sum(dead_pid in line for line in removed) == 2
    finally:
        mine.remove(force=True)


def test_peak_memory_under_cgroup_v2_comes_from_the_cgroups_memory_peak(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text("0::/system.slice/docker-abc.scope\n")
    group = root / "system.slice" / "docker-abc.scope"
    group.mkdir(parents=True)
    (group / "memory.peak").write_text("123456789\n")
    assert cgroup_v2_peak(42, proc, root) == 123456789
    # cgroup v1 lists controllers, not the unified hierarchy: no peak from here.
    (proc / "42" / "cgroup").write_text("12:memory:/docker/abc\n1:name=systemd:/docker/abc\n")
    assert cgroup_v2_peak(42, proc, root) is None
    assert cgroup_v2_peak(43, proc, root) is None  # the container has gone


def test_no_engine_makes_the_target_unavailable_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    availability = DockerTarget("docker", "debian-python", "test").availability()
    assert not availability.ok
    assert "no Docker engine answers" in availability.reason
    assert "dockerd" in availability.fix
