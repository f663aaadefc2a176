"""The Linux VM baselines: a Debian bookworm disk booted by Debian's cloud kernel under QEMU.

    linux-vm          systemd, openssh-server, python3, iperf3, fio, nginx, apache2, NSD and BIND9,
                      with the boot workload as a systemd service: the paper's "Linux guest".
    linux-vm-minimal  the same kernel, initramfs and disk with /opt/unibench/init as PID 1 and no
                      systemd: what the kernel costs, apart from the distribution.

Both kinds boot one disk image; only their kernel command lines differ. It is built from a cached
debootstrap tarball (baselines/debootstrap.py) that includes Debian's cloud kernel, whose
initramfs-tools made the initramfs the kernel needs to find its disk (virtio_blk is a module
there). The build (baselines/disk_image.py, shared with the Xen lab's dom0) unpacks the tarball,
adds our files from baselines/vm_guest/, replaces the SSH host keys debootstrap generated with
fresh ones, remakes the initramfs with only the modules we list (the one step run in a chroot),
takes the kernel and the initramfs out to lie beside the disk, and writes the tree into an ext4
file system with `mkfs.ext4 -d` (no loop mount), converted to qcow2. The result is cached under
<cache>/vm/<recipe hash>/ and built again only when something that goes into it changes: the
package list, our guest files, the boot workload, or the build's code (VM_CODE_VERSION).

A launch never writes to the cached disk: overlay() makes a qcow2 overlay per launch. The guest's
address is not in the image: the launcher puts `unibench.ip=ADDRESS/PREFIX` on the kernel command
line (VmImage.boot_args) and a script of ours applies it with `ip` at boot. SSH takes only the key
made for the image (root logs in with it; no password anywhere), and the guest's one host key,
made at build time, is what the client must check the server against (VmImage.ssh_host_key).

Run `python -m baselines.linux_vm` (as root) to build ahead of time; it takes a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from hostkit import cache, disk_image
from hostkit.debootstrap import RootfsRecipe
from hostkit.disk_image import DISK_FORMAT as DISK_FORMAT  # re-exported: older callers
from hostkit.disk_image import FREE_SPACE_MIB as FREE_SPACE_MIB
from hostkit.disk_image import SSH_USER as SSH_USER
from hostkit.disk_image import DiskRecipe, Log
from hostkit.disk_image import disk_size_mib as disk_size_mib
from hostkit.errors import ArtifactError
from hostkit.qemu import machine_args
from workloads.boot_probe import boot_probe

VmKind = Literal["linux-vm", "linux-vm-minimal"]
VM_KINDS: tuple[VmKind, ...] = get_args(VmKind)

# Bump when the build (here or in baselines/disk_image.py) changes what ends up in an image, so
# old caches are not reused.
VM_CODE_VERSION = 1

ROOTFS = RootfsRecipe(
    suite="bookworm",
    variant="minbase",
    packages=(
        "linux-image-cloud-amd64",  # brings initramfs-tools, which makes the initramfs
        "systemd-sysv",
        "udev",
        "dbus",
        "kmod",
        "iproute2",
        "openssh-server",
        "python3",
        "netbase",  # /etc/services and /etc/protocols, which Python's socket module reads
        "iperf3",
        "fio",
        "nginx",
        "apache2",
        "nsd",
        "bind9",
    ),
)

GUEST_DIR = Path(__file__).resolve().parent / "vm_guest"
# Our files in the image: source file in GUEST_DIR -> (path in the image, mode).
GUEST_FILES: dict[str, tuple[str, int]] = {
    "network.sh": ("/opt/unibench/network", 0o755),
    "mounts.sh": ("/opt/unibench/mounts", 0o644),  # sourced by init.sh
    "init.sh": ("/opt/unibench/init", 0o755),
    "unibench-network.service": ("/etc/systemd/system/unibench-network.service", 0o644),
    "unibench-boot-probe.service": ("/etc/systemd/system/unibench-boot-probe.service", 0o644),
    "sshd_config.conf": ("/etc/ssh/sshd_config.d/unibench.conf", 0o644),
    "initramfs.conf": ("/etc/initramfs-tools/conf.d/unibench.conf", 0o644),
    "initramfs-modules": ("/etc/initramfs-tools/modules", 0o644),
    "fstab": ("/etc/fstab", 0o644),
}
BOOT_PROBE_PATH = "/opt/unibench/boot_probe.py"
INIT_PATH = GUEST_FILES["init.sh"][0]
# systemd units: ours are enabled; the web and DNS servers are installed for the web and dns
# suites, which start the one they measure, and stay off at boot (each pair would take one
# port, and the boot workload is ours).
ENABLED_UNITS = ("unibench-network.service", "unibench-boot-probe.service")
DISABLED_UNITS = ("nginx.service", "apache2.service", "nsd.service", "named.service")
HOSTNAME = "unibench-vm"

SSH_PORT = 22
ECHO_PORT = 7
NETWORK_PARAMETER = "unibench.ip"
DEFAULT_MEMORY_MIB = 512

# The kernel command line, less the address (boot_args adds it).
COMMON_KERNEL_ARGS = (
    "root=/dev/vda",
    "rw",  # the overlay is the guest's to write; no fsck at boot
    "console=ttyS0",
    "net.ifnames=0",  # the NIC is eth0
    "quiet",
    "panic=-1",  # a dying init reboots at once, and -no-reboot turns that into QEMU's exit
    "random.trust_cpu=on",  # seed the entropy pool from RDRAND (-cpu max), as the unikernel does
    "tsc=reliable",  # skip calibration, which can stall under TCG
)

MANIFEST = "vm.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VmImage:
    """A built Linux VM image: what QEMU boots, and how to reach the guest."""

    kind: VmKind
    recipe_hash: str
    disk: Path  # the cached base disk (qcow2, read-only): boot an overlay() of it
    disk_format: str  # the base disk's format, "qcow2"
    kernel: Path  # Debian's cloud kernel, a bzImage
    initrd: Path  # its initramfs (initramfs-tools, only the modules we list)
    kernel_release: str  # what `uname -r` says in the guest
    kernel_args: tuple[str, ...]  # the whole command line but the address: see boot_args
    ssh_user: str
    ssh_private_key: Path  # ed25519, OpenSSH format, made for this image
    ssh_host_key: str  # "ssh-ed25519 AAAA...": the guest sshd's only host key, made at build
    network_parameter: str  # the kernel parameter that gives the guest its address
    build_seconds: float

    def address_args(self, address: str, prefix_len: int) -> tuple[str, ...]:
        """The kernel parameter that gives the guest `address`/`prefix_len` on eth0."""
        return (f"{self.network_parameter}={address}/{prefix_len}",)

    def boot_args(self, address: str | None = None, prefix_len: int = 24) -> tuple[str, ...]:
        """The whole kernel command line; without an address the guest keeps eth0 down."""
        if address is None:
            return self.kernel_args
        return (*self.kernel_args, *self.address_args(address, prefix_len))

    @staticmethod
    def drive_args(overlay_path: Path) -> list[str]:
        """QEMU's options for the root disk, given an overlay() of the image. A device of its
        own, not if=virtio: devices take PCI slots in the order given, and those made from
        if=virtio come after them all, so a workload's disk would take vda from the root."""
        return [
            "-drive", f"file={overlay_path},if=none,id=root,format=qcow2",
            "-device", "virtio-blk-pci,drive=root",
        ]  # fmt: skip

    def files(self) -> dict[str, Path]:
        """What the image is made of on the host: its disk, kernel and initramfs."""
        return {"disk": self.disk, "kernel": self.kernel, "initrd": self.initrd}

    def sizes(self) -> dict[str, int]:
        """Bytes on the host: the disk file (allocated clusters only), kernel and initramfs."""
        return {name: path.stat().st_size for name, path in self.files().items()}


