"""The `linux-veth` target: the workload as a Linux process in a namespace of its own, reached
over a veth pair from another namespace. Linux to Linux on a link like the unikernels' TAP
link: the tcp suite's reference, with offloads on or off (LaunchSettings.offloads)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.targets.base import Availability, Instance, LaunchSettings, Workload
from harness.targets.process import ProcessTarget, process_instance
from hostkit import namespaces
from hostkit.namespaces import VethLink

if TYPE_CHECKING:
    from unikernel.devices import Offload


class VethTarget(ProcessTarget):
    name = "linux-veth"
    description = "a Linux process in a namespace, reached over a veth pair (the tcp reference)"

    def availability(self) -> Availability:
        why_not = namespaces.available()
        if why_not is not None:
            return Availability(False, why_not, "run as root with iproute2 installed")
        return Availability(True)

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        link = VethLink(offloads=settings.offloads is not False)
        try:
            # Started inside the server's namespace, reached from the client's.
            ports = {port.name: (link.guest_address, port.number) for port in workload.ports}
            return process_instance(
                workload,
                settings,
                ports,
                namespace=link.name,
                spawn_namespace=link.server.name,
                owned=(link,),
            )
        except BaseException:
            link.close()
            raise

    def link_offloads(self, workload: Workload) -> tuple[Offload, ...]:
        return ("off", "on")  # set on the veth pair per launch

    def metadata(self) -> dict[str, object]:
        return {"accel": "native"}
