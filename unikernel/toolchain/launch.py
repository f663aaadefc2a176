"""Launching a built image: how the launcher (bench, `unikernel run`) hands it its run-time
settings, and the command that runs it.

What the build compiled in (the devices, their drivers) never changes per launch; what does
comes through the environment, which the kernel hands to PID 1 from its command line under QEMU
and Xen: the app's parameters (UNIBENCH_NAME), its network's address, and, hosted, the link
(a TAP device or a veth end) and disk files the launcher made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hostkit.launch_disk import LaunchDisk
from hostkit.namespaces import TapLink, VethLink
from hostkit.qemu import qemu_command, tap_nic, virtio_disk
from unikernel.block.device import hosted_disk_environment
from unikernel.drivers.hosted_link import OFFLOADS_VARIABLE, PACKET_VARIABLE, TAP_VARIABLE
from unikernel.net.service import ADDRESS_VARIABLE
from unikernel.toolchain.image import BuildResult
from unikernel.toolchain.runtime import PYTHON


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    environment: dict[str, str]  # for the process, on top of the launcher's (hosted only)


def parameter_environment(params: Mapping[str, object]) -> dict[str, str]:
    """The app's parameters as it reads them: UNIBENCH_NAME=value."""
    return {f"UNIBENCH_{name.upper()}": str(value) for name, value in params.items()}


def launch(
    built: BuildResult,
    *,
    params: Mapping[str, object],
    link: TapLink | VethLink | None,
    disks: Sequence[LaunchDisk] = (),
    memory_mib: int,
    accel: str,
    offloads: bool = False,
) -> Launch:
    """The command that runs `built` with the link and disks the launcher made for it: a TAP
    device, or hosted also a veth pair whose server end the unikernel takes whole."""
    environment = parameter_environment(params)
    if link is not None:
        environment[ADDRESS_VARIABLE] = f"{link.guest_address}/{link.prefix_len}"
    if built.target == "hosted":
        if link is not None:
            device = PACKET_VARIABLE if isinstance(link, VethLink) else TAP_VARIABLE
            environment[device] = link.device
            environment[OFFLOADS_VARIABLE] = "on" if offloads else "off"
        environment.update(hosted_disk_environment({d.name: str(d.path) for d in disks}))
        return Launch([PYTHON, "-I", "-S", str(built.outputs["app"])], environment)
    if built.target != "qemu":
        raise ValueError(f"{built.target} images start under their own toolstack, not here")
    # The kernel hands name=value arguments it does not know to PID 1 as its environment; the
    # image knows its disks as vda, vdb... in the order declared.
    if isinstance(link, VethLink):
        raise ValueError("a VM reaches its link through a TAP device, not a veth pair")
    devices = [] if link is None else tap_nic(0, link.device, offloads)
    for index, disk in enumerate(disks):
        devices += virtio_disk(index, disk.path, disk.read_only)
    kernel_args = tuple(f"{name}={value}" for name, value in environment.items())
    argv = qemu_command(
        built.qemu_image(), accel, memory_mib, extra_args=kernel_args, devices=tuple(devices)
    )
    return Launch(argv, {})
