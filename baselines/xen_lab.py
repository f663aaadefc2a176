"""The Xen lab: Xen 4.17 from Debian bookworm, run inside QEMU (TCG works), whose dom0 boots from
a disk built here, so that Xen guests (the unikernel's `xen` target, the Linux VM disk as a PVH
guest) can be run and measured on a host that has no Xen of its own.

QEMU boots the hypervisor with `-kernel xen` (multiboot) and hands it the dom0 kernel and its
initramfs as multiboot modules (`-initrd "vmlinuz ARGS,initrd"`); dom0's root is this disk on
virtio. harness/xen/lab.py boots and runs the lab; this module only builds what it boots. Dom0's
PID 1 is our script (baselines/xen_lab_guest/init.sh, init=/opt/unibench/init), not systemd: it
starts Xen's dom0 services with Debian's /etc/init.d/xen, loads the back-ends, bridges eth0 into
xenbr0 with the address from `unibench.ip=` so guests share the host's TAP link, and starts sshd,
through which the harness drives `xl`.

The choices, each forced by something that failed otherwise:
- Debian's standard kernel (linux-image-amd64), not the cloud kernel the Linux VMs boot: the cloud
  flavour has CONFIG_XEN_DOM0 unset and cannot be dom0.
- ext4 in the initramfs's module list: this kernel builds it as a module, and without it the
  initramfs cannot mount the root file system.
- The hypervisor taken out of the rootfs gunzipped: Debian ships /boot/xen-4.17-amd64.gz, and
  QEMU's multiboot loader wants the ELF itself.

The disk is built like the Linux VM's (baselines/disk_image.py, one copy of each step) and cached
under <cache>/xen-lab/<recipe hash>/ beside the hypervisor (`xen`), the dom0 kernel (`vmlinuz`)
and initramfs (`initrd`), and the SSH client key made for it. Run `python -m baselines.xen_lab`
(as root) to build it ahead of time; it takes a few minutes.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baselines import linux_vm
from hostkit import cache, disk_image
from hostkit.debootstrap import RootfsRecipe
from hostkit.disk_image import DiskRecipe, Log
from hostkit.errors import ArtifactError

# Bump when the build (here or in baselines/disk_image.py) changes what ends up in the image.
LAB_CODE_VERSION = 1

ROOTFS = RootfsRecipe(
    suite="bookworm",
    variant="minbase",
    packages=(
        "linux-image-amd64",  # the standard kernel: the cloud one cannot be dom0 (XEN_DOM0 unset)
        "kmod",
        "iproute2",
        "openssh-server",
        "xen-hypervisor-4.17-amd64",
        "xen-utils-4.17",  # xl, xenstored, xenconsoled and /etc/init.d/xen
        "bridge-utils",
        "ethtool",  # the tcp suite's offloads=off turns a vif's off
        "netbase",
    ),
)
DOM0_KERNEL_PACKAGE = "linux-image-amd64"
XEN_PACKAGE = "xen-hypervisor-4.17-amd64"

LAB_GUEST_DIR = Path(__file__).resolve().parent / "xen_lab_guest"
# Ours, in LAB_GUEST_DIR -> (path in the image, mode).
LAB_GUEST_FILES: dict[str, tuple[str, int]] = {
    "init.sh": ("/opt/unibench/init", 0o755),
    "initramfs-modules": ("/etc/initramfs-tools/modules", 0o644),
}
# Shared with the Linux VM, from its guest folder and placed as there.
SHARED_GUEST_FILES = (
    "initramfs.conf",
    "fstab",
    "sshd_config.conf",
    "mounts.sh",
    "network.sh",  # with UNIBENCH_BRIDGE: eth0 joins the bridge, which takes the address
)
INIT_PATH = LAB_GUEST_FILES["init.sh"][0]
HOSTNAME = "unibench-xen-lab"
MANIFEST = "lab.json"
HYPERVISOR = "xen"  # the gunzipped hypervisor's file name beside the disk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabImage:
    """The built Xen lab: the hypervisor, dom0's kernel, initramfs and disk, and dom0's SSH."""

    recipe_hash: str
    disk: Path  # the cached base disk (qcow2, read-only): boot an overlay of it
    disk_format: str
    hypervisor: Path  # Xen, the multiboot ELF (gunzipped): QEMU's -kernel
    kernel: Path  # dom0's kernel, Debian's standard one
    initrd: Path
    kernel_release: str  # dom0's `uname -r`
    xen_version: str  # "4.17", from the hypervisor's file name
    xen_package_version: str  # Debian's version of the hypervisor package
    ssh_user: str
    ssh_private_key: Path
    ssh_host_key: str  # "ssh-ed25519 AAAA...": dom0's only host key
    build_seconds: float

    def sizes(self) -> dict[str, int]:
        """Bytes on the host: the disk file (allocated clusters only), Xen, kernel, initramfs."""
        files = {"disk": self.disk, "hypervisor": self.hypervisor}
        files |= {"kernel": self.kernel, "initrd": self.initrd}
        return {name: path.stat().st_size for name, path in files.items()}


# --- the recipe --------------------------------------------------------------------------------


def disk_recipe() -> DiskRecipe:
    """What goes into dom0's disk, kernel and initramfs (read at each call, so that a test may
    patch the module's constants). No systemd units: our init starts what dom0 runs."""
    files = {LAB_GUEST_DIR / name: place for name, place in LAB_GUEST_FILES.items()}
    for name in SHARED_GUEST_FILES:
        files[linux_vm.GUEST_DIR / name] = linux_vm.GUEST_FILES[name]
    return DiskRecipe(
        label="xen-lab",
        rootfs=ROOTFS,
        guest_files=files,
        hostname=HOSTNAME,
        code_version=LAB_CODE_VERSION,
    )


