"""How a process target's workload is stopped: SIGTERM to its group first, so it can clean up,
then SIGKILL for whatever is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.suites.boot import BOOT_PROBE
from harness.targets import process
from harness.targets.base import LaunchSettings
from harness.targets.process import end_process_group, process_instance

CLEANS_UP = """
import os, signal, sys, time
def done(signum, frame):
    open(sys.argv[1], "w").write("cleaned")
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
print("ready", flush=True)
time.sleep(60)
"""

IGNORES_IT = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def spawn(code: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as the process target starts workloads
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def test_a_workload_that_cleans_up_on_sigterm_gets_to(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    process, line = spawn(CLEANS_UP, str(mark))
    assert line == "ready"
    end_process_group(process.pid, grace=10)
    assert mark.read_text() == "cleaned"
    assert not psutil.pid_exists(process.pid)


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    process, child_pid = spawn(IGNORES_IT)
    began = time.monotonic()
    end_process_group(process.pid, grace=0.5)
    took = time.monotonic() - began
    assert 0.5 <= took < 10
    assert not psutil.pid_exists(process.pid)
    deadline = time.monotonic() + 5  # the child is not ours to reap: init does, soon
    while psutil.pid_exists(int(child_pid)) and time.monotonic() < deadline:
        if psutil.Process(int(child_pid)).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    alive = psutil.pid_exists(int(child_pid))
    assert not alive or psutil.Process(int(child_pid)).status() == psutil.STATUS_ZOMBIE


def test_a_group_already_gone_is_no_error() -> None:
    process, _ = spawn(CLEANS_UP, os.devnull)
    end_process_group(process.pid, grace=5)
    end_process_group(process.pid, grace=5)  # a second stop finds nothing to do


class Owned:
    """Something a launch made for its process (a link, a disk), noting whether it went."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_what_a_launch_made_goes_even_when_ending_its_process_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails(pid: int, grace: float = 0.0) -> None:
        os.killpg(pid, signal.SIGKILL)
        raise PermissionError(f"cannot signal group {pid}")

    link = Owned()
    ports = {"probe": ("127.0.0.1", 0)}
    instance = process_instance(BOOT_PROBE, LaunchSettings(), ports, owned=(link,))
    instance.start()
    monkeypatch.setattr(process, "end_process_group", fails)
    with pytest.raises(PermissionError, match="cannot signal group"):
        instance.stop()
    assert link.closed