# --- the recipe --------------------------------------------------------------------------------


def kernel_args(kind: VmKind) -> tuple[str, ...]:
    """The kernel command line of `kind`, without the address."""
    if kind == "linux-vm":
        return COMMON_KERNEL_ARGS
    if kind == "linux-vm-minimal":
        return (*COMMON_KERNEL_ARGS, f"init={INIT_PATH}")
    raise ArtifactError(f"no Linux VM kind {kind!r}; known kinds: {', '.join(VM_KINDS)}")


def disk_recipe() -> DiskRecipe:
    """What goes into the disk, kernel and initramfs, which both kinds share (read at each call,
    so that a test may patch the module's constants)."""
    return DiskRecipe(
        label="linux-vm",
        rootfs=ROOTFS,
        guest_files={GUEST_DIR / name: place for name, place in GUEST_FILES.items()},
        extra_files={"boot_probe": (Path(boot_probe.__file__), BOOT_PROBE_PATH)},
        enabled_units=ENABLED_UNITS,
        disabled_units=DISABLED_UNITS,
        hostname=HOSTNAME,
        code_version=VM_CODE_VERSION,
    )


def recipe_hash() -> str:
    """A hex digest of everything that goes into the disk, kernel and initramfs (both kinds
    share them): the rootfs recipe, our files and where they go, and this code's version."""
    return disk_recipe().recipe_hash()


