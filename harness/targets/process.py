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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from harness.console import ConsoleWatcher, read_pipe
from harness.sizing import files_size, native_python_files
from harness.targets.base import (
    Availability,
    ImageSize,
    Instance,
    LaunchSettings,
    Log,
    Target,
    Usage,
    Workload,
    free_port,
)
from hostkit.interrupts import signals_deferred
from hostkit.launch_disk import LaunchDisk

if TYPE_CHECKING:
    from unikernel.devices import Offload
from hostkit.namespaces import entered

# Seconds a workload has to end after SIGTERM before the rest of its group is killed.
STOP_GRACE = 1.0


class Closable(Protocol):
    def close(self) -> None: ...


def host_python() -> str:
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def pinned_cpus(count: int) -> set[int]:
    """The last `count` CPUs this process may use, leaving the first ones to the harness."""
    allowed = sorted(os.sched_getaffinity(0))
    if count > len(allowed):
        raise ValueError(f"--cpus {count} asks for more CPUs than the {len(allowed)} available")
    return set(allowed[-count:])


def peak_rss_bytes(pid: int) -> int:
    """The kernel's high-water mark of resident memory (VmHWM); psutil reports only the current."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """Pins the calling thread for the block; a child spawned meanwhile inherits the pinning."""
    if cpus is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


class ProcessInstance(Instance):
    """Any workload that is one host process and its children: a Python program, a hosted
    unikernel, a QEMU VM. Its console is its standard output and error."""

    def __init__(
        self,
        workload: Workload,
        argv: list[str],
        ports: dict[str, tuple[str, int]],
        settings: LaunchSettings,
        environment: Mapping[str, str] | None = None,
        namespace: str | None = None,
        spawn_namespace: str | None = None,
        owned: Sequence[Closable] = (),
        ready_marker: str | None = None,
    ) -> None:
        """`owned`: what the launch made for the process (its network link, its disk), closed
        after the process has gone. `ready_marker`: when not the workload's own (a VM that
        boots before its workload runs)."""
        name = workload.name
        self.ready_marker = ready_marker or workload.ready_marker
        self._ports = ports
        self.namespace = namespace  # where its ports are reached from
        self._spawn_namespace = spawn_namespace  # where it runs
        self._owned = tuple(owned)
        self._argv = argv
        self._environment = {**os.environ, **(environment or {})}
        self._cpus = pinned_cpus(settings.cpus) if settings.cpus else None
        self._read_fd, self._write_fd = os.pipe()
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.phases: dict[str, float] = {}
        self.console = ConsoleWatcher(read_pipe(self._read_fd), name=name)
        self.console.start()

    def start(self) -> float:
        # posix_spawn, not Popen: no preexec hook is needed (which would force a slow fork and
        # add to what we measure), and the child starts with no signal blocked.
        with signals_deferred(), affinity(self._cpus), entered(self._spawn_namespace):
            t0 = time.perf_counter()
            self._pid = os.posix_spawnp(
                self._argv[0],
                self._argv,
                self._environment,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, self._write_fd, 1),
                    (os.POSIX_SPAWN_DUP2, self._write_fd, 2),
                ],
                setsid=True,  # one process group, killed whole at stop
                setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores them; children don't
            )
        os.close(self._write_fd)  # the child holds the only writer now: its exit is our EOF
        self._write_fd = -1
        return t0

    def address(self, port: str) -> tuple[str, int] | None:
        return self._ports.get(port)

    def usage(self) -> Usage:
        if self._pid is None:
            return Usage(cpu_seconds=None, peak_memory_bytes=None)
        try:
            root = psutil.Process(self._pid)
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
        # What the launch made goes even if ending the process fails; last to first, each
        # even if one fails.
        with contextlib.ExitStack() as owned:
            for resource in self._owned:
                owned.callback(resource.close)
            if self._write_fd >= 0:
                os.close(self._write_fd)
            if self._pid is not None:
                end_process_group(self._pid)
            self.console.join(timeout=5)
            os.close(self._read_fd)


def end_process_group(pid: int, grace: float = STOP_GRACE) -> None:
    """Ends the process group `pid` leads and reaps its leader: SIGTERM first, so that a
    workload can clean up after itself (a server script removing its files), then, after
    `grace` seconds or once the leader is gone, SIGKILL for whatever is left of the group."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    reaped = False
    while not reaped and time.monotonic() < deadline:
        try:
            reaped = os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:
            reaped = True
        if not reaped:
            time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if not reaped:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def process_instance(
    workload: Workload,
    settings: LaunchSettings,
    ports: dict[str, tuple[str, int]],
    *,
    namespace: str | None = None,
    spawn_namespace: str | None = None,
    owned: Sequence[Closable] = (),
) -> ProcessInstance:
    """The workload's script run by the host's python3, listening where `ports` say, with a
    host file for each disk it declares; the files and what else it `owned` go when it stops."""
    disks = [LaunchDisk(disk) for disk in workload.disks]
    try:
        places = {name: f"{host}:{port}" for name, (host, port) in ports.items()}
        places.update({disk.name: str(disk.path) for disk in disks})
        argv = [
            host_python(),
            *workload.argv(places, str(workload.script), settings.workload_params),
        ]
        return ProcessInstance(
            workload,
            argv,
            ports,
            settings,
            namespace=namespace,
            spawn_namespace=spawn_namespace,
            owned=(*owned, *disks),
        )
    except BaseException:
        for disk in disks:
            disk.close()
        raise


class ProcessTarget(Target):
    name = "process"
    description = "the workload as a native Linux process on the host"

    def availability(self) -> Availability:
        python = host_python()
        if not os.access(python, os.X_OK):
            return Availability(False, f"no python3 at {python}", "apt-get install python3")
        return Availability(True)

    def link_offloads(self, workload: Workload) -> tuple[Offload, ...]:
        return ("on",)  # loopback: Linux never segments or checksums there

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        ports = {port.name: ("127.0.0.1", free_port(port.protocol)) for port in workload.ports}
        return process_instance(workload, settings, ports)

    def image_size(
        self, workload: Workload, build: str | None, log: Log, own: Mapping[str, str] | None = None
    ) -> ImageSize:
        # No image: what Debian's python3 needs on the host's disk.
        return ImageSize(total=files_size(native_python_files(Path(host_python()).resolve())))

    def metadata(self) -> dict[str, object]:
        python = host_python()
        version = subprocess.run(
            [python, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        return {"accel": "native", "python": python, "python_version": version}
