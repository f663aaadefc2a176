"""The `linux-vm` and `linux-vm-minimal` targets: Debian guests under QEMU, the paper's Linux VMs.

Both boot Debian's cloud kernel from one cached disk (baselines/linux_vm.py): `linux-vm` with
systemd, whose boot workload is a service; `linux-vm-minimal` with our init script, which
starts the boot workload itself. Each launch gets a copy-on-write overlay of the disk and a TAP
link in a namespace of its own (as the unikernels do), both removed once QEMU is gone. The
guest's address comes on the kernel command line. QEMU runs under KVM where a test boot shows
it works, else TCG, recorded as `accel`.

The boot workload is baked into the image: the boot suite runs on these targets as it is.
Every other workload runs over SSH once the guest is up (harness/targets/ssh.py), its output
being the instance's console, its ports on the guest's address.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import paramiko

from baselines import linux_vm
from baselines.linux_vm import VmImage, VmKind
from harness.console import ConsoleWatcher
from harness.sizing import files_size
from harness.targets.base import (
    Availability,
    ImageSize,
    Instance,
    LaunchSettings,
    Log,
    Target,
    Usage,
    Workload,
)
from harness.targets.process import ProcessInstance
from harness.targets.ssh import SshInstance
from hostkit import cache, namespaces
from hostkit.accel import choose_accel
from hostkit.launch_disk import LaunchDisk
from hostkit.namespaces import TapLink
from hostkit.qemu import DISK_CACHE, tap_nic, virtio_disk
from hostkit.ssh import SshHost
from unikernel.devices import READY_MARKER

if TYPE_CHECKING:
    from unikernel.devices import Offload

BAKED_IN_WORKLOADS = ("boot-probe",)  # what the image starts by itself at boot
BOOT_TIMEOUT = 300.0  # for a guest to boot under TCG on a loaded machine, before its workload
SSH_TIMEOUT = 60.0  # from the boot workload's marker to a login


# What building a Debian disk and booting it under QEMU on a TAP link takes: tool, package.
VM_HOST_TOOLS = (
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("debootstrap", "debootstrap"),
    ("mkfs.ext4", "e2fsprogs"),
)


def vm_host_availability(who: str) -> Availability:
    """Whether this host can build and boot a Debian VM disk, as `who` (a target, the Xen
    lab) needs; if not, what to install."""
    for tool, package in VM_HOST_TOOLS:
        if shutil.which(tool) is None:
            return Availability(False, f"{who} needs {tool}", f"apt-get install {package}")
    why_not = namespaces.available()
    if why_not is not None:
        return Availability(False, f"{who} needs a TAP link: {why_not}", "run as root")
    return Availability(True)


OVERLAYS = "vm-overlays"  # the cache folder of launches' overlays, swept by harness/leftovers.py


class Overlay:
    """A launch's copy-on-write disk: deleted on close."""

    def __init__(self, image: VmImage) -> None:
        self.path = linux_vm.overlay(image, cache.directory(OVERLAYS))

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class GuestWorkload(Instance):
    """A workload run over SSH in a VM the instance boots: t0 is QEMU's launch; the console
    is the guest's serial console until the workload runs, then the workload's output."""

    def __init__(
        self,
        vm: ProcessInstance,
        host: SshHost,
        workload: Workload,
        settings: LaunchSettings,
        disk_paths: dict[str, str],
    ) -> None:
        """`disk_paths`: the guest's device for each disk of the workload."""
        self._disk_paths = disk_paths
        self._vm = vm
        self._host = host
        self._workload = workload
        self._settings = settings
        self.ready_marker = workload.ready_marker
        self._remote: SshInstance | None = None
        self.namespace = vm.namespace
        self.phases: dict[str, float] = {}

    @property
    def console(self) -> ConsoleWatcher:  # type: ignore[override]  # follows the launch
        return self._vm.console if self._remote is None else self._remote.console

    def start(self) -> float:
        t0 = self._vm.start()
        booted, _ = self._vm.console.wait_for(READY_MARKER, time.perf_counter() + BOOT_TIMEOUT)
        self.phases["guest_boot"] = booted - t0
        self._remote = self._login(time.perf_counter() + SSH_TIMEOUT)
        self._remote.start()
        return t0

    def _login(self, deadline: float) -> SshInstance:
        numbers = {port.name: port.number for port in self._workload.ports}
        while True:  # sshd may come up a moment after the boot workload
            try:
                return SshInstance(
                    self._host, self._workload, self._settings, numbers, self._disk_paths
                )
            except (OSError, paramiko.SSHException):
                if time.perf_counter() > deadline:
                    raise
                time.sleep(0.5)

    def address(self, port: str) -> tuple[str, int] | None:
        return self._vm.address(port)

    def usage(self) -> Usage:
        return self._vm.usage()

    def stop(self) -> None:
        try:
            if self._remote is not None:
                self._remote.stop()
        finally:
            self._vm.stop()