def image_dir(digest: str | None = None) -> Path:
    """Where the image of the current recipe (or of `digest`) is, or will be, cached."""
    return cache.directory("vm") / (digest or recipe_hash())[:16]


# --- finding and building ----------------------------------------------------------------------


def ensure_vm_image(kind: VmKind, log: Log | None = None) -> VmImage:
    """The image of `kind`, built first (minutes, as root) if the cache lacks it. Concurrent
    callers wait for one build; raise ArtifactError if it fails, leaving nothing half-made."""
    say = log or (lambda _message: None)
    kernel_args(kind)  # an unknown kind fails before any build
    digest = recipe_hash()
    directory = image_dir(digest)
    disk_image.ensure_built(directory, MANIFEST, lambda: _build(directory, digest, say))
    return _load(directory, kind)


def find_vm_image(kind: VmKind) -> VmImage | None:
    """The cached image of `kind` for the current recipe, or None; never builds."""
    directory = image_dir()
    return _load(directory, kind) if disk_image.is_built(directory, MANIFEST) else None


def _load(directory: Path, kind: VmKind) -> VmImage:
    _manifest, common = disk_image.read_manifest(directory, MANIFEST)
    return VmImage(
        kind=kind, kernel_args=kernel_args(kind), network_parameter=NETWORK_PARAMETER, **common
    )


def _build(directory: Path, digest: str, say: Log) -> None:
    disk_image.build(
        disk_recipe(),
        directory,
        digest,
        say,
        manifest=MANIFEST,
        command="python -m baselines.linux_vm",
    )


# --- launching ---------------------------------------------------------------------------------


def overlay(image: VmImage, folder: Path) -> Path:
    """A fresh qcow2 overlay of the image's disk in `folder`, for one launch: the guest writes
    there, never to the cached base. The caller deletes it when the launch is over (or uses
    overlaid(), which does)."""
    return disk_image.overlay(image.disk, image.disk_format, folder, image.kind)


@contextlib.contextmanager
def overlaid(image: VmImage, folder: Path) -> Iterator[Path]:
    """An overlay() for the block, deleted when it ends, however it ends."""
    path = overlay(image, folder)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def qemu_command(
    image: VmImage,
    overlay_path: Path,
    accel: str,
    memory_mib: int = DEFAULT_MEMORY_MIB,
    *,
    address: str | None = None,
    prefix_len: int = 24,
    devices: Iterable[str] = (),
    cpus: int = 1,
) -> list[str]:
    """QEMU's argv for booting the image from `overlay_path`, with the conventions of
    unikernel/toolchain/qemu.py: `-M pc`, the serial console on stdout, no default devices, no
    reboot. `devices` are more options, such as hostkit.qemu.tap_nic()'s."""
    return [
        *machine_args(accel, memory_mib, cpus),
        *image.drive_args(overlay_path),
        *devices,
        "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", " ".join(image.boot_args(address, prefix_len)),
    ]  # fmt: skip


# --- command line ------------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m baselines.linux_vm",
        description="Build (or find in the cache) the Linux VM baseline images.",
    )
    parser.add_argument("--kind", choices=VM_KINDS, default="linux-vm")
    return disk_image.command_line(parser, argv, lambda args: ensure_vm_image(args.kind, log.info))


if __name__ == "__main__":
    sys.exit(main())
