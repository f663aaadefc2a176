"""What `ldd` answers, worked out inside a rootfs archive: the files the dynamic loader opens.

We read PT_INTERP and DT_NEEDED from the ELF files and search the directories of the rootfs's own
/etc/ld.so.conf (on Debian the multiarch /lib/<triplet> and /usr/lib/<triplet>), then /lib and
/usr/lib, glibc's trusted directories. That is also where a loader without /etc/ld.so.cache looks,
as it must in an image that ships no cache. Unlike running `ldd` in a chroot, this needs no root,
no extracted tree, and runs nothing from the rootfs; the image's smoke test checks the outcome.
"""

import posixpath
from collections.abc import Iterable

from hostkit.elf import read_dynamic_info
from hostkit.errors import ArtifactError
from hostkit.rootfs_archive import RootfsArchive

LD_SO_CONF = "/etc/ld.so.conf"


def library_dirs(archive: RootfsArchive) -> list[str]:
    """The library search directories of the rootfs, in the order the loader tries them."""
    dirs: list[str] = []

    def read_conf(path: str) -> None:
        for raw_line in archive.read(path).decode().splitlines():
            line = raw_line.split("#", 1)[0].strip()
            if line.startswith("include "):
                for included in archive.glob(line.removeprefix("include ").strip()):
                    read_conf(included)
            elif line:
                dirs.append(line)

    if archive.exists(LD_SO_CONF):
        read_conf(LD_SO_CONF)
    return [*dirs, "/lib", "/usr/lib"]


def runtime_closure(archive: RootfsArchive, programs: Iterable[str]) -> set[str]:
    """The ELF files `programs`, their loader and their libraries, transitively.

    Returned as every path the loader opens: real paths, plus the symlinks crossed to reach them
    (such as /lib64 and /lib), which an image must also hold for those paths to work.
    """
    dirs = library_dirs(archive)
    paths: set[str] = set()
    parsed: set[str] = set()
    pending = [(program, "the caller") for program in programs]
    while pending:
        path, needed_by = pending.pop()
        try:
            resolved = archive.resolve(path)
        except FileNotFoundError as error:
            raise ArtifactError(f"{path}, needed by {needed_by}, is missing: {error}") from error
        paths.add(resolved.path)
        paths.update(resolved.symlinks)
        if resolved.path in parsed:
            continue
        parsed.add(resolved.path)
        info = read_dynamic_info(archive.read(resolved.path))
        if info.interpreter:
            pending.append((info.interpreter, resolved.path))
        for library in info.needed:
            pending.append((_find_library(archive, library, dirs, resolved.path), resolved.path))
    return paths


def _find_library(archive: RootfsArchive, name: str, dirs: list[str], needed_by: str) -> str:
    if "/" in name:  # a DT_NEEDED with a slash is a path, used as is
        return name
    for directory in dirs:
        candidate = posixpath.join(directory, name)
        if archive.exists(candidate):
            return candidate
    raise ArtifactError(f"{name}, needed by {needed_by}, is in none of {', '.join(dirs)}")
