"""The target interface: where a workload runs, and how the harness starts, reaches and stops it.

Every kind of target (a host process, a container, a VM, a Xen guest, a remote host) implements
the same small surface. A Target is the kind and its configuration; each launch makes an Instance
that the harness starts, watches until ready, reaches at its address, and stops whatever happens.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
import socket
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from harness.console import ConsoleWatcher
from harness.model import ParamValue
from unikernel.devices import (
    READY_MARKER,
    Console,
    Device,
    Disk,
    Network,
    Port,
    check_names,
    devices_of,
)

if TYPE_CHECKING:
    from unikernel.devices import Offload

Log = Callable[[str], None]


@dataclass(frozen=True)
class Availability:
    """Whether a target can run on this machine; if not, why, and what would fix it."""

    ok: bool
    reason: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Workload:
    """What a suite runs on a target: a Python script for Linux targets (run with the target's
    python3) and the same workload as a unikernel application, with the devices it needs.

    `args` may name ports as "{name}"; each target substitutes the HOST:PORT the workload must
    listen on, which differs between a host process and a container behind a published port, and
    disks as "{name}", the path of the device there. Parameters of the run fill the other names.
    """

    name: str
    script: Path
    args: tuple[str, ...] = ()
    devices: tuple[Device, ...] = (Console(),)
    unikernel_app: Path | None = None  # the same workload as a unikernel application folder
    # Host programs the script runs (iperf3): images get them with the libraries they load.
    programs: tuple[str, ...] = ()
    # Host files those programs open at run time that ldd does not list (apache2's modules,
    # a library glibc opens itself, the interpreter's extension modules a minimal image lacks):
    # images get them too, at the same paths, with the libraries shared objects among them load.
    program_data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_names(self.devices)

    @property
    def ready_marker(self) -> str:
        consoles = devices_of(self.devices, Console)
        return consoles[0].ready_marker if consoles else READY_MARKER

    @property
    def network(self) -> Network | None:
        """The workload's link to the host, if it serves on one."""
        networks = devices_of(self.devices, Network)
        return networks[0] if networks else None

    @property
    def ports(self) -> tuple[Port, ...]:
        return self.network.ports if self.network is not None else ()

    @property
    def disks(self) -> list[Disk]:
        return devices_of(self.devices, Disk)

    def argv(
        self, places: Mapping[str, str], script_path: str, params: Mapping[str, ParamValue]
    ) -> list[str]:
        """The interpreter's arguments, with the script where the target keeps it, and the
        listening addresses, disk paths and parameters in place of their "{name}"."""
        # -I: isolated from the host's environment; -S: no site import, as in the unikernel.
        script_args = [arg.format_map({**params, **places}) for arg in self.args]
        return ["-I", "-S", script_path, *script_args]

    def digest(self) -> str:
        """Changes whenever what an image of the workload holds changes (its script and host
        programs; not its devices, which each launch attaches); names cached images."""
        h = hashlib.sha256()
        h.update(self.script.read_bytes())
        h.update(repr((self.name, self.args)).encode())
        for path in sorted(self.host_files()):
            h.update(path.encode())
            h.update(Path(path).read_bytes())
        return h.hexdigest()[:12]

    def host_files(self) -> set[str]:
        """What an image of the workload copies from the host: its programs, the libraries
        they load, and their data."""
        files = program_files(self.programs)
        for path in self.program_data:
            if not Path(path).is_file():
                needed = ", ".join(self.programs) or self.name
                raise FileNotFoundError(f"{path} (for {needed}) is missing on this host")
            files.add(path)
            if ".so" in Path(path).name:
                files |= shared_libraries(path)
        return files


# glibc's loader and C library: every Linux base image has them, matched to each other. Its
# other libraries (libm, libpthread...) a minimal image may lack: those are copied with the
# program (the images are Debian bookworm's, as the host is, so from the same glibc).
_C_LIBRARY = re.compile(r"^(ld-linux.*|libc)\.so")


def program_files(programs: tuple[str, ...]) -> set[str]:
    """The host files that running `programs` takes: each program and the shared libraries
    ldd says it loads, except the C library."""
    files: set[str] = set()
    for program in programs:
        path = shutil.which(program)
        if path is None:
            raise FileNotFoundError(f"{program} is not installed on this host: apt-get install it")
        files.add(path)
        files |= shared_libraries(path)
    return files


def shared_libraries(path: str) -> set[str]:
    """The shared libraries ldd says the program or shared object at `path` loads, except the
    C library."""
    done = subprocess.run(["ldd", path], capture_output=True, text=True, check=True)
    libraries = set()
    for line in done.stdout.splitlines():
        _, arrow, rest = line.partition("=>")
        library = rest.split("(")[0].strip() if arrow else ""
        if library.startswith("/") and not _C_LIBRARY.match(Path(library).name):
            libraries.add(library)
    return libraries


