"""The Python runtime images are made of: Debian's python3.11, its shared libraries and its
standard library, cut from the same cached debootstrap rootfs as the Docker baselines, so that
the unikernel and the containers run the very same interpreter.

The rootfs tarball is unpacked once per recipe into the cache (only the interpreter, the
libraries it and the extension modules link, and the standard library), where the build walks
the import graph and picks files.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hostkit import cache
from hostkit.debootstrap import PYTHON_ROOTFS, ensure_rootfs
from hostkit.ldd import runtime_closure
from hostkit.rootfs_archive import RootfsArchive

PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
DYNLOAD = f"{STDLIB}/lib-dynload"
LOADER = "/lib64/ld-linux-x86-64.so.2"
LIBDIR = "/usr/lib/x86_64-linux-gnu"
MANIFEST = "closures.json"

Log = Callable[[str], None]


@dataclass(frozen=True)
class Runtime:
    """An unpacked runtime: `root` holds image paths, e.g. root / "usr/bin/python3.11"."""

    root: Path
    builtin_modules: frozenset[str]  # compiled into Debian's interpreter: no file to ship

    def host_path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    @property
    def stdlib(self) -> Path:
        return self.host_path(STDLIB)

    @property
    def dynload(self) -> Path:
        return self.host_path(DYNLOAD)

    def closure(self, programs: list[str]) -> list[str]:
        """Image paths of the programs, their loader and libraries, and the symlinks between."""
        manifest = json.loads((self.root / MANIFEST).read_text())
        found: set[str] = set()
        for program in programs:
            found.update(manifest[program])
        return sorted(found)


def ensure_runtime(log: Log | None = None) -> Runtime:
    rootfs = ensure_rootfs(PYTHON_ROOTFS, log)
    root = cache.root() / "unikernel" / f"runtime-{PYTHON_ROOTFS.recipe_hash()[:12]}"
    with cache.locked(root.with_suffix(".lock")):
        if not root.exists():
            with cache.staging_dir(root) as staging:
                _unpack(rootfs, staging)
    return Runtime(root=root, builtin_modules=_builtin_modules(root))


def _unpack(rootfs_tar: Path, into: Path) -> None:
    with tarfile.open(rootfs_tar) as tar:
        archive = RootfsArchive(tar)
        stdlib = [p for p in archive.paths() if p == STDLIB or p.startswith(STDLIB + "/")]
        extensions = [p for p in stdlib if p.startswith(DYNLOAD + "/") and p.endswith(".so")]
        wanted = set(stdlib) | runtime_closure(archive, [PYTHON, *extensions])
        members = [tar.getmember(archive.member(p).name) for p in sorted(wanted)]
        tar.extractall(into, members=members, filter="tar")
        # What each program needs, worked out now while the archive is open.
        manifest = {
            program: sorted(runtime_closure(archive, [program]))
            for program in [PYTHON, *extensions]
        }
    (into / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _builtin_modules(root: Path) -> frozenset[str]:
    """Asks the image's own interpreter, run through its own loader, which modules it builds in.

    The build host's Python may differ (pyenv builds _socket as an extension, Debian builds it
    in), and a builtin module needs no file in the image, so only the image's answer will do.
    """
    done = subprocess.run(
        [
            str(root / LOADER.lstrip("/")),
            "--library-path",
            str(root / LIBDIR.lstrip("/")),
            str(root / PYTHON.lstrip("/")),
            "-S",
            "-c",
            "import sys; print(' '.join(sys.builtin_module_names))",
        ],
        env={"PYTHONHOME": str(root / "usr")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the image's python3.11 does not start on this host: {done.stderr}")
    return frozenset(done.stdout.split())
