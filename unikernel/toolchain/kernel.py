"""The kernels under our images: Debian's prebuilt cloud kernel, or one specialized per target.

`generic_kernel()` fetches Debian's cloud kernel package and says which of the drivers our guests
need it builds as modules (an initramfs must then carry and load them). `specialized_kernel()`
builds, Lupine Linux style, a kernel from Debian's linux-source with tinyconfig plus only what our
images need (kconfig.py), with no modules. `embed_initramfs()` relinks a specialized kernel with
an initramfs built in, giving the single image file QEMU, Firecracker and Xen PVH boot.

Builds take minutes, so results are cached (cache.py) by package version or by configuration hash;
run `python -m unikernel.toolchain.kernel --specialized` ahead of time to fill the cache.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hostkit import cache, debian_packages, elfnotes
from unikernel.toolchain import kconfig
from unikernel.toolchain.app import DRIVERS

log = logging.getLogger(__name__)

SOURCE_PACKAGE = "linux-source-6.1"
BUILD_PACKAGES = ("build-essential", "bc", "bison", "flex", "libelf-dev", "libssl-dev", "cpio")
GENERIC_PACKAGE = "linux-image-cloud-amd64"
ARCH = "x86_64"  # explicit: with the default ARCH=x86, tinyconfig would make a 32-bit kernel

# The guest drivers the generic kernel must provide, built in or as modules, by target:
# config option -> module name (as in modules.dep, without .ko).
GUEST_DRIVERS: dict[str, dict[str, str]] = {
    "qemu": {
        "VIRTIO_PCI": "virtio_pci",
        "VIRTIO_MMIO": "virtio_mmio",
        "VIRTIO_NET": "virtio_net",
        "VIRTIO_BLK": "virtio_blk",
        "HW_RANDOM_VIRTIO": "virtio-rng",
        "PACKET": "af_packet",
    },
    "xen": {
        "XEN_NETDEV_FRONTEND": "xen-netfront",
        "XEN_BLKDEV_FRONTEND": "xen-blkfront",
        "PACKET": "af_packet",
    },
}
# What each of those drivers serves: an image loads the modules of the devices its app declares,
# and the buses under them.
DRIVER_ROLES: dict[str, str] = {
    "VIRTIO_PCI": "bus",
    "VIRTIO_MMIO": "bus",
    "VIRTIO_NET": "network",
    "VIRTIO_BLK": "block",
    "HW_RANDOM_VIRTIO": "entropy",
    "PACKET": "network",
    "XEN_NETDEV_FRONTEND": "network",
    "XEN_BLKDEV_FRONTEND": "block",
}
# ...and what no module can add later: it must be built in.
GENERIC_BUILT_IN = (
    "PVH",
    "XEN_PVH",
    "ACPI",
    "BLK_DEV_INITRD",
    "DEVTMPFS",
    "SERIAL_8250_CONSOLE",
    "HVC_XEN",
    "MAGIC_SYSRQ",
)


class KernelBuildError(RuntimeError):
    """A kernel could not be configured, built or fetched."""


# --- the generic kernel ------------------------------------------------------------------------


@dataclass(frozen=True)
class GenericKernel:
    """Debian's cloud kernel, unpacked in the cache."""

    package: str  # the versioned package, e.g. linux-image-6.1.0-41-cloud-amd64
    version: str
    release: str  # uname -r
    vmlinuz: Path  # a bzImage
    config: Path
    modules_dir: Path  # lib/modules/<release>
    features: dict[str, str]  # option -> "y", "m" or "n", for GUEST_DRIVERS and GENERIC_BUILT_IN
    # module name -> module files to load, dependencies first, the module itself last
    modules: dict[str, tuple[Path, ...]]

    def modules_for(self, target: str, roles: Collection[str] | None = None) -> list[Path]:
        """The module files an initramfs for `target` must load, in loading order: for every
        driver the target lists, or, given `roles` (as in DRIVER_ROLES), for those roles' drivers
        and, if there are any, the buses under them."""
        ordered: list[Path] = []
        for option, module in GUEST_DRIVERS[target].items():
            if roles is not None and (not roles or DRIVER_ROLES[option] not in {*roles, "bus"}):
                continue
            state = self.features.get(option, "n")
            if state == "n":
                raise KernelBuildError(
                    f"{self.package} lacks CONFIG_{option}, which {target} needs"
                )
            if state == "m":
                ordered.extend(path for path in self.modules[module] if path not in ordered)
        return ordered


