"""The Linux VM baselines: a Debian bookworm disk booted by Debian's cloud kernel under QEMU.

    linux-vm          systemd, openssh-server, python3, iperf3, fio, nginx and apache2, with the
                      boot workload as a systemd service: the paper's "Linux guest".
    linux-vm-minimal  the same kernel, initramfs and disk with /opt/unibench/init as PID 1 and no
                      systemd: what the kernel costs, apart from the distribution.

Both kinds boot one disk image; only their kernel command lines differ. It is built from a cached
debootstrap tarball (baselines/debootstrap.py) that includes Debian's cloud kernel, whose
initramfs-tools made the initramfs the kernel needs to find its disk (virtio_blk is a module
there). The build unpacks the tarball, adds our files from baselines/vm_guest/, replaces the SSH
host keys debootstrap generated with fresh ones, remakes the initramfs with only the modules we
list (the one step run in a chroot), takes the kernel and the initramfs out to lie beside the
disk, and writes the tree into an ext4 file system with `mkfs.ext4 -d` (no loop mount), converted
to qcow2. The result is cached under <cache>/vm/<recipe hash>/ and built again only when something
that goes into it changes: the package list, our guest files, the boot workload, or this code
(VM_CODE_VERSION).

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
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

from baselines import debian_slim
from baselines.debootstrap import RootfsRecipe, ensure_rootfs
from baselines.errors import BaselineError
from unikernel.build import cache
from unikernel.build.qemu import machine_args
from workloads import boot_probe

VmKind = Literal["linux-vm", "linux-vm-minimal"]
VM_KINDS: tuple[VmKind, ...] = get_args(VmKind)

# Bump when the build below changes what ends up in an image, so old caches are not reused.
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
    ),
)

GUEST_DIR = Path(__file__).resolve().parent / "vm_guest"
# Our files in the image: source file in GUEST_DIR -> (path in the image, mode).
GUEST_FILES: dict[str, tuple[str, int]] = {
    "network.sh": ("/opt/unibench/network", 0o755),
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
# systemd units: ours are enabled; the web servers are installed for the web suite, which starts
# the one it measures over SSH, and stay off at boot (both would take port 80, and the boot
# workload is ours).
ENABLED_UNITS = ("unibench-network.service", "unibench-boot-probe.service")
DISABLED_UNITS = ("nginx.service", "apache2.service")
HOSTNAME = "unibench-vm"

SSH_USER = "root"
SSH_PORT = 22
ECHO_PORT = 7
NETWORK_PARAMETER = "unibench.ip"
DISK_FORMAT = "qcow2"
FREE_SPACE_MIB = 1024  # room for the guest's writes; costs nothing in the qcow2 file
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

BUILD_STEP_TIMEOUT_S = 1200

Log = Callable[[str], None]
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
        """QEMU's options for the root disk, given an overlay() of the image."""
        return ["-drive", f"file={overlay_path},if=virtio,format=qcow2"]

    def sizes(self) -> dict[str, int]:
        """Bytes on the host: the disk file (allocated clusters only), kernel and initramfs."""
        return {
            "disk": self.disk.stat().st_size,
            "kernel": self.kernel.stat().st_size,
            "initrd": self.initrd.stat().st_size,
        }


# --- the recipe --------------------------------------------------------------------------------


def kernel_args(kind: VmKind) -> tuple[str, ...]:
    """The kernel command line of `kind`, without the address."""
    if kind == "linux-vm":
        return COMMON_KERNEL_ARGS
    if kind == "linux-vm-minimal":
        return (*COMMON_KERNEL_ARGS, f"init={INIT_PATH}")
    raise BaselineError(f"no Linux VM kind {kind!r}; known kinds: {', '.join(VM_KINDS)}")


