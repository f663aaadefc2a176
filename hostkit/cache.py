"""The build cache: where kernels, rootfs tarballs, images and other costly artifacts are kept
between runs, outside the repository, each named by the hash of its recipe.

Artifacts appear only finished: each is written under a temporary name beside its final one and
renamed into place, so a build killed half-way leaves nothing that looks done. Builds of the same
artifact by two processes are serialized by a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/var/cache/unibench")


def root() -> Path:
    """$UNIBENCH_CACHE, else /var/cache/unibench."""
    return Path(os.environ.get("UNIBENCH_CACHE") or DEFAULT_ROOT)


def directory(name: str) -> Path:
    """The cache's folder `name`, created if missing."""
    path = root() / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"cannot create the cache folder {path}: {error}; set UNIBENCH_CACHE to a writable one"
        ) from error
    return path


def kernels_dir() -> Path:
    return root() / "kernels"


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created if missing) for the block; the lock goes
    with the process, so a killed holder never leaves it taken."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s: another process is building there", lock_path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with _temporary_beside(path) as temporary:
        temporary.write_bytes(data)
        temporary.chmod(0o644)  # mkstemp made it private
        os.replace(temporary, path)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def copy_file(source: Path, path: Path) -> None:
    """Copy `source` to `path` atomically (with its permission bits, not its times)."""
    with _temporary_beside(path) as temporary:
        shutil.copyfile(source, temporary)
        shutil.copymode(source, temporary)
        os.replace(temporary, path)


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh directory to fill; renamed to `final` when the block succeeds, removed otherwise.
    `final` must not exist yet (callers hold the artifact's lock and checked)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield staging
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A unique temporary path in `path`'s directory (same file system, so rename is atomic),
    removed if the block leaves it behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)
