"""A launch's block device on the host: the image file a workload declared as its disk's backing,
or a blank file made for the launch and removed when it ends.

Whatever runs the workload attaches the file its own way (a path for a process, a bind mount for
a container, virtio-blk for QEMU). Blank files are named for the process that made them, so the
next launch removes those whose maker has died.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from pathlib import Path
from typing import Protocol

from hostkit import cache
from hostkit.owners import pid_alive

_serial = itertools.count()
_NAME = re.compile(r"^(\d+)-\d+-[\w.-]+\.img$")


class DiskSpec(Protocol):
    """What a disk declaration says (unikernel.devices.Disk has these)."""

    @property
    def name(self) -> str: ...
    @property
    def size_mib(self) -> int: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def backing(self) -> str | None: ...


def launch_disks_dir() -> Path:
    return cache.directory("launch-disks")


class LaunchDisk:
    """The host file behind one launch's disk; close() removes it if the launch made it."""

    def __init__(self, spec: DiskSpec) -> None:
        self.name = spec.name
        self.read_only = spec.read_only
        if spec.backing is not None:
            self.path = Path(spec.backing)
            if not self.path.is_file():
                raise FileNotFoundError(
                    f"disk {spec.name}: its backing file {self.path} does not exist; "
                    "make it first or declare no backing for a blank disk"
                )
            mode = os.R_OK if spec.read_only else os.R_OK | os.W_OK
            if not os.access(self.path, mode):
                raise PermissionError(f"disk {spec.name}: cannot open {self.path} as declared")
            self._made = False
            return
        if spec.size_mib <= 0:
            raise ValueError(f"disk {spec.name}: size_mib must be positive, not {spec.size_mib}")
        remove_stale()
        safe = re.sub(r"[^\w.-]", "_", spec.name)
        self.path = launch_disks_dir() / f"{os.getpid()}-{next(_serial)}-{safe}.img"
        with self.path.open("wb") as blank:
            blank.truncate(spec.size_mib << 20)  # sparse: reads as zeros, costs no disk
        self._made = True

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def close(self) -> None:
        if self._made:
            self.path.unlink(missing_ok=True)


def remove_stale() -> list[Path]:
    """Remove blank disks whose launching process is gone; the files removed."""
    removed = []
    directory = launch_disks_dir()
    for path in directory.iterdir() if directory.is_dir() else ():
        match = _NAME.match(path.name)
        if match and not pid_alive(int(match[1])):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed
