"""The `linux-vm` and `linux-vm-minimal` targets: Debian guests under QEMU, the paper's Linux VMs.

Both boot Debian's cloud kernel from one cached disk (baselines/linux_vm.py): `linux-vm` with
systemd, whose boot workload is a service; `linux-vm-minimal` with our init script, which
starts the boot workload itself. Each launch gets a copy-on-write overlay of the disk and a TAP
link in a namespace of its own (as the unikernels do), both removed once QEMU is gone. The
guest's address comes on the kernel command line. QEMU runs under KVM where a test boot shows
it works, else TCG, recorded as `accel`.

The boot workload is baked into the image: the boot suite runs on these targets as it is.
Other workloads would run over SSH (baselines/vm_ssh.py); that is not wired here yet, so
those suites report the target as unable to run them.
"""

from __future__ import annotations

import shutil

from baselines import linux_vm
from baselines.errors import BaselineError
from baselines.linux_vm import VmImage, VmKind
from harness import namespaces
from harness.namespaces import TapLink
from harness.targets.base import Availability, Instance, LaunchSettings, Log, Target, Workload
from harness.targets.process import ProcessInstance
from unikernel.build import cache
from unikernel.build.accel import choose_accel
from unikernel.build.qemu import tap_nic

BAKED_IN_WORKLOADS = ("boot-probe",)  # what the image starts by itself at boot


class Overlay:
    """A launch's copy-on-write disk: deleted on close."""

    def __init__(self, image: VmImage) -> None:
        self.path = linux_vm.overlay(image, cache.directory("vm-overlays"))

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class LinuxVmTarget(Target):
    def __init__(self, kind: VmKind, description: str) -> None:
        self.name = kind
        self.kind = kind
        self.description = description
        self._image: VmImage | None = None

    def availability(self) -> Availability:
        for tool, package in (
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("qemu-img", "qemu-utils"),
            ("debootstrap", "debootstrap"),
            ("mkfs.ext4", "e2fsprogs"),
        ):
            if shutil.which(tool) is None:
                return Availability(False, f"{tool} is missing", f"apt-get install {package}")
        why_not = namespaces.available()
        if why_not is not None:
            return Availability(False, why_not, "run as root with iproute2 installed")
        return Availability(True)

    def prepare(self, workload: Workload, log: Log) -> None:
        if workload.name not in BAKED_IN_WORKLOADS:
            raise BaselineError(
                f"{self.name} runs only {', '.join(BAKED_IN_WORKLOADS)} so far (baked into its"
                f" image); {workload.name} would run over SSH, which is not wired yet"
            )
        self._image = linux_vm.ensure_vm_image(self.kind, log)
        for name in namespaces.remove_stale():
            log(f"removed network namespace {name}, left by a harness that died")

    def image(self) -> VmImage:
        if self._image is None:
            raise RuntimeError(f"{self.name}: prepare() was not called")
        return self._image

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        image = self.image()
        link = TapLink()
        try:
            disk = Overlay(image)
        except BaseException:
            link.close()
            raise
        try:
            argv = linux_vm.qemu_command(
                image,
                disk.path,
                choose_accel(),
                settings.memory_mib or linux_vm.DEFAULT_MEMORY_MIB,
                address=link.guest_address,
                prefix_len=link.prefix_len,
                devices=tap_nic(0, link.device),
                cpus=settings.cpus or 1,
            )
            ports = {port.name: (link.guest_address, port.number) for port in workload.ports}
            return ProcessInstance(
                workload.name,
                argv,
                ports,
                settings,  # --cpus N: N vCPUs, and QEMU pinned to N host CPUs
                namespace=link.name,
                spawn_namespace=link.name,
                owned=(link, disk),
            )
        except BaseException:
            disk.close()
            link.close()
            raise

    def metadata(self) -> dict[str, object]:
        facts: dict[str, object] = {"kind": self.kind, **self.sample_params()}
        if self._image is not None:
            facts.update(
                kernel_release=self._image.kernel_release,
                recipe=self._image.recipe_hash[:16],
                sizes=self._image.sizes(),
            )
        return facts

    def sample_params(self) -> dict[str, str]:
        return {"accel": choose_accel()}


def linux_vm_targets() -> list[Target]:
    return [
        LinuxVmTarget("linux-vm", "a Debian VM under QEMU: cloud kernel, systemd, sshd"),
        LinuxVmTarget(
            "linux-vm-minimal", "the same kernel and disk with our boot workload as init"
        ),
    ]
