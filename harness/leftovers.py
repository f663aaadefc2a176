"""What harness processes that died left behind, found and removed.

A harness killed with SIGKILL (or by the OOM killer, or a lost machine) runs no clean-up, so
every `bench run` begins by removing what dead ones left, whichever targets it runs, and
`bench doctor --clean` does the same on demand. Each kind of thing carries its owner (see
hostkit.owners): processes by their environment, namespaces, disks, overlays and containers by
name or label, Xen guests by name, a Xen lab by its state file. A Xen lab a user started with
`bench lab xen up` is theirs, and stays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection

from harness.targets.linux_vm import OVERLAYS
from harness.xen import lab
from hostkit import cache, disk_image, launch_disk, namespaces, owners

DOCKER_SOCKET = "/var/run/docker.sock"
Log = Callable[[str], None]


def sweep(log: Log) -> list[str]:
    """Removes every leftover of dead harnesses; one line per thing removed, each also logged.
    Processes go first: one inside a namespace would keep it alive after its name is gone."""
    removed = [
        f"process {leftover.pid} ({leftover.command[:80]}) of dead harness {leftover.owner}"
        for leftover in owners.kill_orphans()
    ]
    removed += [f"network namespace {name}" for name in namespaces.remove_stale()]
    removed += [f"launch disk {path}" for path in launch_disk.remove_stale()]
    overlays = cache.directory(OVERLAYS)
    removed += [f"VM overlay {path}" for path in disk_image.remove_stale_overlays(overlays)]
    removed += _containers()
    stopped = lab.stop_orphaned()
    if stopped is not None:
        removed.append(f"the Xen lab (QEMU pid {stopped.pid}) of dead harness {stopped.owner}")
    for line in removed:
        log(f"removed {line}, left by a harness that died")
    return removed


def sweep_own(log: Log, kept: Collection[str]) -> list[str]:
    """Removes what this harness's own launches left once all of them stopped (a stop that
    failed), but for the network namespaces in `kept` (held before the run began)."""
    removed = [f"network namespace {name}" for name in namespaces.remove_held(kept)]
    for line in removed:
        log(f"removed {line}, left by a launch of this run whose stop failed")
    return removed


def _containers() -> list[str]:
    """Containers of dead harnesses, if an engine answers; none is not an error here."""
    if not os.path.exists(DOCKER_SOCKET):
        return []
    import docker  # only where an engine may be: the SDK takes a while to import

    from harness.targets.docker import remove_stale_containers

    with contextlib.suppress(docker.errors.DockerException):
        return remove_stale_containers(docker.from_env(timeout=10))
    return []
