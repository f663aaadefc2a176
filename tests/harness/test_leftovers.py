"""What a harness killed with SIGKILL left is removed by the next one: processes, namespaces
(with what runs in them), launch disks, VM overlays and containers. What a live harness
holds is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.leftovers import sweep
from hostkit import namespaces, owners
from hostkit.launch_disk import launch_disks_dir
from tests.support.netns import require
from tests.support.processes import dead_pid, wait_for_exec

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def test_the_leftovers_of_a_dead_harness_go_and_a_live_ones_stay(
    cache: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    require()
    dead = dead_pid()
    dead_ns, live_ns = f"unibench-{dead}-0", f"unibench-{os.getpid()}-900"
    for name in (dead_ns, live_ns):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # Unmarked, in the namespace: found only through it, and it would keep it alive.
        inside = subprocess.Popen(
            ["ip", "netns", "exec", dead_ns, *SLEEPER], start_new_session=True
        )
        processes.append(inside)
        marked = subprocess.Popen(
            SLEEPER,
            env={**os.environ, owners.OWNER_VARIABLE: f"{dead}.1"},
            start_new_session=True,
        )
        processes.append(marked)
        for started in (inside, marked):
            wait_for_exec(started.pid, SLEEPER)  # in the namespace, marked
        disks = launch_disks_dir()
        overlays = cache / "vm-overlays"
        overlays.mkdir(parents=True)
        stale_files = [disks / f"{dead}-0-data.img", overlays / f"linux-vm-{dead}-ab1_x.qcow2"]
        live_files = [disks / f"{os.getpid()}-0-data.img", overlays / f"x-{os.getpid()}-a.qcow2"]
        for path in (*stale_files, *live_files):
            path.write_bytes(b"")
        said: list[str] = []

        removed = sweep(said.append)

        assert marked.wait(timeout=5) == -9
        assert inside.wait(timeout=5) == -9
        names = os.listdir(namespaces.NETNS_DIR)
        assert dead_ns not in names and live_ns in names
        assert not any(path.exists() for path in stale_files)
        assert all(path.exists() for path in live_files)
        assert any(dead_ns in line for line in removed)
        assert any(str(marked.pid) in line for line in removed)
        assert said == [f"removed {line}, left by a harness that died" for line in removed]
    finally:
        for name in (dead_ns, live_ns):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
