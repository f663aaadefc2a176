"""The target interface: where a workload runs, and how the harness starts, reaches and stops it.

Every kind of target (a host process, a container, a VM, a Xen guest, a remote host) implements
the same small surface. A Target is the kind and its configuration; each launch makes an Instance
that the harness starts, watches until ready, reaches at its address, and stops whatever happens.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.console import ConsoleWatcher
from harness.model import ParamValue

Log = Callable[[str], None]


@dataclass(frozen=True)
class Availability:
    """Whether a target can run on this machine; if not, why, and what would fix it."""

    ok: bool
    reason: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Port:
    """A port the workload serves on: its name in the workload's arguments, and the protocol."""

    name: str
    protocol: Literal["udp", "tcp"]
    number: int = 0  # where the workload has an address of its own (a unikernel): its port


@dataclass(frozen=True)
class Workload:
    """A Linux workload: a Python script run with the target's python3.

    `args` may name ports as "{name}"; each target substitutes the HOST:PORT the workload must
    listen on, which differs between a host process and a container behind a published port.
    """

    name: str
    script: Path
    args: tuple[str, ...] = ()
    ports: tuple[Port, ...] = ()
    ready_marker: str = "UNIBENCH-READY"
    unikernel_app: Path | None = None  # the same workload as a unikernel application folder
    # Host programs the script runs (iperf3): images get them with the libraries they load.
    programs: tuple[str, ...] = ()

    def argv(
        self, listen: Mapping[str, str], script_path: str, params: Mapping[str, ParamValue]
    ) -> list[str]:
        """The interpreter's arguments, with the script where the target keeps it, and the
        listening addresses and parameters in place of their "{name}"."""
        # -I: isolated from the host's environment; -S: no site import, as in the unikernel.
        script_args = [arg.format_map({**params, **listen}) for arg in self.args]
        return ["-I", "-S", script_path, *script_args]

    def digest(self) -> str:
        """Changes whenever what the workload runs changes; names cached images."""
        h = hashlib.sha256()
        h.update(self.script.read_bytes())
        h.update(repr((self.name, self.args, self.ports, self.ready_marker)).encode())
        for path in sorted(program_files(self.programs)):
            h.update(path.encode())
            h.update(Path(path).read_bytes())
        return h.hexdigest()[:12]


# glibc's own libraries: every Linux base image has them, matched to its dynamic loader.
_C_LIBRARY = re.compile(r"^(ld-linux.*|libc|libm|libpthread|libdl|librt)\.so")


def program_files(programs: tuple[str, ...]) -> set[str]:
    """The host files that running `programs` takes: each program and the shared libraries
    ldd says it loads, except the C library."""
    files: set[str] = set()
    for program in programs:
        path = shutil.which(program)
        if path is None:
            raise FileNotFoundError(f"{program} is not installed on this host: apt-get install it")
        files.add(path)
        done = subprocess.run(["ldd", path], capture_output=True, text=True, check=True)
        for line in done.stdout.splitlines():
            _, arrow, rest = line.partition("=>")
            library = rest.split("(")[0].strip() if arrow else ""
            if library.startswith("/") and not _C_LIBRARY.match(Path(library).name):
                files.add(library)
    return files


@dataclass(frozen=True)
class LaunchSettings:
    """How to launch: CPU pinning, for VMs memory, and the parameters the workload reads (as
    "{name}" in a Linux workload's arguments, as UNIBENCH_NAME in a unikernel's environment)."""

    cpus: int | None = None
    memory_mib: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    workload_params: Mapping[str, ParamValue] = field(default_factory=dict)

    def workload_environment(self) -> dict[str, str]:
        return {
            f"UNIBENCH_{name.upper()}": str(value) for name, value in self.workload_params.items()
        }


@dataclass(frozen=True)
class Usage:
    """What an instance cost the host."""

    cpu_seconds: float | None
    peak_memory_bytes: float | None


class Instance(ABC):
    """One launched workload. Created ready to start, so the harness can watch before t0."""

    console: ConsoleWatcher
    phases: dict[str, float]  # durations of launch phases the target can tell apart, seconds
    # Whether the host may probe the workload while the launch call still runs. Not where early
    # probes disturb what they measure (see the docker target).
    probe_during_launch: bool = True
    # The network namespace from which address() is reached; None: the harness's own.
    namespace: str | None = None

    @abstractmethod
    def start(self) -> float:
        """Launches the workload; returns t0, the clock just before the launch call."""

    @abstractmethod
    def address(self, port: str) -> tuple[str, int] | None:
        """Where the host reaches the workload's named port; None if this instance lacks it
        (a unikernel built without a network device)."""

    @abstractmethod
    def usage(self) -> Usage:
        """CPU time and peak memory so far; call before stop."""

    @abstractmethod
    def stop(self) -> None:
        """Kills the workload and frees everything it held. Safe to call twice, from any thread."""


class Target(ABC):
    name: str
    description: str
    family = "linux"  # or "unikernel": which workload a suite runs on it

    @abstractmethod
    def availability(self) -> Availability: ...

    def prepare(self, workload: Workload, log: Log) -> None:  # noqa: B027
        """Builds what launching needs (images), once per run; by default nothing."""

    @abstractmethod
    def create(self, workload: Workload, settings: LaunchSettings) -> Instance: ...

    def release(self) -> None:  # noqa: B027
        """Frees what prepare() held for the run (a Xen lab it started), once the run is over,
        however it ended; by default nothing."""

    def metadata(self) -> dict[str, object]:
        """Facts about this target for the run's metadata (versions, images, accel)."""
        return {}

    def sample_params(self) -> dict[str, str]:
        """Facts that make its samples a different series, recorded with each (accel)."""
        return {}


def free_port(protocol: Literal["udp", "tcp"]) -> int:
    """A port on 127.0.0.1 that nothing holds right now."""
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
