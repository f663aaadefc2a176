"""The `process` target: the workload as a native Linux process on the host (the paper's "Linux
native"), run by Debian's python3 so that it matches the interpreter in the container images."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psutil

from harness.console import ConsoleWatcher
from harness.targets.base import (
    Availability,
    Instance,
    LaunchSettings,
    Target,
    Usage,
    Workload,
    free_port,
)


def host_python() -> str:
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def pinned_cpus(count: int) -> set[int]:
    """The last `count` CPUs this process may use, leaving the first ones to the harness."""
    allowed = sorted(os.sched_getaffinity(0))
    if count > len(allowed):
        raise ValueError(f"--cpus {count} asks for more CPUs than the {len(allowed)} available")
    return set(allowed[-count:])


def read_pipe(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, 65536):
        yield chunk


def peak_rss_bytes(pid: int) -> int:
    """The kernel's high-water mark of resident memory (VmHWM); psutil reports only the current."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class ProcessInstance(Instance):
    def __init__(self, workload: Workload, settings: LaunchSettings) -> None:
        self._ports = {
            port.name: ("127.0.0.1", free_port(port.protocol)) for port in workload.ports
        }
        listen = {name: f"{host}:{port}" for name, (host, port) in self._ports.items()}
        self._argv = [host_python(), *workload.argv(listen)]
        self._cwd = workload.script.parent
        self._cpus = pinned_cpus(settings.cpus) if settings.cpus else None
        self._read_fd, self._write_fd = os.pipe()
        self._popen: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.phases: dict[str, float] = {}
        self.console = ConsoleWatcher(read_pipe(self._read_fd), name=workload.name)
        self.console.start()

    def start(self) -> float:
        cpus = self._cpus
        t0 = time.perf_counter()
        self._popen = subprocess.Popen(
            self._argv,
            cwd=self._cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._write_fd,
            stderr=self._write_fd,
            start_new_session=True,  # one process group, killed whole at stop
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        os.close(self._write_fd)  # the child holds the only writer now: its exit is our EOF
        self._write_fd = -1
        return t0

    def address(self, port: str) -> tuple[str, int]:
        return self._ports[port]

    def usage(self) -> Usage:
        if self._popen is None:
            return Usage(cpu_seconds=None, peak_memory_bytes=None)
        try:
            root = psutil.Process(self._popen.pid)
            tree = [root, *root.children(recursive=True)]
            cpu = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
            cpu += root.cpu_times().children_user + root.cpu_times().children_system
            peak = sum(peak_rss_bytes(p.pid) for p in tree)
        except (psutil.Error, OSError):
            return Usage(cpu_seconds=None, peak_memory_bytes=None)
        return Usage(cpu_seconds=cpu, peak_memory_bytes=float(peak))

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._write_fd >= 0:
            os.close(self._write_fd)
        if self._popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            self._popen.wait()
        self.console.join(timeout=5)
        os.close(self._read_fd)


class ProcessTarget(Target):
    name = "process"
    description = "the workload as a native Linux process on the host"

    def availability(self) -> Availability:
        python = host_python()
        if not os.access(python, os.X_OK):
            return Availability(False, f"no python3 at {python}", "apt-get install python3")
        return Availability(True)

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        return ProcessInstance(workload, settings)

    def metadata(self) -> dict[str, object]:
        python = host_python()
        version = subprocess.run(
            [python, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        return {"accel": "native", "python": python, "python_version": version}