def generic_kernel() -> GenericKernel:
    """Debian's cloud kernel, fetched (apt-get download, dpkg-deb -x) once per package version."""
    package, version, directory = _generic_package()
    with _locked(directory):
        if not (directory / "kernel.json").exists():
            shutil.rmtree(directory, ignore_errors=True)  # an unfinished earlier attempt
            with cache.staging_dir(directory) as staging:
                _fetch_generic(package, version, staging)
    return _load_generic(directory)


def find_generic_kernel() -> GenericKernel | None:
    """The cached cloud kernel of the version apt would fetch, if it was fetched; never
    downloads (apt's package lists say which version that is)."""
    _, _, directory = _generic_package()
    if not (directory / "kernel.json").exists():
        return None
    return _load_generic(directory)


def _generic_package() -> tuple[str, str, Path]:
    """The versioned cloud kernel package apt would install, its version and its cache folder."""
    meta_version = debian_packages.candidate_version(GENERIC_PACKAGE)
    images = [
        name
        for name in debian_packages.depends(GENERIC_PACKAGE, meta_version)
        if name.startswith("linux-image-")
    ]
    if not images:
        raise KernelBuildError(f"{GENERIC_PACKAGE} {meta_version} depends on no linux-image")
    package = images[0]
    version = debian_packages.candidate_version(package)
    return package, version, cache.kernels_dir() / "generic" / _safe_name(f"{package}_{version}")


def _fetch_generic(package: str, version: str, staging: Path) -> None:
    log.info("fetching %s %s", package, version)
    with tempfile.TemporaryDirectory(dir=staging) as download_dir:
        deb = debian_packages.download(package, version, Path(download_dir))
        debian_packages.extract(deb, staging / "root")
    modules_root = _modules_root(staging / "root")
    if not (modules_root / "modules.dep").exists():
        # The package leaves modules.dep to its postinst; make it for the unpacked tree.
        debian_packages.ensure_installed(["kmod"])
        base = modules_root.parent.parent.parent  # <base>/lib/modules/<release>
        _check_run(["depmod", "-b", str(base), modules_root.name], what="depmod")
    manifest = {"package": package, "version": version, "release": modules_root.name}
    cache.write_text(staging / "kernel.json", json.dumps(manifest, indent=2) + "\n")


def _load_generic(directory: Path) -> GenericKernel:
    manifest = json.loads((directory / "kernel.json").read_text())
    release: str = manifest["release"]
    root = directory / "root"
    config = root / "boot" / f"config-{release}"
    options = kconfig.parse(config.read_text())
    wanted = {option for drivers in GUEST_DRIVERS.values() for option in drivers}
    wanted.update(GENERIC_BUILT_IN)
    features = {option: options.get(option, "n") for option in sorted(wanted)}
    modules_dir = _modules_root(root)
    dependencies = parse_modules_dep((modules_dir / "modules.dep").read_text())
    modules = {}
    for drivers in GUEST_DRIVERS.values():
        for option, module in drivers.items():
            if features[option] == "m":
                modules[module] = tuple(
                    modules_dir / relative for relative in load_order(module, dependencies)
                )
    return GenericKernel(
        package=manifest["package"],
        version=manifest["version"],
        release=release,
        vmlinuz=root / "boot" / f"vmlinuz-{release}",
        config=config,
        modules_dir=modules_dir,
        features=features,
        modules=modules,
    )


def _modules_root(root: Path) -> Path:
    """lib/modules/<release> in an unpacked kernel package (usr/lib after the /usr merge)."""
    found = sorted(root.glob("lib/modules/*")) or sorted(root.glob("usr/lib/modules/*"))
    if len(found) != 1:
        raise KernelBuildError(f"expected one lib/modules/<release> under {root}, found {found}")
    return found[0]


def module_name(path: str) -> str:
    """The name modprobe knows a module file by: its base name without .ko[.xz|.zst|.gz], with
    dashes and underscores equivalent."""
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.\w+)?$", "", base).replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep: module name -> (its file, the files it depends on, as depmod lists them)."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            table[module_name(path)] = (path, rest.split())
    return table


