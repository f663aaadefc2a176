"""The unikernel targets: our Python library OS, hosted as a process or booted under QEMU.

`prepare` builds the workload's unikernel application for the target (the image is cached by
the build in the application's _build folder); each launch is then one process: the hosted
interpreter, or QEMU booting the image. QEMU runs under KVM when a test boot shows KVM works
here, else under TCG; the choice is recorded with every sample as `accel`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import unikernel
from harness.sizing import code_lines
from harness.targets.base import (
    Availability,
    ImageSize,
    Instance,
    LaunchSettings,
    Log,
    Target,
    Workload,
)
from harness.targets.process import ProcessInstance
from hostkit import namespaces
from hostkit.accel import choose_accel
from hostkit.launch_disk import LaunchDisk
from hostkit.namespaces import TapLink, VethLink
from hostkit.qemu import DISK_CACHE
from unikernel.devices import Disk, Network
from unikernel.toolchain import runtime
from unikernel.toolchain.app import AppError, LoadedApp, load_app
from unikernel.toolchain.image import BuildResult, build
from unikernel.toolchain.launch import launch
from unikernel.toolchain.pruning import stdlib_modules

if TYPE_CHECKING:
    from unikernel.devices import Offload

BUILDS = ("pruned", "standard")  # the standard build: the whole standard library, unpruned


def app_for(workload: Workload) -> LoadedApp:
    """The workload's unikernel application, checked to declare the devices the workload's
    harness side expects: each network and disk, by name."""
    if workload.unikernel_app is None:
        raise AppError(f"workload {workload.name} has no unikernel application")
    loaded = load_app(workload.unikernel_app)
    kinds: tuple[type[Network] | type[Disk], ...] = (Network, Disk)
    for kind in kinds:
        wanted = {d.name for d in workload.devices if isinstance(d, kind)}
        declared = {d.name for d in loaded.app.devices if isinstance(d, kind)}
        if wanted - declared:
            raise AppError(
                f"{workload.name} needs {kind.__name__} {', '.join(sorted(wanted))}, but "
                f"{loaded.folder / 'config.py'} declares {', '.join(sorted(declared)) or 'none'}"
            )
    return loaded


def image_size(built: BuildResult) -> ImageSize:
    """What a build weighs: its image (the specialized kernel with the initramfs built in; or
    Debian's kernel and the initramfs beside it; or, hosted, the bytecode archive the host's
    interpreter runs), each part, and the lines of code of our library OS and of the standard
    library modules the build kept."""
    report: dict[str, Any] = built.report
    parts = {p["part"]: (int(p["bytes"]), int(p["compressed"])) for p in report["parts"]}
    if "image" in parts:
        total = parts.pop("image")
    elif "kernel" in parts:
        total = (
            parts["kernel"][0] + parts["initramfs"][0],
            parts["kernel"][1] + parts["initramfs"][1],
        )
    else:
        total = parts["bytecode"]
    stdlib = stdlib_modules(runtime.ensure_runtime(lambda _: None).stdlib)
    kept = [stdlib[name] for name in report["kept_modules"] if name in stdlib]
    return ImageSize(
        total=total,
        parts=parts,
        code_lines={
            "libos": code_lines(libos_files()),
            "stdlib": code_lines(path for path in kept if path.suffix == ".py"),
        },
    )


def libos_files() -> list[Path]:
    """Our library OS's sources: everything under unikernel/ but the toolchain, which runs on
    the build host only."""
    libos = Path(unikernel.__file__).resolve().parent
    return sorted(p for p in libos.rglob("*.py") if not p.is_relative_to(libos / "toolchain"))


class UnikernelTarget(Target):
    family = "unikernel"

    def __init__(
        self, name: str, platform: str, kernel: str, description: str, link: str = "tap"
    ) -> None:
        self.name = name
        self.platform = platform  # "hosted" or "qemu"
        # "tap": a TAP device; "veth" (hosted only): a veth pair's end, taken with AF_PACKET
        self.link = link
        self.disk_cache = DISK_CACHE if platform == "qemu" else None
        self.kernel = kernel
        self.description = description
        self._builds: dict[str, BuildResult] = {}
        self._memory: dict[str, int] = {}

    def availability(self) -> Availability:
        if self.platform == "qemu" and shutil.which("qemu-system-x86_64") is None:
            return Availability(
                False,
                "qemu-system-x86_64 is not installed",
                "apt-get install --no-install-recommends qemu-system-x86",
            )
        if shutil.which("debootstrap") is None:
            return Availability(
                False,
                "debootstrap (for the image's Python runtime) is missing",
                "apt-get install debootstrap",
            )
        return Availability(True)

    def prepare(
        self, workload: Workload, log: Log, own: Sequence[Mapping[str, str]] = ({},)
    ) -> None:
        loaded = app_for(workload)
        self._builds[workload.name] = build(loaded, self.platform, self.kernel, log=log)
        self._memory[workload.name] = loaded.app.memory_mib
        if workload.network is not None:
            why_not = namespaces.available()
            if why_not is not None:
                raise AppError(f"{workload.name} needs a network link: {why_not}")

    def build_result(self, workload: Workload) -> BuildResult:
        """The build prepare() made for the workload."""
        built = self._builds.get(workload.name)
        if built is None:
            raise RuntimeError(f"{self.name}: prepare() was not called for {workload.name}")
        return built

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        built = self.build_result(workload)
        with contextlib.ExitStack() as made:  # closed here only if the launch fails
            link: TapLink | VethLink | None = None
            namespace = spawn_namespace = None
            ports: dict[str, tuple[str, int]] = {}
            if workload.network is not None:
                if self.link == "veth":
                    # Linux's offloads on its end as the launch asks, and ours to match.
                    link = VethLink(offloads=settings.offloads is True, raw_guest_end=True)
                    namespace, spawn_namespace = link.name, link.server.name
                else:
                    link = TapLink()
                    namespace = spawn_namespace = link.name
                made.callback(link.close)
                ports = {port.name: (link.guest_address, port.number) for port in workload.ports}
            disks = [LaunchDisk(declared) for declared in workload.disks]
            for disk in disks:
                made.callback(disk.close)
            command = launch(
                built,
                params=settings.workload_params,
                link=link,
                disks=disks,
                memory_mib=settings.memory_mib or self._memory[workload.name],
                accel=choose_accel() if self.platform == "qemu" else "native",
                offloads=settings.offloads is True,
            )
            instance = ProcessInstance(
                workload,
                command.argv,
                ports,
                settings,
                command.environment,
                namespace=namespace,
                spawn_namespace=spawn_namespace,
                owned=(*(() if link is None else (link,)), *disks),
            )
            made.pop_all()
            return instance

    def link_offloads(self, workload: Workload) -> tuple[Offload, ...]:
        # Per launch: hosted, the TAP device opened with or without virtio-net headers, or the
        # veth pair with Linux's offloads on or off and our packet socket's header to match;
        # under QEMU, virtio-net with or without them (vnet_hdr).
        return ("off", "on")

    def image_builds(self, workload: Workload) -> tuple[str, ...]:
        return BUILDS

    def image_size(
        self,
        workload: Workload,
        build_name: str | None,
        log: Log,
        own: Mapping[str, str] | None = None,
    ) -> ImageSize:
        loaded = app_for(workload)
        if build_name == "standard":
            log(f"{self.name}: the standard build, with the whole standard library")
        built = build(loaded, self.platform, self.kernel, log=log, prune=build_name != "standard")
        return image_size(built)

    def metadata(self) -> dict[str, object]:
        facts: dict[str, object] = {"kernel": self.kernel, **self.sample_params()}
        for name, built in self._builds.items():
            facts[name] = {
                "parts": built.report.get("parts"),
                "outputs": built.report.get("outputs"),
            }
        if self.platform == "qemu":
            done = subprocess.run(
                ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False
            )
            facts["qemu"] = done.stdout.splitlines()[0] if done.stdout else None
        return facts

    def sample_params(self) -> dict[str, str]:
        return {"accel": choose_accel() if self.platform == "qemu" else "native"}


def unikernel_targets() -> list[Target]:
    return [
        UnikernelTarget(
            "unikernel-hosted", "hosted", "none", "the unikernel as a process on the host"
        ),
        UnikernelTarget(
            "unikernel-hosted-veth",
            "hosted",
            "none",
            "the unikernel as a process on the host, on a veth end taken whole (linux-veth's link)",
            link="veth",
        ),
        UnikernelTarget(
            "unikernel-qemu",
            "qemu",
            "specialized",
            "the unikernel image under QEMU, specialized kernel",
        ),
        UnikernelTarget(
            "unikernel-qemu-generic",
            "qemu",
            "generic",
            "the unikernel image under QEMU, Debian's cloud kernel",
        ),
    ]