def recipe_hash() -> str:
    """A hex digest of everything that goes into the lab's files (see DiskRecipe.recipe_hash)."""
    return disk_recipe().recipe_hash()


def image_dir(digest: str | None = None) -> Path:
    """Where the lab of the current recipe (or of `digest`) is, or will be, cached."""
    return cache.directory("xen-lab") / (digest or recipe_hash())[:16]


# --- finding and building ----------------------------------------------------------------------


def ensure_lab_image(log: Log | None = None) -> LabImage:
    """The lab, built first (minutes, as root) if the cache lacks it. Concurrent callers wait
    for one build; raise ArtifactError if it fails, leaving nothing half-made."""
    say = log or (lambda _message: None)
    digest = recipe_hash()
    directory = image_dir(digest)
    disk_image.ensure_built(directory, MANIFEST, lambda: _build(directory, digest, say))
    return _load(directory)


def find_lab_image() -> LabImage | None:
    """The cached lab of the current recipe, or None; never builds."""
    directory = image_dir()
    return _load(directory) if disk_image.is_built(directory, MANIFEST) else None


def _load(directory: Path) -> LabImage:
    manifest, common = disk_image.read_manifest(directory, MANIFEST)
    return LabImage(
        hypervisor=directory / manifest["hypervisor"],
        xen_version=manifest["xen_version"],
        xen_package_version=manifest["xen_package_version"],
        **common,
    )


def _build(directory: Path, digest: str, say: Log) -> None:
    disk_image.build(
        disk_recipe(),
        directory,
        digest,
        say,
        manifest=MANIFEST,
        command="python -m baselines.xen_lab",
        take=take_hypervisor,
    )


def take_hypervisor(tree: Path, staging: Path) -> dict[str, Any]:
    """Gunzip /boot/xen-VERSION-amd64.gz out of the tree to `xen` beside the disk (QEMU's
    multiboot loader needs the ELF), and drop the hypervisor's files from the disk, which only
    dom0 boots from."""
    found = sorted((tree / "boot").glob("xen-*-amd64.gz"))
    if len(found) != 1:
        raise ArtifactError(f"expected one hypervisor in the rootfs's /boot, found {found}")
    compressed = found[0]
    version = xen_version(compressed.name)
    target = staging / HYPERVISOR
    with gzip.open(compressed, "rb") as source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink)
    target.chmod(0o644)
    with target.open("rb") as elf:
        magic = elf.read(4)
    if magic != b"\x7fELF":
        raise ArtifactError(f"{compressed.name} does not hold an ELF hypervisor")
    for path in (compressed, compressed.with_suffix(".efi")):  # the EFI build: nothing boots it
        path.unlink(missing_ok=True)
    return {
        "hypervisor": target.name,
        "xen_version": version,
        "xen_package_version": package_version(tree, XEN_PACKAGE),
    }


def xen_version(file_name: str) -> str:
    """The Xen version in the name Debian gives the hypervisor: "4.17" in "xen-4.17-amd64.gz"."""
    match = re.fullmatch(r"xen-(\d+\.\d+)-amd64\.gz", file_name)
    if match is None:
        raise ArtifactError(f"no Xen version in the hypervisor's file name {file_name!r}")
    return match[1]


def package_version(tree: Path, package: str) -> str:
    """The version dpkg installed `package` at in the tree, from its status file."""
    status = (tree / "var/lib/dpkg/status").read_text()
    for paragraph in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in paragraph.splitlines() if re.match(r"\S+: ", line)
        )
        if fields.get("Package") == package and "Version" in fields:
            return fields["Version"]
    raise ArtifactError(f"{package} is not installed in the rootfs")


# --- command line ------------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m baselines.xen_lab",
        description="Build (or find in the cache) the Xen lab: Xen and its dom0's disk.",
    )
    return disk_image.command_line(parser, argv, lambda _args: ensure_lab_image(log.info))


if __name__ == "__main__":
    sys.exit(main())