def load_order(module: str, table: dict[str, tuple[str, list[str]]]) -> list[str]:
    """The files to load for `module`, dependencies first: depmod lists a module's whole closure,
    deepest last, and modprobe loads the list from its end."""
    try:
        path, dependencies = table[module_name(module)]
    except KeyError:
        raise KernelBuildError(f"module {module} is not in modules.dep") from None
    return [*reversed(dependencies), path]


# --- the specialized kernels -------------------------------------------------------------------


@dataclass(frozen=True)
class SpecializedKernel:
    """The specialized kernel, with its build tree kept for relinking."""

    source_version: str
    config_hash: str
    config: Path
    vmlinux: Path  # ELF with the PVH note: what QEMU, Firecracker and Xen PVH start directly
    bzimage: Path
    build_dir: Path  # the kernel's O= tree, for embed_initramfs
    source_dir: Path
    build_seconds: float

    @property
    def directory(self) -> Path:
        return self.config.parent


def specialized_kernel(drivers: str = "kernel") -> SpecializedKernel:
    """The specialized kernel (QEMU and Xen PVH alike), built on first use (minutes) and cached by
    the hash of its final configuration and the source package version; drivers="python" is the
    Xen variant without Linux's net and block front-ends (kconfig.fragment)."""
    debian_packages.ensure_installed([SOURCE_PACKAGE, *BUILD_PACKAGES])
    source_version = _installed_source_version()
    source_dir = _unpacked_source(source_version)
    options = kconfig.fragment(drivers)
    config_text = _configuration(options, source_dir, source_version)
    key = kconfig.config_hash(config_text, source_version)
    directory = _kernel_dir(key)
    with _locked(directory):
        if not (directory / "kernel.json").exists():
            _build(config_text, key, source_version, source_dir, directory)
    return _load_specialized(directory)


def find_specialized_kernel(drivers: str = "kernel") -> SpecializedKernel | None:
    """The cached specialized kernel (of that variant) if one was built from the installed
    source; never builds, nor even configures."""
    source_version = debian_packages.installed_version(SOURCE_PACKAGE)
    if source_version is None:
        return None
    config = _config_cache_path(kconfig.fragment(drivers), source_version)
    if not config.exists():
        return None
    key = kconfig.config_hash(config.read_text(), source_version)
    directory = _kernel_dir(key)
    if not (directory / "kernel.json").exists():
        return None
    return _load_specialized(directory)


def embed_initramfs(
    kernel: SpecializedKernel, cpio_archive: Path, out: Path, *, bzimage: Path | None = None
) -> Path:
    """Write to `out` the kernel's vmlinux relinked with `cpio_archive` (an uncompressed newc
    archive) as its built-in initramfs, and its bzImage to `bzimage` if given; returns `out`.

    Relinking reuses the cached build tree: only usr/ is rebuilt, then vmlinux and bzImage are
    linked again. The tree is locked for the whole step, and the tree's configuration points at a
    copy of the archive inside the tree, never at the caller's file, so no later build depends on
    a file that may vanish."""
    if not cpio_archive.is_file():
        raise FileNotFoundError(cpio_archive)
    if not (kernel.build_dir / "vmlinux").exists():
        # Relinking without the objects would be a full build, in the caller's time.
        raise KernelBuildError(f"the build tree {kernel.build_dir} is gone: build the kernel again")
    canonical = kernel.config.read_text()
    # A source makes INITRAMFS_ROOT_UID and _GID visible: give them values, or Kconfig restarts
    # its questions (answered with defaults) on every relink.
    embedded = kconfig.merge(
        canonical,
        {
            "INITRAMFS_SOURCE": str(_embedded_archive(kernel)),
            "INITRAMFS_ROOT_UID": 0,
            "INITRAMFS_ROOT_GID": 0,
        },
    )
    config_path = kernel.build_dir / ".config"
    with _locked(kernel.directory):
        # A fresh copy gets a fresh mtime, which is how Kbuild notices a new archive.
        _embedded_archive(kernel).unlink(missing_ok=True)
        shutil.copyfile(cpio_archive, _embedded_archive(kernel))
        try:
            cache.write_text(config_path, embedded)
            started = time.monotonic()
            _make(kernel.source_dir, kernel.build_dir, ["vmlinux", "bzImage"], log_name="embed")
            log.info("relinked %s in %.1f s", kernel.build_dir, time.monotonic() - started)
            cache.copy_file(kernel.build_dir / "vmlinux", out)
            if bzimage is not None:
                cache.copy_file(kernel.build_dir / "arch/x86/boot/bzImage", bzimage)
        finally:
            # The tree's .config stays the one its cache key names; the next embed sets its own.
            cache.write_text(config_path, canonical)
    return out


