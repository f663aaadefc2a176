"""The debian-python image: the whole Debian rootfs, slimmed the way Debian's `-slim` images are.

Debian's official slim images drop documentation, manual pages and translations but keep the
copyright files, and configure dpkg so that packages installed later are slimmed too. We do the
same while copying the rootfs tarball, without extracting it.
"""

import fnmatch
import io
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO

from hostkit.rootfs_archive import member_path

# Bump when this module changes what goes into the image.
RECIPE_VERSION = 1

# Patterns as dpkg's path-exclude/path-include take them: a `*` also matches `/`.
EXCLUDE = (
    "/usr/share/doc/*",
    "/usr/share/groff/*",
    "/usr/share/info/*",
    "/usr/share/linda/*",
    "/usr/share/lintian/overrides/*",
    "/usr/share/locale/*",
    "/usr/share/man/*",
)
KEEP = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")
DPKG_CONFIG = "/etc/dpkg/dpkg.cfg.d/unibench-slim"


def is_dropped(path: str) -> bool:
    """Whether a slim image leaves `path` out (directories holding kept files aside)."""
    return _matches(path, EXCLUDE) and not _matches(path, KEEP)


def write_debian_slim(rootfs_tar: Path, out: BinaryIO) -> None:
    """Write the slimmed rootfs as a tar stream to `out`."""
    with (
        tarfile.open(rootfs_tar) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as image,
    ):
        members = source.getmembers()
        paths = [member_path(member.name) for member in members]
        needed_dirs = {
            parent for path in paths if _matches(path, KEEP) for parent in _parents(path)
        }
        for member, path in zip(members, paths, strict=True):
            if is_dropped(path) and path not in needed_dirs:
                continue
            image.addfile(member, source.extractfile(member) if member.isreg() else None)
        config_dir = members[paths.index(posixpath.dirname(DPKG_CONFIG))]
        _add_dpkg_config(image, config_dir.mtime)


def _add_dpkg_config(image: tarfile.TarFile, mtime: float) -> None:
    """Tell dpkg to keep leaving these files out of packages installed later."""
    lines = ["# unibench debian-python: slim like Debian's -slim images"]
    lines += [f"path-exclude={pattern}" for pattern in EXCLUDE]
    lines += [f"path-include={pattern}" for pattern in KEEP]
    data = ("\n".join(lines) + "\n").encode()
    entry = tarfile.TarInfo(DPKG_CONFIG.lstrip("/"))
    entry.size, entry.mode, entry.mtime = len(data), 0o644, mtime
    image.addfile(entry, io.BytesIO(data))


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def _parents(path: str) -> list[str]:
    parents = []
    while path != "/":
        path = posixpath.dirname(path)
        parents.append(path)
    return parents
