"""Every kind of target the harness knows, by name."""

from __future__ import annotations

from harness.targets.base import Target
from harness.targets.docker import docker_targets
from harness.targets.linux_vm import linux_vm_targets
from harness.targets.process import ProcessTarget
from harness.targets.unikernel import unikernel_targets
from harness.targets.veth import VethTarget
from harness.targets.xen import xen_targets


def all_targets() -> dict[str, Target]:
    targets: list[Target] = [
        ProcessTarget(),
        *docker_targets(),
        *unikernel_targets(),
        VethTarget(),
        *linux_vm_targets(),
        *xen_targets(),
    ]
    return {target.name: target for target in targets}
