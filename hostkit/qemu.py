"""The QEMU command line that boots an image, for `unikernel run` and the harness alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"
KERNEL_ARGS = (
    "console=ttyS0",
    "panic=-1",  # a dying PID 1 reboots at once, and -no-reboot turns that into QEMU's exit
    "quiet",
    "random.trust_cpu=on",  # seed the entropy pool from RDRAND: Python needs it at start-up
    "tsc=reliable",  # skip calibration, which can stall under TCG
    "UNIKERNEL_TARGET=qemu",
)


@dataclass(frozen=True)
class QemuImage:
    kernel: Path  # a vmlinux with the initramfs built in, or a bzImage
    initrd: Path | None = None  # the initramfs, for kernels that do not carry it


def tap_nic(index: int, device: str, offloads: bool = False) -> list[str]:
    """A virtio-net NIC on TAP device `device` (QEMU attaches it by name in its own network
    namespace). Without the virtio-net header on the TAP device the NIC offers the guest no
    checksum or segmentation offloads: every frame is whole, as the paper measured."""
    vnet_hdr = "on" if offloads else "off"
    return [
        "-netdev", f"tap,id=net{index},ifname={device},script=no,downscript=no,vnet_hdr={vnet_hdr}",
        "-device", f"virtio-net-pci,netdev=net{index}",
    ]  # fmt: skip


# How every VM's disks reach their host files: O_DIRECT, past the host's page cache.
DISK_CACHE = "none"


def virtio_disk(
    index: int, path: Path, read_only: bool = False, cache: str = DISK_CACHE
) -> list[str]:
    """A virtio-blk disk backed by the raw file `path`. cache=none: the host opens the file
    with O_DIRECT, so the guest's reads reach the device, not the host's page cache."""
    mode = "on" if read_only else "off"
    return [
        "-drive", f"file={path},format=raw,if=none,id=disk{index},readonly={mode},cache={cache}",
        "-device", f"virtio-blk-pci,drive=disk{index}",
    ]  # fmt: skip


def machine_args(accel: str, memory_mib: int, cpus: int = 1) -> list[str]:
    """A bare PC with the serial console on stdio, no default devices, and an exit instead of
    a reboot: what every VM the project boots starts from."""
    return [
        "qemu-system-x86_64",
        "-M", "pc",  # microvm can stall in timer calibration under TCG
        "-accel", accel,
        "-cpu", "max",  # RDRAND for random.trust_cpu
        "-m", str(memory_mib),
        "-smp", str(cpus),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-serial", "stdio",
        "-monitor", "none",
        "-no-reboot",
    ]  # fmt: skip


def qemu_command(
    image: QemuImage,
    accel: str,
    memory_mib: int,
    cpus: int = 1,
    extra_args: tuple[str, ...] = (),
    devices: tuple[str, ...] = (),
) -> list[str]:
    """QEMU's argv for a unikernel image; `devices` are more options (tap_nic()'s)."""
    command = [
        *machine_args(accel, memory_mib, cpus),
        "-device", DEBUG_EXIT,
        *devices,
        "-kernel", str(image.kernel),
        "-append", " ".join((*KERNEL_ARGS, *extra_args)),
    ]  # fmt: skip
    if image.initrd is not None:
        command += ["-initrd", str(image.initrd)]
    return command


def guest_status(qemu_exit_code: int) -> int | None:
    """The guest's exit status from QEMU's: odd codes come from the debug-exit port; 0 is a
    power-off that reported nothing there; anything else is QEMU's own failure."""
    if qemu_exit_code % 2 == 1:
        return qemu_exit_code >> 1
    return None
