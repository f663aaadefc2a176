"""Workloads that misbehave, and finding the processes a test left behind."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil

from harness.suites.boot import BootSuite
from harness.targets.base import Workload
from harness.targets.process import ProcessTarget

HANG = Workload(
    name="hang",
    script=Path(__file__).resolve().parents[1] / "workloads" / "hang.py",
    devices=BootSuite().workload(ProcessTarget()).devices,
)


def processes_running(script: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(script.name) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def dead_pid() -> int:
    """The pid of a process that has ended: an owner that died."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def wait_for_exec(pid: int, argv: list[str]) -> None:
    """Until process `pid` runs `argv`: until it has exec'd, /proc shows what it was forked
    with (its environment, its namespace, its command line)."""
    wanted = "\0".join(argv).encode()
    deadline = time.monotonic() + 5
    while not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(wanted):
        assert time.monotonic() < deadline, f"process {pid} never ran {argv}"
        time.sleep(0.01)