def recipe_hash() -> str:
    """A hex digest of everything that goes into the disk, kernel and initramfs (both kinds
    share them): the rootfs recipe, our files and where they go, and this code's version."""
    files = {name: _digest(GUEST_DIR / name) for name in sorted(GUEST_FILES)}
    recipe = {
        "rootfs": ROOTFS.recipe_hash(),
        "guest_files": files,
        "placement": GUEST_FILES,
        "boot_probe": _digest(Path(boot_probe.__file__)),
        "boot_probe_path": BOOT_PROBE_PATH,
        "enabled": ENABLED_UNITS,
        "disabled": DISABLED_UNITS,
        "hostname": HOSTNAME,
        "ssh_user": SSH_USER,
        "free_space_mib": FREE_SPACE_MIB,
        "slim": [debian_slim.EXCLUDE, debian_slim.KEEP],
        "code": VM_CODE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image_dir(digest: str | None = None) -> Path:
    """Where the image of the current recipe (or of `digest`) is, or will be, cached."""
    return cache.directory("vm") / (digest or recipe_hash())[:16]


# --- finding and building ----------------------------------------------------------------------


def ensure_vm_image(kind: VmKind, log: Log | None = None) -> VmImage:
    """The image of `kind`, built first (minutes, as root) if the cache lacks it. Concurrent
    callers wait for one build; raise BaselineError if it fails, leaving nothing half-made."""
    say = log or (lambda _message: None)
    kernel_args(kind)  # an unknown kind fails before any build
    digest = recipe_hash()
    directory = image_dir(digest)
    if not _is_built(directory):
        with cache.locked(directory.with_name(directory.name + ".lock")):
            if not _is_built(directory):  # another process may have built it while we waited
                shutil.rmtree(directory, ignore_errors=True)  # an unfinished earlier attempt
                _build(directory, digest, say)
    return _load(directory, kind)


def find_vm_image(kind: VmKind) -> VmImage | None:
    """The cached image of `kind` for the current recipe, or None; never builds."""
    directory = image_dir()
    return _load(directory, kind) if _is_built(directory) else None


def _is_built(directory: Path) -> bool:
    return (directory / "vm.json").exists()


def _load(directory: Path, kind: VmKind) -> VmImage:
    manifest = json.loads((directory / "vm.json").read_text())
    return VmImage(
        kind=kind,
        recipe_hash=manifest["recipe_hash"],
        disk=directory / manifest["disk"],
        disk_format=manifest["disk_format"],
        kernel=directory / manifest["kernel"],
        initrd=directory / manifest["initrd"],
        kernel_release=manifest["kernel_release"],
        kernel_args=kernel_args(kind),
        ssh_user=manifest["ssh_user"],
        ssh_private_key=directory / manifest["ssh_private_key"],
        ssh_host_key=manifest["ssh_host_key"],
        network_parameter=NETWORK_PARAMETER,
        build_seconds=manifest["build_seconds"],
    )


def _build(directory: Path, digest: str, say: Log) -> None:
    _check_can_build(directory)
    started = time.monotonic()
    rootfs = ensure_rootfs(ROOTFS, say)
    with cache.staging_dir(directory) as staging:
        tree = staging / "tree"
        tree.mkdir(mode=0o755)
        say(f"unpacking {rootfs.name} for the Linux VM image {directory.name}")
        _run(["tar", "-x", "--numeric-owner", "-p", "-f", str(rootfs), "-C", str(tree)], "tar")
        release = _kernel_release(tree)
        _install_guest_files(tree)
        _configure_system(tree, digest)
        host_key = _install_ssh_keys(tree, staging / "ssh")
        say(f"making the initramfs of {release} in a chroot")
        _make_initramfs(tree, release)
        kernel, initrd = _take_boot_files(tree, staging, release)
        _slim(tree)
        say("writing the ext4 file system and converting it to qcow2")
        disk = _make_disk(tree, staging, digest)
        shutil.rmtree(tree)
        seconds = round(time.monotonic() - started, 1)
        manifest = {
            "recipe_hash": digest,
            "rootfs": ROOTFS.recipe_hash(),
            "disk": disk.name,
            "disk_format": DISK_FORMAT,
            "kernel": kernel.name,
            "initrd": initrd.name,
            "kernel_release": release,
            "ssh_user": SSH_USER,
            "ssh_private_key": "ssh/id_ed25519",
            "ssh_host_key": host_key,
            "build_seconds": seconds,
        }
        cache.write_text(staging / "vm.json", json.dumps(manifest, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700; the keys keep theirs
    say(f"Linux VM image {directory} built in {seconds:.0f} s (rootfs included)")


def _check_can_build(directory: Path) -> None:
    if os.geteuid() != 0:
        raise BaselineError(
            f"building the Linux VM image needs root (file ownership, chroot): run "
            f"`python -m baselines.linux_vm` once as root to fill {directory.parent}, or point "
            "UNIBENCH_CACHE at a cache that holds it"
        )
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    missing = [tool for tool in _HOST_TOOLS if shutil.which(tool, path=path) is None]
    if missing:
        packages = sorted({_HOST_TOOLS[tool] for tool in missing})
        raise BaselineError(
            f"missing tools for the Linux VM image: {', '.join(missing)}; run "
            f"`apt-get install {' '.join(packages)}`"
        )


_HOST_TOOLS = {
    "tar": "tar",
    "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "ssh-keygen": "openssh-client",
    "unshare": "util-linux",
    "chroot": "coreutils",
}


def _kernel_release(tree: Path) -> str:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise BaselineError(f"expected one kernel in the rootfs's /boot, found {kernels}")
    return kernels[0].name.removeprefix("vmlinuz-")


def _inside(tree: Path, path: str) -> Path:
    return tree / path.lstrip("/")


def _install_guest_files(tree: Path) -> None:
    for name, (path, mode) in GUEST_FILES.items():
        _write(_inside(tree, path), (GUEST_DIR / name).read_bytes(), mode)
    _write(_inside(tree, BOOT_PROBE_PATH), Path(boot_probe.__file__).read_bytes(), 0o644)
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ENABLED_UNITS:
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{unit}")
    for unit in DISABLED_UNITS:
        (wants / unit).unlink(missing_ok=True)
        # deb-systemd-helper's record, so a later package upgrade does not enable it again
        helper = tree / "var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants"
        (helper / unit).unlink(missing_ok=True)


def _configure_system(tree: Path, digest: str) -> None:
    """The host's traces debootstrap copied in (hostname, resolver), and a machine id per
    recipe instead of the random one systemd's postinst made."""
    _write(tree / "etc/hostname", f"{HOSTNAME}\n".encode(), 0o644)
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost\n"
    _write(tree / "etc/hosts", hosts.encode(), 0o644)
    _write(tree / "etc/resolv.conf", b"", 0o644)  # the guest has no name server
    machine_id = f"{uuid.UUID(digest[:32]).hex}\n".encode()
    _write(tree / "etc/machine-id", machine_id, 0o444)
    dbus_id = tree / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")


def _install_ssh_keys(tree: Path, keys: Path) -> str:
    """Fresh host and client keys for this image (ssh-keygen runs on the host). The host's
    private key lives only in the image; the client's only in the cache. Returns the public host
    key as "ssh-ed25519 AAAA..."."""
    keys.mkdir(mode=0o700)
    host_key = keys / "ssh_host_ed25519_key"
    client_key = keys / "id_ed25519"
    for path, comment in ((host_key, "unibench linux-vm host"), (client_key, "unibench")):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    ssh = tree / "etc/ssh"
    for old in ssh.glob("ssh_host_*"):
        old.unlink()
    _write(ssh / host_key.name, host_key.read_bytes(), 0o600)
    _write(ssh / f"{host_key.name}.pub", host_key.with_suffix(".pub").read_bytes(), 0o644)
    host_key.unlink()
    home = tree / "root/.ssh"
    home.mkdir(mode=0o700, exist_ok=True)
    _write(home / "authorized_keys", client_key.with_suffix(".pub").read_bytes(), 0o600)
    key_type, key_data = host_key.with_suffix(".pub").read_text().split()[:2]
    return f"{key_type} {key_data}"


def _make_initramfs(tree: Path, release: str) -> None:
    """update-initramfs in a chroot of the tree: the only step that runs the image's own code.
    /proc is mounted in a mount namespace of its own, which vanishes with the command, so the
    tree never keeps a mount, even if we are killed."""
    script = f'mount -t proc proc /proc && exec update-initramfs -u -k "{release}"'
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C"}
    command = ["unshare", "--mount", "--propagation", "private", "--fork"]
    _run([*command, "chroot", str(tree), "/bin/sh", "-c", script], "update-initramfs", env=env)


def _take_boot_files(tree: Path, staging: Path, release: str) -> tuple[Path, Path]:
    """Move the kernel and the initramfs out of the tree: QEMU boots them from beside the
    disk, so the disk need not carry them too."""
    taken = []
    for name, target in ((f"vmlinuz-{release}", "vmlinuz"), (f"initrd.img-{release}", "initrd")):
        source = tree / "boot" / name
        if not source.is_file():
            raise BaselineError(f"the rootfs has no /boot/{name}")
        destination = staging / target
        shutil.move(source, destination)
        destination.chmod(0o644)
        taken.append(destination)
    for link in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        if (tree / link).is_symlink():
            (tree / link).unlink()
    return taken[0], taken[1]


def _slim(tree: Path) -> None:
    """Drop documentation, manual pages and translations as Debian's slim images do, and tell
    dpkg to keep doing so (the apt lists are gone already: debootstrap.py cleans them)."""
    for directory, subdirectories, files in os.walk(tree / "usr/share", topdown=False):
        for name in files:
            path = Path(directory) / name
            if debian_slim.is_dropped("/" + str(path.relative_to(tree))):
                path.unlink()
        for name in subdirectories:
            path = Path(directory) / name
            if (
                not path.is_symlink()
                and debian_slim.is_dropped("/" + str(path.relative_to(tree)))
                and not any(path.iterdir())
            ):
                path.rmdir()
    lines = ["# unibench linux-vm: slim like Debian's -slim images"]
    lines += [f"path-exclude={pattern}" for pattern in debian_slim.EXCLUDE]
    lines += [f"path-include={pattern}" for pattern in debian_slim.KEEP]
    _write(_inside(tree, debian_slim.DPKG_CONFIG), ("\n".join(lines) + "\n").encode(), 0o644)


def _make_disk(tree: Path, staging: Path, digest: str) -> Path:
    """The tree as an ext4 file system filling a whole disk (no partition table), made with
    `mkfs.ext4 -d` into a sparse file, then converted to qcow2 (zero blocks take no space)."""
    raw = staging / "disk.raw"
    size_mib = disk_size_mib(_tree_bytes(tree))
    with raw.open("wb") as sparse:
        sparse.truncate(size_mib << 20)
    fs_uuid = str(uuid.UUID(digest[32:64]))  # the same recipe gives the same file system UUID
    _run(
        [
            "mkfs.ext4", "-q", "-F", "-L", "unibench-root", "-U", fs_uuid,
            "-E", f"root_owner=0:0,hash_seed={fs_uuid}", "-d", str(tree), str(raw),
        ],
        "mkfs.ext4",
    )  # fmt: skip
    disk = staging / f"disk.{DISK_FORMAT}"
    _run(["qemu-img", "convert", "-f", "raw", "-O", DISK_FORMAT, str(raw), str(disk)], "qemu-img")
    raw.unlink()
    disk.chmod(0o444)  # the base of every overlay: nothing may write to it
    return disk


def disk_size_mib(tree_bytes: int) -> int:
    """The file system size for a tree of `tree_bytes`: its blocks, plus about a tenth for
    inodes, directories and bitmaps, the journal (up to 64 MiB below 16 GiB), and free space."""
    data_mib = -(-tree_bytes // (1 << 20))
    return data_mib + data_mib // 10 + 64 + FREE_SPACE_MIB


def _tree_bytes(tree: Path) -> int:
    """The space the tree's files take in 4 KiB blocks (directories one block each)."""
    total = 0
    for directory, _subdirectories, files in os.walk(tree):
        total += 4096
        for name in files:
            status = os.lstat(os.path.join(directory, name))
            total += -(-status.st_size // 4096) * 4096
    return total


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_bytes(data)
    path.chmod(mode)


def _run(command: Sequence[str], what: str = "", env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            timeout=BUILD_STEP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BaselineError(
            f"{what or command[0]} did not finish in {BUILD_STEP_TIMEOUT_S} s: {' '.join(command)}"
        ) from error
    if result.returncode != 0:
        tail = "\n".join(result.stdout.rstrip().splitlines()[-20:])
        raise BaselineError(
            f"{what or command[0]} failed with exit status {result.returncode}: "
            f"{' '.join(command)}\n{tail}"
        )


# --- launching ---------------------------------------------------------------------------------


def overlay(image: VmImage, folder: Path) -> Path:
    """A fresh qcow2 overlay of the image's disk in `folder`, for one launch: the guest writes
    there, never to the cached base. The caller deletes it when the launch is over (or uses
    overlaid(), which does)."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f"{image.kind}-", suffix=".qcow2", dir=folder)
    os.close(descriptor)
    path = Path(name)
    command = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", image.disk_format]
    try:
        _run([*command, "-b", str(image.disk), str(path)], "qemu-img create")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


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
    unikernel/build/qemu.py: `-M pc`, the serial console on stdout, no default devices, no
    reboot. `devices` are more options, such as unikernel.build.qemu.tap_nic()'s."""
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
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        image = ensure_vm_image(args.kind, log.info)
    except BaselineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {
        name: str(value) if isinstance(value, Path) else value
        for name, value in asdict(image).items()
    }
    summary["sizes"] = image.sizes()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, value in summary.items():
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