def vm_image_size(image: VmImage) -> ImageSize:
    """A Linux VM's image: its disk (the qcow2 file, allocated clusters only), kernel and initrd."""
    parts = {name: files_size([path]) for name, path in image.files().items()}
    raw = sum(size[0] for size in parts.values())
    return ImageSize(total=(raw, files_size(list(image.files().values()))[1]), parts=parts)


class LinuxVmTarget(Target):
    disk_cache = DISK_CACHE

    def __init__(self, kind: VmKind, description: str) -> None:
        self.name = kind
        self.kind = kind
        self.description = description
        self._image: VmImage | None = None

    def availability(self) -> Availability:
        return vm_host_availability(self.name)

    def prepare(
        self, workload: Workload, log: Log, own: Sequence[Mapping[str, str]] = ({},)
    ) -> None:
        self._image = linux_vm.ensure_vm_image(self.kind, log)

    def image(self) -> VmImage:
        if self._image is None:
            raise RuntimeError(f"{self.name}: prepare() was not called")
        return self._image

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        image = self.image()
        baked = workload.name in BAKED_IN_WORKLOADS
        if baked and workload.disks:
            raise ValueError(f"{self.name} starts {workload.name} at boot, with no disks")
        with contextlib.ExitStack() as made:  # closed here only if the launch fails
            link = TapLink()
            made.callback(link.close)
            disk = Overlay(image)
            made.callback(disk.close)
            # The root disk is the guest's vda; the workload's disks follow, vdb on.
            disks = [LaunchDisk(declared) for declared in workload.disks]
            for attached in disks:
                made.callback(attached.close)
            drives = [
                arg
                for index, attached in enumerate(disks, start=1)
                for arg in virtio_disk(index, attached.path, attached.read_only)
            ]
            nic = tap_nic(0, link.device, settings.offloads is True)
            argv = linux_vm.qemu_command(
                image,
                disk.path,
                choose_accel(),
                settings.memory_mib or linux_vm.DEFAULT_MEMORY_MIB,
                address=link.guest_address,
                prefix_len=link.prefix_len,
                devices=[*nic, *drives],
                cpus=settings.cpus or 1,
            )
            ports = {port.name: (link.guest_address, port.number) for port in workload.ports}
            vm = ProcessInstance(
                workload,
                argv,
                ports,
                settings,  # --cpus N: N vCPUs, and QEMU pinned to N host CPUs
                namespace=link.name,
                spawn_namespace=link.name,
                owned=(link, disk, *disks),
            )
            made.pop_all()
        if baked:
            return vm
        host = SshHost(
            name=self.name,
            address=link.guest_address,
            user=image.ssh_user,
            key=image.ssh_private_key,
            host_key=image.ssh_host_key,
            namespace=link.name,
        )
        disk_paths = {d.name: f"/dev/vd{chr(ord('b') + i)}" for i, d in enumerate(disks)}
        return GuestWorkload(vm, host, workload, settings, disk_paths)

    def link_offloads(self, workload: Workload) -> tuple[Offload, ...]:
        return ("off", "on")  # the virtio-net NIC's, set per launch

    def image_size(
        self, workload: Workload, build: str | None, log: Log, own: Mapping[str, str] | None = None
    ) -> ImageSize:
        return vm_image_size(linux_vm.ensure_vm_image(self.kind, log))

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
        # Memory shapes a VM's boot: recorded even when not swept (--param memory=...).
        return {"accel": choose_accel(), "memory": str(linux_vm.DEFAULT_MEMORY_MIB)}


def linux_vm_targets() -> list[Target]:
    return [
        LinuxVmTarget("linux-vm", "a Debian VM under QEMU: cloud kernel, systemd, sshd"),
        LinuxVmTarget(
            "linux-vm-minimal", "the same kernel and disk with our boot workload as init"
        ),
    ]