def _installed_source_version() -> str:
    version = debian_packages.installed_version(SOURCE_PACKAGE)
    if version is None:
        raise KernelBuildError(f"{SOURCE_PACKAGE} is not installed")
    return version


def _unpacked_source(source_version: str) -> Path:
    """The source tree of the installed linux-source package, unpacked once into the cache."""
    tarballs = sorted(Path("/usr/src").glob(f"{SOURCE_PACKAGE}.tar.*"))
    if not tarballs:
        raise KernelBuildError(f"no /usr/src/{SOURCE_PACKAGE}.tar.* from package {SOURCE_PACKAGE}")
    directory = cache.kernels_dir() / "source" / _safe_name(f"{SOURCE_PACKAGE}_{source_version}")
    with _locked(directory):
        if not directory.exists():
            log.info("unpacking %s into %s", tarballs[0], directory)
            with cache.staging_dir(directory) as staging:
                command = ["tar", "-xf", str(tarballs[0]), "-C", str(staging)]
                _check_run([*command, "--strip-components=1"], what="unpacking the source")
    return directory


def _configuration(options: kconfig.Fragment, source_dir: Path, source_version: str) -> str:
    """The final .config for `options`: tinyconfig, our fragment merged in, olddefconfig, then
    checked. Cached by fragment, source and compiler, since configuring takes seconds."""
    path = _config_cache_path(options, source_version)
    if path.exists():
        return path.read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".config-", dir=path.parent) as scratch:
        work = Path(scratch)
        _make(source_dir, work, ["tinyconfig"], log_name="config")
        config = work / ".config"
        config.write_text(kconfig.merge(config.read_text(), options))
        _make(source_dir, work, ["olddefconfig"], log_name="config")
        final = config.read_text()
    try:
        kconfig.verify(final, options)
    except kconfig.KconfigError as error:
        raise KernelBuildError(f"the kernel configuration is not as asked: {error}") from None
    cache.write_text(path, final)
    return final


def _config_cache_path(options: kconfig.Fragment, source_version: str) -> Path:
    digest = hashlib.sha256()
    for part in (source_version, _compiler_version(), ARCH, kconfig.render(options)):
        digest.update(part.encode() + b"\0")
    return cache.kernels_dir() / "configs" / f"{digest.hexdigest()[:16]}.config"


def _compiler_version() -> str:
    """The compiler shows in .config (CONFIG_CC_VERSION_TEXT): a new one makes a new config."""
    result = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=False)
    return result.stdout.partition("\n")[0]


def _kernel_dir(key: str) -> Path:
    return cache.kernels_dir() / "specialized" / key[:16]


def _build(
    config_text: str,
    key: str,
    source_version: str,
    source_dir: Path,
    directory: Path,
) -> None:
    """Build vmlinux and bzImage in `directory`/build, then publish them; kernel.json, written
    last, marks the kernel finished. A killed build leaves the tree to resume: Kbuild rebuilds
    any target whose command record (.cmd) it did not get to write."""
    build_dir = directory / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / ".config").write_text(config_text)
    log.info("building the kernel in %s (minutes; log in %s)", build_dir, directory)
    started = time.monotonic()
    _make(source_dir, build_dir, ["vmlinux", "bzImage"], log_name="build")
    seconds = time.monotonic() - started
    if (build_dir / ".config").read_text() != config_text:
        raise KernelBuildError(f"the build changed its configuration: see {build_dir}/.config")
    if not elfnotes.has_pvh_note(build_dir / "vmlinux"):
        raise KernelBuildError(f"{build_dir}/vmlinux has no PVH entry note (CONFIG_PVH?)")
    cache.copy_file(build_dir / "vmlinux", directory / "vmlinux")
    cache.copy_file(build_dir / "arch/x86/boot/bzImage", directory / "bzImage")
    cache.write_text(directory / "config", config_text)
    manifest = {
        "source_version": source_version,
        "config_hash": key,
        "build_seconds": round(seconds, 1),
    }
    cache.write_text(directory / "kernel.json", json.dumps(manifest, indent=2) + "\n")
    log.info("built the kernel in %.0f s", seconds)


