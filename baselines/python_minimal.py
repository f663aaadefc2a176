"""The python-minimal image: the interpreter and only what it needs, cut out of a Debian rootfs.

It holds /usr/bin/python3.11 and its python3 link, the shared libraries and loader it and the
standard library's extension modules link, the standard library as python3-minimal installs it
(the files dpkg lists for its packages, with their byte-code caches, so start-up does not
recompile; the rootfs also holds the full standard library, for the slim image), /etc/passwd and
/etc/group, /tmp and /root. No shell, no coreutils, no package manager: the container counterpart of
the unikernel's initramfs.
"""

import io
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO

from hostkit.ldd import runtime_closure
from hostkit.rootfs_archive import RootfsArchive

# Bump when this module changes what goes into the image.
RECIPE_VERSION = 2

PYTHON = "/usr/bin/python3"  # a link to python3.11; both end up in the image
STDLIB = "/usr/lib/python3.11"
EXTENSIONS = f"{STDLIB}/lib-dynload"
BASE_FILES = ("/etc/passwd", "/etc/group", "/tmp", "/root")
MINIMAL_PACKAGES = ("libpython3.11-minimal", "python3.11-minimal")


def minimal_stdlib(archive: RootfsArchive) -> list[str]:
    """The standard library files of python3-minimal's packages, and their byte-code caches."""
    listed: set[str] = set()
    for package in MINIMAL_PACKAGES:
        for file_list in archive.glob(f"/var/lib/dpkg/info/{package}*.list"):
            listed.update(archive.read(file_list).decode().splitlines())
    stdlib = {path for path in listed if path.startswith(STDLIB + "/")}
    for path in list(stdlib):
        if path.endswith(".py"):
            folder, name = posixpath.split(path)
            cached = f"{folder}/__pycache__/{name[:-3]}.cpython-311.pyc"
            if archive.exists(cached):
                stdlib.add(cached)
    return sorted(stdlib)


def select_paths(archive: RootfsArchive) -> set[str]:
    """Every rootfs path the image holds, parent directories included."""
    stdlib = minimal_stdlib(archive)
    extensions = [p for p in stdlib if p.startswith(EXTENSIONS + "/") and p.endswith(".so")]
    selected = runtime_closure(archive, [PYTHON, *extensions])
    selected.update(BASE_FILES)
    for path in stdlib:
        # Debian links sitecustomize.py to /etc/python3.11: keep what such links point at.
        resolved = archive.resolve(path)
        selected.add(resolved.path)
        selected.update(resolved.symlinks)
    for path in list(selected):
        parent = posixpath.dirname(path)
        while parent != "/":
            selected.add(parent)
            parent = posixpath.dirname(parent)
    return selected


def write_python_minimal(rootfs_tar: Path, out: BinaryIO) -> None:
    """Write the image's tar stream to `out`, keeping each entry's type, mode and owner."""
    with (
        tarfile.open(rootfs_tar) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as image,
    ):
        archive = RootfsArchive(source)
        # Sorted, a directory comes before what it holds.
        for path in sorted(select_paths(archive)):
            _copy_entry(archive, path, image)


def _copy_entry(archive: RootfsArchive, path: str, image: tarfile.TarFile) -> None:
    member = archive.member(path)
    entry = tarfile.TarInfo(path.lstrip("/"))
    entry.mode, entry.uid, entry.gid = member.mode, member.uid, member.gid
    entry.uname, entry.gname, entry.mtime = member.uname, member.gname, member.mtime
    if member.isreg() or member.islnk():
        # A hard link's other names may not be in the image: store its contents instead.
        data = archive.read(path)
        entry.size = len(data)
        image.addfile(entry, io.BytesIO(data))
    else:
        entry.type, entry.linkname = member.type, member.linkname
        image.addfile(entry)
