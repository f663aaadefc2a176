"""Where built baselines are cached, and how concurrent builders share that cache.

The cache lives outside the repository because its artefacts are large and reproducible. Each
artefact is named by the hash of its recipe, written under a temporary name and renamed into place,
so a reader never sees half a file. A per-artefact lock file makes a second builder wait for the
first instead of repeating a minute of work.
"""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from baselines.errors import BaselineError

DEFAULT_CACHE_DIR = Path("/var/cache/unibench")


def cache_dir(subdir: str) -> Path:
    """Return (creating it) `subdir` of `$UNIBENCH_CACHE`, or of /var/cache/unibench if unset."""
    root = Path(os.environ.get("UNIBENCH_CACHE") or DEFAULT_CACHE_DIR)
    path = root / subdir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BaselineError(
            f"cannot create the baseline cache directory {path}: {error}; "
            "set UNIBENCH_CACHE to a writable directory"
        ) from error
    return path


@contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if needed) across processes."""
    try:
        handle = lock_file.open("a")
    except OSError as error:
        raise BaselineError(
            f"cannot open the lock file {lock_file}: {error}; "
            "set UNIBENCH_CACHE to a writable directory"
        ) from error
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