def _load_specialized(directory: Path) -> SpecializedKernel:
    manifest = json.loads((directory / "kernel.json").read_text())
    return SpecializedKernel(
        source_version=manifest["source_version"],
        config_hash=manifest["config_hash"],
        config=directory / "config",
        vmlinux=directory / "vmlinux",
        bzimage=directory / "bzImage",
        build_dir=directory / "build",
        source_dir=_source_dir(manifest["source_version"]),
        build_seconds=manifest["build_seconds"],
    )


def _source_dir(source_version: str) -> Path:
    return cache.kernels_dir() / "source" / _safe_name(f"{SOURCE_PACKAGE}_{source_version}")


def _embedded_archive(kernel: SpecializedKernel) -> Path:
    return kernel.build_dir / "unibench-initramfs.cpio"  # Kbuild takes a lone *.cpio as is


def _make(source_dir: Path, build_dir: Path, targets: Sequence[str], *, log_name: str) -> None:
    """Run make out of tree (O=), so that one unpacked source serves every configuration; the
    output goes to <log_name>.log beside the tree, its tail into the error on failure."""
    jobs = len(os.sched_getaffinity(0))
    command = [
        "make",
        "-C",
        str(source_dir),
        f"O={build_dir}",
        f"ARCH={ARCH}",
        f"-j{jobs}",
        *targets,
    ]
    # Keep this host's name and user out of the image.
    env = {**os.environ, "KBUILD_BUILD_USER": "unibench", "KBUILD_BUILD_HOST": "unibench"}
    log_path = build_dir.parent / f"{log_name}.log"
    with log_path.open("a") as log_file:
        log_file.write(f"\n$ {' '.join(command)}\n")
        log_file.flush()
        result = subprocess.run(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise KernelBuildError(
            f"make {' '.join(targets)} failed (exit {result.returncode}); log {log_path}:\n{tail}"
        )


def _check_run(command: Sequence[str], *, what: str) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        raise KernelBuildError(f"{what} failed: {' '.join(command)}\n{result.stderr[-2000:]}")


def _locked(directory: Path) -> contextlib.AbstractContextManager[None]:
    """The lock of a cached artifact: a file beside its directory, so that it outlives attempts
    that remove or rename the directory."""
    return cache.locked(directory.with_name(directory.name + ".lock"))


def _safe_name(text: str) -> str:
    """A version string as a file name (Debian versions may hold ':' and '~')."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


# --- command line ------------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unikernel.toolchain.kernel",
        description="Build (or find in the cache) the kernels under unikernel images.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--specialized", action="store_true", help="the specialized kernel")
    which.add_argument("--generic", action="store_true", help="Debian's cloud kernel")
    parser.add_argument(
        "--drivers",
        choices=DRIVERS,
        default="kernel",
        help="with --specialized: python, the Xen variant without Linux's net and block"
        " front-ends (for images with our own); kernel (the default), the one with them",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        kernel: GenericKernel | SpecializedKernel = (
            generic_kernel() if args.generic else specialized_kernel(args.drivers)
        )
    except (KernelBuildError, debian_packages.PackageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = _summary(kernel)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, value in summary.items():
            print(f"{name}: {value}")
    return 0


def _summary(kernel: GenericKernel | SpecializedKernel) -> dict[str, object]:
    summary: dict[str, object] = {}
    for field in dataclasses.fields(kernel):
        value = getattr(kernel, field.name)
        if isinstance(value, Path):
            value = str(value)
        elif field.name == "modules":
            value = {name: [str(path) for path in paths] for name, paths in value.items()}
        summary[field.name] = value
    for path_field in ("vmlinux", "bzimage", "vmlinuz"):
        if hasattr(kernel, path_field):
            summary[f"{path_field}_bytes"] = getattr(kernel, path_field).stat().st_size
    return summary


if __name__ == "__main__":
    sys.exit(main())
