"""A rootfs tarball read in place, by absolute paths as seen from inside the rootfs.

Symbolic links are followed the way the kernel follows them inside a chroot: an absolute target
starts again from the rootfs's own root, never the host's. Debian's merged /usr makes this matter:
/lib is a link to usr/lib, and the loader path /lib64/ld-linux-x86-64.so.2 crosses three links.
"""

import fnmatch
import posixpath
import tarfile
from dataclasses import dataclass

MAX_SYMLINKS = 40  # Linux's limit before ELOOP


@dataclass(frozen=True)
class Resolved:
    path: str  # the real path: no component of it is a symlink
    symlinks: tuple[str, ...]  # the symlinks crossed to get there, in order


def member_path(name: str) -> str:
    """The absolute rootfs path of a tar member name: "./usr/bin" and "usr/bin" give "/usr/bin"."""
    return posixpath.normpath("/" + name)


class RootfsArchive:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar
        self._members = {member_path(m.name): m for m in tar.getmembers()}

    def paths(self) -> list[str]:
        """Every path in the archive, in archive order."""
        return list(self._members)

    def member(self, path: str) -> tarfile.TarInfo:
        """The entry stored at exactly `path` (a symlink is not followed)."""
        return self._members[path]

    def exists(self, path: str) -> bool:
        try:
            self.resolve(path)
        except FileNotFoundError:
            return False
        return True

    def glob(self, pattern: str) -> list[str]:
        """The paths matching a shell pattern, sorted (a `*` also matches `/`)."""
        return sorted(p for p in self._members if fnmatch.fnmatchcase(p, pattern))

    def resolve(self, path: str) -> Resolved:
        """Follow every symlink in `path`; FileNotFoundError if a component is missing."""
        pending = [part for part in path.split("/") if part]
        current = "/"
        symlinks: list[str] = []
        while pending:
            part = pending.pop(0)
            if part == ".":
                continue
            if part == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, part)
            member = self._members.get(candidate)
            if member is None:
                raise FileNotFoundError(f"{path}: {candidate} is not in the rootfs")
            if not member.issym():
                current = candidate
                continue
            if len(symlinks) == MAX_SYMLINKS:
                raise FileNotFoundError(f"{path}: too many levels of symbolic links")
            symlinks.append(candidate)
            if member.linkname.startswith("/"):
                current = "/"
            pending[:0] = [part for part in member.linkname.split("/") if part]
        return Resolved(current, tuple(symlinks))

    def read(self, path: str) -> bytes:
        """The contents of the regular file at `path`, following symlinks."""
        real = self.resolve(path).path
        stream = self._tar.extractfile(self._members[real])
        if stream is None:
            raise IsADirectoryError(f"{path}: {real} is not a regular file")
        with stream:
            return stream.read()
