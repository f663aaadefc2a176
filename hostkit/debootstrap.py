"""Debian root filesystems built with debootstrap, cached as tarballs named by their recipe hash.

A build takes about 45 s and needs root and the Debian mirror, so its result is kept under the
cache directory as `rootfs/<recipe-hash>.tar`, an ordinary tar of the whole tree that the image
recipes then filter without extracting it again.
"""

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hostkit import cache
from hostkit.apt_sources import debian_mirror
from hostkit.errors import ArtifactError

# Bump when the build below changes what ends up in a tarball, so old caches are not reused.
ROOTFS_CODE_VERSION = 1

DEBOOTSTRAP_TIMEOUT_S = 1800

# Downloaded packages and package indexes: what `apt-get clean` and Debian's Docker images drop.
_APT_LEFTOVERS = ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*")


@dataclass(frozen=True)
class RootfsRecipe:
    """What `debootstrap --variant=VARIANT --include=PACKAGES SUITE` is asked to build."""

    suite: str
    variant: str
    packages: tuple[str, ...]

    def recipe_hash(self) -> str:
        """A hex digest of everything that changes the resulting tree (not the mirror used)."""
        recipe = {
            "suite": self.suite,
            "variant": self.variant,
            "packages": sorted(self.packages),
            "architecture": platform.machine(),
            "code": ROOTFS_CODE_VERSION,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


# Debian's python3 as the Docker baselines and the unikernel's runtime both take it. netbase
# gives /etc/services and /etc/protocols, which Python's socket module reads and Debian's python
# images install too. libpython3.11-stdlib completes the standard library (asyncio, json,
# ctypes...) as a slim image has it; python-minimal keeps only python3-minimal's part.
PYTHON_ROOTFS = RootfsRecipe(
    suite="bookworm",
    variant="minbase",
    packages=("python3-minimal", "libpython3.11-stdlib", "netbase"),
)


def rootfs_path(recipe: RootfsRecipe) -> Path:
    """Where the tarball of `recipe` is (or will be) cached."""
    return cache.directory("rootfs") / f"{recipe.recipe_hash()}.tar"


def ensure_rootfs(recipe: RootfsRecipe, log: Callable[[str], None] | None = None) -> Path:
    """The cached tarball of `recipe`, built first if missing; raise ArtifactError on failure."""
    target = rootfs_path(recipe)
    if target.exists():
        return target
    with cache.locked(target.with_suffix(".lock")):
        if not target.exists():  # another process may have built it while we waited
            _build(recipe, target, log or (lambda _message: None))
    return target


def _build(recipe: RootfsRecipe, target: Path, log: Callable[[str], None]) -> None:
    _check_can_debootstrap(target)
    mirror = debian_mirror(recipe.suite)
    workdir = Path(tempfile.mkdtemp(prefix=f".{target.stem[:12]}-", dir=target.parent))
    try:
        # debootstrap creates `rootfs` itself with mode 0755; mkdtemp's 0700 would become the
        # image's root directory mode.
        rootfs = workdir / "rootfs"
        log(
            f"debootstrap {recipe.suite} ({recipe.variant}, {' '.join(recipe.packages)}) "
            f"from {mirror}: about a minute"
        )
        _debootstrap(recipe, mirror, rootfs)
        for pattern in _APT_LEFTOVERS:
            for leftover in rootfs.glob(pattern):
                leftover.unlink()
        log(f"writing {target}")
        _write_tar_atomically(rootfs, target)
    finally:
        _remove_tree(workdir)


def _check_can_debootstrap(target: Path) -> None:
    if shutil.which("debootstrap", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None:
        raise ArtifactError("debootstrap is not installed: run `apt-get install debootstrap`")
    if os.geteuid() != 0:
        raise ArtifactError(
            f"building {target.name} with debootstrap needs root (it chroots and creates device "
            f"nodes): run once as root to fill the cache in {target.parent}, or point "
            "UNIBENCH_CACHE at a cache that already holds it"
        )


def _debootstrap(recipe: RootfsRecipe, mirror: str, rootfs: Path) -> None:
    command = [
        "debootstrap",
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(rootfs),
        mirror,
    ]
    try:
        result = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=DEBOOTSTRAP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ArtifactError(
            f"debootstrap did not finish in {DEBOOTSTRAP_TIMEOUT_S} s: is the mirror {mirror} "
            "reachable and fast enough?"
        ) from error
    if result.returncode != 0:
        # debootstrap keeps its detailed log inside the target when it fails.
        detail_log = rootfs / "debootstrap" / "debootstrap.log"
        detail = detail_log.read_text(errors="replace") if detail_log.exists() else ""
        raise ArtifactError(
            f"`{' '.join(command)}` failed with exit status {result.returncode}. Check the "
            "package names and that the mirror serves the suite. Its output ended with:\n"
            + _tail(result.stdout)
            + (f"\ndebootstrap.log ended with:\n{_tail(detail)}" if detail else "")
        )


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _write_tar_atomically(rootfs: Path, target: Path) -> None:
    """Tar `rootfs` to `target` through a temporary file, so `target` is whole or absent."""
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(rootfs, arcname=".")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(partial, 0o644)  # mkstemp's 0600 would hide the cache from other users
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _remove_tree(path: Path) -> None:
    """Remove a build directory, detaching first any /proc or /sys a killed debootstrap left."""
    for mount_point in sorted(_mounts_below(path), reverse=True):
        subprocess.run(["umount", "--lazy", mount_point], check=False)
    still_mounted = _mounts_below(path)
    if still_mounted:
        raise ArtifactError(
            f"cannot remove {path}: {', '.join(still_mounted)} still mounted; unmount and delete "
            "it by hand"
        )
    shutil.rmtree(path)


def _mounts_below(path: Path) -> list[str]:
    root = os.path.realpath(path)
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            # The mount point is the fifth field, with spaces and the like escaped as \040.
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
            if point == root or point.startswith(root + "/"):
                mounts.append(point)
    return mounts
