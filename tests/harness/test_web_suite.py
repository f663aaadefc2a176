"""The web suite: its parameters, and the real servers measured by the real generators
(locust with its master and workers, wrk) on the process and unikernel-hosted targets."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from harness.runner import RunSettings
from harness.suites.web import WebSuite
from harness.targets import all_targets
from harness.targets.process import ProcessTarget
from hostkit import namespaces
from tests.support.netns import require
from tests.support.runs import run_suite, values


def test_each_kind_of_target_runs_its_own_servers_for_each_app() -> None:
    linux = WebSuite().param_sets({"users": ["10"]}, ProcessTarget())
    assert sorted((p["app"], p["server"], p["generator"]) for p in linux) == [
        ("dynamic", "sockets", "locust"),
        ("static", "apache2", "locust"),
        ("static", "nginx", "locust"),
        ("static", "sockets", "locust"),  # our static appliance on Linux's TCP
    ]
    unikernel = WebSuite().param_sets(
        {"users": ["10", "20"], "generator": ["locust", "wrk"]}, all_targets()["unikernel-qemu"]
    )
    assert sorted((p["app"], p["server"], p["generator"], p["users"]) for p in unikernel) == [
        ("dynamic", "unikernel", "locust", "10"),  # wrk has no sessions: locust only
        ("dynamic", "unikernel", "locust", "20"),
        ("static", "unikernel", "locust", "10"),
        ("static", "unikernel", "locust", "20"),
        ("static", "unikernel", "wrk", "10"),
        ("static", "unikernel", "wrk", "20"),
    ]


def test_servers_of_both_kinds_go_each_to_its_own_targets() -> None:
    asked = {"server": ["unikernel", "nginx"], "users": ["5"]}
    linux = WebSuite().param_sets(asked, ProcessTarget())
    assert [(p["app"], p["server"]) for p in linux] == [("static", "nginx")]
    hosted = WebSuite().param_sets(asked, all_targets()["unikernel-hosted"])
    assert sorted((p["app"], p["server"]) for p in hosted) == [
        ("dynamic", "unikernel"),
        ("static", "unikernel"),
    ]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("app", "blog", "say static or dynamic"),
        ("generator", "ab", "say locust or wrk"),
        ("users", "0", "a whole number"),
        ("seconds", "ten", "a whole number"),
        ("server", "lighttpd", "the servers are nginx, apache2, sockets, unikernel"),
        ("server", "unikernel", "process runs none of what was asked"),
    ],
)
def test_bad_parameters_are_refused_with_what_to_say(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        WebSuite().param_sets({name: [value]}, ProcessTarget())


def test_instances_scale_the_unikernels_out_and_linux_up_within_this_machine() -> None:
    cores = len(os.sched_getaffinity(0))
    asked = {"instances": ["1", str(cores)], "generator": ["locust", "wrk"], "users": ["8"]}
    hosted = WebSuite().param_sets(asked, all_targets()["unikernel-hosted"])
    # wrk loads one server: only single instances.
    assert sorted((p["app"], p["generator"], p["instances"]) for p in hosted) == sorted(
        [
            ("static", "locust", "1"),
            ("static", "locust", str(cores)),
            ("static", "wrk", "1"),
            ("dynamic", "locust", "1"),
            ("dynamic", "locust", str(cores)),
        ]
    )
    with pytest.raises(ValueError, match="one host of that many CPUs"):
        WebSuite().param_sets({"instances": [str(cores + 1)]}, ProcessTarget())
    # The dynamic appliance scales out on Linux too: as many instances as asked.
    assert WebSuite().param_sets(
        {"instances": [str(cores + 1)], "app": ["dynamic"]}, ProcessTarget()
    )


def test_wrk_measures_no_sessions() -> None:
    names = {metric.name for metric in WebSuite().metrics_for({"generator": "wrk"})}
    assert "sessions_per_second" not in names and "requests_per_second" in names


@pytest.mark.slow
def test_nginx_apache2_and_the_socket_mode_appliance_under_locust_and_wrk(
    tmp_path: Path,
) -> None:
    require("nginx", "apache2", "wrk")
    params = {"users": ["4"], "seconds": ["2"], "generator": ["locust", "wrk"]}
    store, run = run_suite(
        tmp_path, WebSuite(), [ProcessTarget()], RunSettings(1, 0, 180, params=params)
    )
    samples = store.samples(run.id)
    assert not [s for s in samples if s.failed], [s.failure for s in samples if s.failed]
    rates = {
        (s.params["app"], s.params["server"], s.params["generator"]): s.value
        for s in samples
        if s.metric == "requests_per_second"
    }
    assert set(rates) == {
        ("static", "nginx", "locust"),
        ("static", "nginx", "wrk"),
        ("static", "apache2", "locust"),
        ("static", "apache2", "wrk"),
        ("static", "sockets", "locust"),
        ("static", "sockets", "wrk"),
        ("dynamic", "sockets", "locust"),
    }
    assert all((rate or 0) > 20 for rate in rates.values()), rates
    found = values(samples)
    assert all(rate == 0 for rate in found[("process", "error_rate")])
    assert len(found[("process", "sessions_per_second")]) == 4  # locust's runs only
    assert all(rate > 1 for rate in found[("process", "sessions_per_second")])
    assert run.complete


@pytest.mark.slow
def test_the_unikernel_appliances_hosted_on_our_stack_two_instances(tmp_path: Path) -> None:
    """Two instances each: two launches, two namespaces, a locust master for each."""
    require("ip")
    params = {"users": ["4"], "seconds": ["2"], "instances": ["2"]}
    target = all_targets()["unikernel-hosted"]
    store, run = run_suite(tmp_path, WebSuite(), [target], RunSettings(1, 0, 240, params=params))
    samples = store.samples(run.id)
    assert not [s for s in samples if s.failed], [s.failure for s in samples if s.failed]
    found = values(samples)
    assert len(found[("unikernel-hosted", "sessions_per_second")]) == 2  # static and dynamic
    assert all(rate > 1 for rate in found[("unikernel-hosted", "sessions_per_second")])
    assert all(rate == 0 for rate in found[("unikernel-hosted", "error_rate")])


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(int(os.environ.get("UNIBENCH_FAULT_SEEDS", "4"))))
def test_a_run_stopped_at_a_random_moment_leaves_nothing_behind(tmp_path: Path, seed: int) -> None:
    """SIGTERM at a random point of a web run (booting, spawning locust, under load, between
    repeats): it ends as interrupted, keeps what it measured, and leaves no process (locust's
    master and workers, nginx, apache2, the appliances), namespace or server folder."""
    require("nginx", "apache2", "ip")
    # Counted from its first launch: before that it builds the appliances, which takes longer
    # the first time (a fresh clone) than after.
    moment = random.Random(seed).uniform(0.0, 12.0)
    bench = str(Path(sys.executable).parent / "bench")
    proc = subprocess.Popen(
        [
            bench,
            "--store",
            str(tmp_path / "b.sqlite"),
            "run",
            "--suite",
            "web",
            "--target",
            "unikernel-hosted",
            "--target",
            "process",
            "--param",
            "users=4",
            "--param",
            "seconds=3",
            "--repeat",
            "50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: dict[int, psutil.Process] = {}
    first_launch = time.monotonic() + 300
    try:
        while not seen and time.monotonic() < first_launch and proc.poll() is None:
            seen.update((p.pid, p) for p in _descendants(proc.pid))
            time.sleep(0.05)
        assert seen, "the run launched nothing within 5 minutes"
        deadline = time.monotonic() + moment
        while time.monotonic() < deadline:  # every process it starts, however short-lived
            seen.update((p.pid, p) for p in _descendants(proc.pid))
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    time.sleep(1)  # what was killed is gone from the process table
    alive = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]
    netns = os.listdir(namespaces.NETNS_DIR) if os.path.isdir(namespaces.NETNS_DIR) else []
    assert not [name for name in netns if name.startswith(f"unibench-{proc.pid}-")]
    leftovers = [
        name
        for name in os.listdir(tempfile.gettempdir())
        if name.startswith(("unibench-locust-", f"unibench-web-{proc.pid}"))
    ]
    assert leftovers == []


@pytest.mark.docker
@pytest.mark.slow
def test_every_server_runs_in_the_minimal_container_from_what_is_copied_in(
    tmp_path: Path, docker_client: object
) -> None:
    """The minimal image has python3-minimal and the C library only: apache2 comes with its
    modules and the library glibc opens by itself, the socket-mode archive with the
    interpreter's extension modules it imports."""
    require("nginx", "apache2")
    params = {"users": ["4"], "seconds": ["2"]}
    target = all_targets()["docker-minimal"]
    store, run = run_suite(tmp_path, WebSuite(), [target], RunSettings(1, 0, 180, params=params))
    samples = store.samples(run.id)
    assert not [s for s in samples if s.failed], [s.failure for s in samples if s.failed]
    servers = {(s.params["app"], s.params["server"]) for s in samples if s.metric == "error_rate"}
    assert servers == {
        ("static", "nginx"),
        ("static", "apache2"),
        ("static", "sockets"),
        ("dynamic", "sockets"),
    }
    assert all(rate == 0 for rate in values(samples)[("docker-minimal", "error_rate")])