@dataclass(frozen=True)
class LaunchSettings:
    """How to launch: CPU pinning, for VMs memory, whether the link offloads checksums and
    segmentation (None: the link's default), and the parameters the workload reads (as "{name}"
    in a Linux workload's arguments, as UNIBENCH_NAME in a unikernel's environment)."""

    cpus: int | None = None
    memory_mib: int | None = None
    offloads: bool | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    workload_params: Mapping[str, ParamValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageSize:
    """What a target's image for a workload weighs: each part, and the whole, in bytes as stored
    and once compressed (zlib, level 9, so compressed sizes compare across targets); and, where
    the target can tell, the lines of code behind it."""

    total: tuple[int, int]
    parts: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    code_lines: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    """What an instance cost the host."""

    cpu_seconds: float | None
    peak_memory_bytes: float | None


class Instance(ABC):
    """One launched workload. Created ready to start, so the harness can watch before t0."""

    console: ConsoleWatcher
    ready_marker: str = READY_MARKER  # what the workload prints once ready
    phases: dict[str, float]  # durations of launch phases the target can tell apart, seconds
    # Whether the host may probe the workload while the launch call still runs. Not where early
    # probes disturb what they measure (see the docker target).
    probe_during_launch: bool = True
    # The network namespace from which address() is reached; None: the harness's own.
    namespace: str | None = None

    @abstractmethod
    def start(self) -> float:
        """Launches the workload; returns t0, the clock just before the launch call."""

    def ready(self, deadline: float) -> tuple[float, str]:
        """Waits for the workload to say it is ready: when the marker arrived, and its line.
        TimeoutError at `deadline` (perf_counter)."""
        return self.console.wait_for(self.ready_marker, deadline)

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


def cross_product(values: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination of one value per name, names in sorted order."""
    names = sorted(values)
    return [
        dict(zip(names, chosen, strict=True))
        for chosen in itertools.product(*(values[n] for n in names))
    ]


class Target(ABC):
    name: str
    description: str
    family = "linux"  # or "unikernel": which workload a suite runs on it
    # How a disk it attaches reaches the host file (QEMU's cache mode); None: no layer between.
    disk_cache: str | None = None
    # The target's own parameters, whatever the suite: name -> the values it takes, its default
    # first (unikernel-xen's drivers). `--param` sets them for the targets that take them; every
    # sample of such a target records its value, the default when none was asked.
    params: Mapping[str, tuple[str, ...]] = {}

    def own_params(
        self, requested: Mapping[str, Sequence[str]]
    ) -> tuple[list[dict[str, str]], dict[str, Sequence[str]]]:
        """`requested` split: the combinations of this target's own parameters to measure
        (each of which prepare() gets ready), and the rest, the suite's. ValueError for a
        value the target does not take."""
        chosen: dict[str, Sequence[str]] = {}
        for name, values in self.params.items():
            asked = requested.get(name, values[:1])
            wrong = [value for value in asked if value not in values]
            if wrong:
                raise ValueError(
                    f"{name}={','.join(wrong)}: {self.name} takes {' or '.join(values)}"
                )
            chosen[name] = list(dict.fromkeys(asked))
        rest = {n: v for n, v in requested.items() if n not in self.params}
        return cross_product(chosen), rest

    @abstractmethod
    def availability(self) -> Availability: ...

    def prepare(  # noqa: B027
        self, workload: Workload, log: Log, own: Sequence[Mapping[str, str]] = ({},)
    ) -> None:
        """Builds what launching needs (images), once per run, for each combination of its own
        parameters to be measured (`own`, see own_params); by default nothing."""

    @abstractmethod
    def create(self, workload: Workload, settings: LaunchSettings) -> Instance: ...

    def link_offloads(self, workload: Workload) -> tuple[Offload, ...]:
        """The offload settings this target's link for the workload can have: both by default,
        where the target sets them per launch (LaunchSettings.offloads)."""
        return ("off", "on")

    def image_builds(self, workload: Workload) -> tuple[str, ...]:
        """The builds of the workload's image this target can weigh; () for one build only."""
        return ()

    def image_size(
        self, workload: Workload, build: str | None, log: Log, own: Mapping[str, str] | None = None
    ) -> ImageSize:
        """What the image this target runs the workload from weighs, building (or finding in
        the cache) what it needs, without launching anything; `own`: the values of the
        target's own parameters (Target.params) the image is for."""
        raise NotImplementedError(f"{self.name} cannot tell what its image weighs")

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
