"""The unikernel targets: our Python library OS, hosted as a process or booted under QEMU.

`prepare` builds the workload's unikernel application for the target (the image is cached by
the build in the application's _build folder); each launch is then one process: the hosted
interpreter, or QEMU booting the image. QEMU runs under KVM when a test boot shows KVM works
here, else under TCG; the choice is recorded with every sample as `accel`.
"""

from __future__ import annotations

import shutil
import subprocess

from harness.targets.base import (
    Availability,
    Instance,
    LaunchSettings,
    Log,
    Target,
    Workload,
)
from harness.targets.process import ProcessInstance
from hostkit import namespaces
from hostkit.accel import choose_accel
from hostkit.namespaces import TapLink
from hostkit.qemu import qemu_command, tap_nic
from unikernel.toolchain.app import AppError, Network, load_app
from unikernel.toolchain.image import BuildResult, build
from unikernel.toolchain.runtime import PYTHON


class UnikernelTarget(Target):
    family = "unikernel"

    def __init__(self, name: str, platform: str, kernel: str, description: str) -> None:
        self.name = name
        self.platform = platform  # "hosted" or "qemu"
        self.kernel = kernel
        self.description = description
        self._builds: dict[str, BuildResult] = {}
        self._memory: dict[str, int] = {}
        self._networked: dict[str, bool] = {}

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

    def prepare(self, workload: Workload, log: Log) -> None:
        if workload.unikernel_app is None:
            raise AppError(f"workload {workload.name} has no unikernel application")
        loaded = load_app(workload.unikernel_app)
        self._builds[workload.name] = build(loaded, self.platform, self.kernel, log=log)
        self._memory[workload.name] = loaded.app.memory_mib
        # A guest with a NIC gets a link of its own when the workload serves on a port.
        self._networked[workload.name] = bool(loaded.app.devices_of(Network) and workload.ports)
        if self._networked[workload.name]:
            why_not = namespaces.available()
            if why_not is not None:
                raise AppError(f"{workload.name} needs a network link: {why_not}")
            for name in namespaces.remove_stale():
                log(f"removed network namespace {name}, left by a harness that died")

    def build_result(self, workload: Workload) -> BuildResult:
        """The build prepare() made for the workload."""
        built = self._builds.get(workload.name)
        if built is None:
            raise RuntimeError(f"{self.name}: prepare() was not called for {workload.name}")
        return built

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        built = self.build_result(workload)
        environment = settings.workload_environment()
        link = TapLink() if self._networked[workload.name] else None
        try:
            ports: dict[str, tuple[str, int]] = {}
            if link is not None:
                environment.update(link.guest_environment(hosted=self.platform == "hosted"))
                ports = {port.name: (link.guest_address, port.number) for port in workload.ports}
            namespace = None if link is None else link.name
            owned = () if link is None else (link,)
            if self.platform == "hosted":
                argv = [PYTHON, "-I", "-S", str(built.outputs["app"])]
                return ProcessInstance(
                    workload.name, argv, ports, settings, environment, namespace, namespace, owned
                )
            # The kernel hands name=value arguments it does not know to PID 1 as its environment.
            memory = settings.memory_mib or self._memory[workload.name]
            kernel_args = tuple(f"{name}={value}" for name, value in environment.items())
            offloads = str(settings.workload_params.get("offloads", "off")) == "on"
            nic = () if link is None else tuple(tap_nic(0, link.device, offloads))
            argv = qemu_command(
                built.qemu_image(), choose_accel(), memory, extra_args=kernel_args, devices=nic
            )
            return ProcessInstance(
                workload.name, argv, ports, settings, None, namespace, namespace, owned
            )
        except BaseException:
            if link is not None:
                link.close()
            raise

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
