"""A bootable Debian disk from a cached rootfs tarball: the machinery the Linux VM baselines
(baselines/linux_vm.py) and the Xen lab's dom0 (baselines/xen_lab.py) share.

A DiskRecipe says what goes into an image: the debootstrap recipe (baselines/debootstrap.py), our
files and where they go, the systemd units to enable or keep off, the hostname. build() unpacks
the tarball, adds our files, replaces the SSH host keys debootstrap generated with fresh ones,
remakes the initramfs with only the modules the recipe lists (the one step run in a chroot), takes
the kernel and the initramfs out to lie beside the disk, drops documentation as Debian's slim
images do, and writes the tree into an ext4 file system with `mkfs.ext4 -d` (no loop mount),
converted to qcow2. An image kind may take more out of the tree before the slimming (the Xen
lab's hypervisor), through build()'s `take` step.

The result is cached under a directory named by recipe_hash(), written by cache.staging_dir() so
that a directory holding the manifest is a finished image; ensure_built() builds it at most once
across processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hostkit import cache, debian_slim
from hostkit.debootstrap import RootfsRecipe, ensure_rootfs
from hostkit.errors import ArtifactError
from hostkit.owners import pid_alive

SSH_USER = "root"  # the client key goes to /root/.ssh/authorized_keys
DISK_FORMAT = "qcow2"
FREE_SPACE_MIB = 1024  # room for the guest's writes; costs nothing in the qcow2 file
BUILD_STEP_TIMEOUT_S = 1200
EXTRA_FILE_MODE = 0o644

Log = Callable[[str], None]
# A step that takes more out of the tree into the staging folder, after the kernel and initramfs
# and before the slimming; what it returns goes into the manifest.
TakeStep = Callable[[Path, Path], dict[str, Any]]


@dataclass(frozen=True)
class DiskRecipe:
    """Everything that goes into one kind of disk image; recipe_hash() digests all of it."""

    label: str  # "linux-vm", "xen-lab": names the image in messages, key comments, dpkg's config
    rootfs: RootfsRecipe
    # Our files: source file on the host -> (path in the image, mode). Their names must differ:
    # the hash knows them by name.
    guest_files: Mapping[Path, tuple[str, int]]
    hostname: str
    code_version: int  # bump when the build changes what ends up in an image
    # More files, known to the hash by a name of their own: name -> (source, path in the image);
    # written with EXTRA_FILE_MODE (Python modules and data that live outside the guest files).
    extra_files: Mapping[str, tuple[Path, str]] = field(default_factory=dict)
    enabled_units: tuple[str, ...] = ()  # ours, wanted by multi-user.target
    disabled_units: tuple[str, ...] = ()  # installed by a package, kept off at boot

    def __post_init__(self) -> None:
        names = [source.name for source in self.guest_files]
        if len(set(names)) != len(names):
            raise ArtifactError(f"the guest files of {self.label} share a name: {sorted(names)}")

    def recipe_hash(self) -> str:
        """A hex digest of everything that goes into the disk, kernel and initramfs: the rootfs
        recipe, our files and where they go, the units, the hostname and the code's version."""
        files = {source.name: _digest(source) for source in self.guest_files}
        recipe: dict[str, Any] = {
            "rootfs": self.rootfs.recipe_hash(),
            "guest_files": files,
            "placement": {source.name: place for source, place in self.guest_files.items()},
        }
        for name, (source, path) in self.extra_files.items():
            recipe[name] = _digest(source)
            recipe[f"{name}_path"] = path
        recipe |= {
            "enabled": self.enabled_units,
            "disabled": self.disabled_units,
            "hostname": self.hostname,
            "ssh_user": SSH_USER,
            "free_space_mib": FREE_SPACE_MIB,
            "slim": [debian_slim.EXCLUDE, debian_slim.KEEP],
            "code": self.code_version,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the cache ---------------------------------------------------------------------------------


def is_built(directory: Path, manifest: str) -> bool:
    """Whether `directory` holds a finished image: the manifest is written last."""
    return (directory / manifest).exists()


def ensure_built(directory: Path, manifest: str, build: Callable[[], None]) -> None:
    """Run `build` (which fills `directory`) unless the image is there. Concurrent callers wait
    for one build; a directory without the manifest, left by an earlier attempt, goes first."""
    if is_built(directory, manifest):
        return
    with cache.locked(directory.with_name(directory.name + ".lock")):
        if not is_built(directory, manifest):  # another process may have built it meanwhile
            shutil.rmtree(directory, ignore_errors=True)
            build()


def read_manifest(directory: Path, manifest: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A built image's manifest, and the fields every image kind shares (paths where they name
    files): the keyword arguments VmImage and LabImage have in common."""
    data: dict[str, Any] = json.loads((directory / manifest).read_text())
    common = {name: data[name] for name in _COMMON_FIELDS}
    for name in _COMMON_FILES:
        common[name] = directory / data[name]
    return data, common


_COMMON_FIELDS = (
    "recipe_hash", "disk_format", "kernel_release", "ssh_user", "ssh_host_key", "build_seconds"
)  # fmt: skip
_COMMON_FILES = ("disk", "kernel", "initrd", "ssh_private_key")


# --- building ----------------------------------------------------------------------------------


def build(
    recipe: DiskRecipe,
    directory: Path,
    digest: str,
    say: Log,
    *,
    manifest: str,
    command: str,
    take: TakeStep | None = None,
) -> None:
    """Build the image of `recipe` into `directory` (which must not exist), as root. `command`
    is what a user runs to build it ahead of time, for the error message when we cannot."""
    check_can_build(recipe, directory, command)
    started = time.monotonic()
    rootfs = ensure_rootfs(recipe.rootfs, say)
    with cache.staging_dir(directory) as staging:
        tree = staging / "tree"
        tree.mkdir(mode=0o755)
        say(f"unpacking {rootfs.name} for the {recipe.label} image {directory.name}")
        run(["tar", "-x", "--numeric-owner", "-p", "-f", str(rootfs), "-C", str(tree)], "tar")
        release = kernel_release(tree)
        install_guest_files(recipe, tree)
        configure_system(recipe, tree, digest)
        host_key = install_ssh_keys(tree, staging / "ssh", recipe.label)
        say(f"making the initramfs of {release} in a chroot")
        make_initramfs(tree, release)
        kernel, initrd = take_boot_files(tree, staging, release)
        more = take(tree, staging) if take is not None else {}
        slim(tree, recipe.label)
        say(f"writing the ext4 file system and converting it to {DISK_FORMAT}")
        disk = make_disk(tree, staging, digest)
        shutil.rmtree(tree)
        seconds = round(time.monotonic() - started, 1)
        data = {
            "recipe_hash": digest,
            "rootfs": recipe.rootfs.recipe_hash(),
            "disk": disk.name,
            "disk_format": DISK_FORMAT,
            "kernel": kernel.name,
            "initrd": initrd.name,
            "kernel_release": release,
            "ssh_user": SSH_USER,
            "ssh_private_key": "ssh/id_ed25519",
            "ssh_host_key": host_key,
            **more,
            "build_seconds": seconds,
        }
        cache.write_text(staging / manifest, json.dumps(data, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700; the keys keep theirs
    say(f"{recipe.label} image {directory} built in {seconds:.0f} s (rootfs included)")


def check_can_build(recipe: DiskRecipe, directory: Path, command: str) -> None:
    if os.geteuid() != 0:
        raise ArtifactError(
            f"building the {recipe.label} image needs root (file ownership, chroot): run "
            f"`{command}` once as root to fill {directory.parent}, or point UNIBENCH_CACHE at a "
            "cache that holds it"
        )
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    missing = [tool for tool in _HOST_TOOLS if shutil.which(tool, path=path) is None]
    if missing:
        packages = sorted({_HOST_TOOLS[tool] for tool in missing})
        raise ArtifactError(
            f"missing tools for the {recipe.label} image: {', '.join(missing)}; run "
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


def kernel_release(tree: Path) -> str:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise ArtifactError(f"expected one kernel in the rootfs's /boot, found {kernels}")
    return kernels[0].name.removeprefix("vmlinuz-")


def inside(tree: Path, path: str) -> Path:
    return tree / path.lstrip("/")


def install_guest_files(recipe: DiskRecipe, tree: Path) -> None:
    """Our files into the tree, and the units enabled or disabled as systemctl would."""
    for source, (path, mode) in recipe.guest_files.items():
        write(inside(tree, path), source.read_bytes(), mode)
    for source, path in recipe.extra_files.values():
        write(inside(tree, path), source.read_bytes(), EXTRA_FILE_MODE)
    if not recipe.enabled_units and not recipe.disabled_units:
        return  # an image without systemd (the Xen lab) keeps its tree as the packages left it
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in recipe.enabled_units:
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{unit}")
    for unit in recipe.disabled_units:
        (wants / unit).unlink(missing_ok=True)
        # deb-systemd-helper's record, so a later package upgrade does not enable it again
        helper = tree / "var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants"
        (helper / unit).unlink(missing_ok=True)


def configure_system(recipe: DiskRecipe, tree: Path, digest: str) -> None:
    """The host's traces debootstrap copied in (hostname, resolver), and a machine id per
    recipe instead of the random one systemd's postinst made."""
    hostname = recipe.hostname
    write(tree / "etc/hostname", f"{hostname}\n".encode(), 0o644)
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost\n"
    write(tree / "etc/hosts", hosts.encode(), 0o644)
    write(tree / "etc/resolv.conf", b"", 0o644)  # the guest has no name server
    machine_id = f"{uuid.UUID(digest[:32]).hex}\n".encode()
    write(tree / "etc/machine-id", machine_id, 0o444)
    dbus_id = tree / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")


def install_ssh_keys(tree: Path, keys: Path, label: str) -> str:
    """Fresh host and client keys for this image (ssh-keygen runs on the host). The host's
    private key lives only in the image; the client's only in the cache. Returns the public host
    key as "ssh-ed25519 AAAA..."."""
    keys.mkdir(mode=0o700)
    host_key = keys / "ssh_host_ed25519_key"
    client_key = keys / "id_ed25519"
    for path, comment in ((host_key, f"unibench {label} host"), (client_key, "unibench")):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    ssh = tree / "etc/ssh"
    for old in ssh.glob("ssh_host_*"):
        old.unlink()
    write(ssh / host_key.name, host_key.read_bytes(), 0o600)
    write(ssh / f"{host_key.name}.pub", host_key.with_suffix(".pub").read_bytes(), 0o644)
    host_key.unlink()
    home = tree / "root/.ssh"
    home.mkdir(mode=0o700, exist_ok=True)
    write(home / "authorized_keys", client_key.with_suffix(".pub").read_bytes(), 0o600)
    key_type, key_data = host_key.with_suffix(".pub").read_text().split()[:2]
    return f"{key_type} {key_data}"


def make_initramfs(tree: Path, release: str) -> None:
    """update-initramfs in a chroot of the tree: the only step that runs the image's own code.
    /proc is mounted in a mount namespace of its own, which vanishes with the command, so the
    tree never keeps a mount, even if we are killed."""
    script = f'mount -t proc proc /proc && exec update-initramfs -u -k "{release}"'
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C"}
    command = ["unshare", "--mount", "--propagation", "private", "--fork"]
    run([*command, "chroot", str(tree), "/bin/sh", "-c", script], "update-initramfs", env=env)


def take_boot_files(tree: Path, staging: Path, release: str) -> tuple[Path, Path]:
    """Move the kernel and the initramfs out of the tree: QEMU boots them from beside the
    disk, so the disk need not carry them too."""
    taken = []
    for name, target in ((f"vmlinuz-{release}", "vmlinuz"), (f"initrd.img-{release}", "initrd")):
        source = tree / "boot" / name
        if not source.is_file():
            raise ArtifactError(f"the rootfs has no /boot/{name}")
        destination = staging / target
        shutil.move(source, destination)
        destination.chmod(0o644)
        taken.append(destination)
    for link in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        if (tree / link).is_symlink():
            (tree / link).unlink()
    return taken[0], taken[1]


def slim(tree: Path, label: str) -> None:
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
    lines = [f"# unibench {label}: slim like Debian's -slim images"]
    lines += [f"path-exclude={pattern}" for pattern in debian_slim.EXCLUDE]
    lines += [f"path-include={pattern}" for pattern in debian_slim.KEEP]
    write(inside(tree, debian_slim.DPKG_CONFIG), ("\n".join(lines) + "\n").encode(), 0o644)


def make_disk(tree: Path, staging: Path, digest: str) -> Path:
    """The tree as an ext4 file system filling a whole disk (no partition table), made with
    `mkfs.ext4 -d` into a sparse file, then converted to qcow2 (zero blocks take no space)."""
    raw = staging / "disk.raw"
    size_mib = disk_size_mib(tree_bytes(tree))
    with raw.open("wb") as sparse:
        sparse.truncate(size_mib << 20)
    fs_uuid = str(uuid.UUID(digest[32:64]))  # the same recipe gives the same file system UUID
    run(
        [
            "mkfs.ext4", "-q", "-F", "-L", "unibench-root", "-U", fs_uuid,
            "-E", f"root_owner=0:0,hash_seed={fs_uuid}", "-d", str(tree), str(raw),
        ],
        "mkfs.ext4",
    )  # fmt: skip
    disk = staging / f"disk.{DISK_FORMAT}"
    run(["qemu-img", "convert", "-f", "raw", "-O", DISK_FORMAT, str(raw), str(disk)], "qemu-img")
    raw.unlink()
    disk.chmod(0o444)  # the base of every overlay: nothing may write to it
    return disk


def disk_size_mib(tree_bytes: int) -> int:
    """The file system size for a tree of `tree_bytes`: its blocks, plus about a tenth for
    inodes, directories and bitmaps, the journal (up to 64 MiB below 16 GiB), and free space."""
    data_mib = -(-tree_bytes // (1 << 20))
    return data_mib + data_mib // 10 + 64 + FREE_SPACE_MIB


def tree_bytes(tree: Path) -> int:
    """The space the tree's files take in 4 KiB blocks (directories one block each)."""
    total = 0
    for directory, _subdirectories, files in os.walk(tree):
        total += 4096
        for name in files:
            status = os.lstat(os.path.join(directory, name))
            total += -(-status.st_size // 4096) * 4096
    return total


def write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_bytes(data)
    path.chmod(mode)


def run(command: Sequence[str], what: str = "", env: dict[str, str] | None = None) -> None:
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
        raise ArtifactError(
            f"{what or command[0]} did not finish in {BUILD_STEP_TIMEOUT_S} s: {' '.join(command)}"
        ) from error
    if result.returncode != 0:
        tail = "\n".join(result.stdout.rstrip().splitlines()[-20:])
        raise ArtifactError(
            f"{what or command[0]} failed with exit status {result.returncode}: "
            f"{' '.join(command)}\n{tail}"
        )


def command_line(
    parser: argparse.ArgumentParser, argv: Iterable[str] | None, ensure: Callable[..., Any]
) -> int:
    """The body of `python -m baselines.linux_vm` and `python -m baselines.xen_lab`: find or
    build the image with `ensure(args)`, which logs to stderr, and print its fields and sizes."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        image = ensure(args)
    except ArtifactError as error:
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


# --- launching ---------------------------------------------------------------------------------


def overlay(disk: Path, disk_format: str, folder: Path, prefix: str) -> Path:
    """A fresh qcow2 overlay of `disk` in `folder`, for one launch: the guest writes there,
    never to the cached base. The caller deletes it when the launch is over; its name holds
    our pid, so remove_stale_overlays() can delete it if we die first."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(
        prefix=f"{prefix}-{os.getpid()}-", suffix=".qcow2", dir=folder
    )
    os.close(descriptor)
    path = Path(name)
    command = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", disk_format]
    try:
        run([*command, "-b", str(disk), str(path)], "qemu-img create")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


_OVERLAY_OWNER = re.compile(r"-(\d+)-[a-z0-9_]+\.qcow2$")  # mkstemp's letters hold no "-"


def remove_stale_overlays(folder: Path) -> list[Path]:
    """Deletes the overlays in `folder` whose maker has died; those deleted."""
    removed = []
    for path in folder.glob("*.qcow2") if folder.is_dir() else ():
        owner = _OVERLAY_OWNER.search(path.name)
        if owner is not None and not pid_alive(int(owner[1])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
