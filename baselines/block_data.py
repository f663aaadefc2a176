"""The block suite's data: one file of real data that every target reads, made by fio.

fio writes it sequentially in 1 KiB units with `--verify=md5`, so every unit carries fio's verify
header (its own offset and the MD5 of its random contents): fio checks blocks against it, and so
does our appliance (unikernel/apps/blockread/stamps.py). The file is non-sparse and
incompressible, so no layer below can answer a read without reading.

Cached under <cache>/block-data/<recipe hash>/data.img, built when missing (about 4 s a GiB
here); `python -m baselines.block_data` builds it ahead of time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from hostkit import cache
from hostkit.errors import ArtifactError

SIZE_MIB = 1024
UNIT = 1024  # bytes stamped with one verify header: the smallest block the suite reads
FILE_NAME = "data.img"
RECIPE_VERSION = 1


def fio_write_argv(path: Path, size_mib: int) -> list[str]:
    return [
        "fio",
        "--name=block-data",
        f"--filename={path}",
        f"--size={size_mib}M",
        "--rw=write",
        f"--bs={UNIT}",
        "--verify=md5",
        "--do_verify=0",
        "--ioengine=psync",
        "--end_fsync=1",
        "--verify_state_save=0",  # else fio leaves a state file in the working directory
        "--output-format=terse",
    ]


def fio_version() -> str:
    if shutil.which("fio") is None:
        raise ArtifactError("fio is not installed: apt-get install fio (bootstrap does)")
    return subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()


def recipe_hash(size_mib: int = SIZE_MIB) -> str:
    recipe = {
        "fio": fio_version(),
        "argv": fio_write_argv(Path("X"), size_mib),
        "version": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def data_path(size_mib: int = SIZE_MIB) -> Path:
    """Where the data file is (or will be, once ensure_data_file() made it)."""
    return cache.root() / "block-data" / recipe_hash(size_mib)[:16] / FILE_NAME


def ensure_data_file(size_mib: int = SIZE_MIB) -> Path:
    """The data file, written if it is not cached yet."""
    path = data_path(size_mib)
    if path.is_file():
        return path
    with cache.locked(path.parent.with_suffix(".lock")):
        if path.is_file():
            return path
        with cache.staging_dir(path.parent) as staging:
            written = staging / FILE_NAME
            done = subprocess.run(
                fio_write_argv(written, size_mib), capture_output=True, text=True, check=False
            )
            if done.returncode != 0 or written.stat().st_size != size_mib << 20:
                raise ArtifactError(
                    f"fio could not write the block data: {done.stderr.strip()[-500:]}"
                )
            written.chmod(0o444)
            staging.chmod(0o755)  # readable by whatever reads the disk (QEMU, containers)
    return path


if __name__ == "__main__":
    print(ensure_data_file())
    sys.exit(0)
