"""The `linux-veth` target: the workload as a Linux process in a namespace of its own, reached
over a veth pair from another namespace. Linux to Linux on a link like the unikernels' TAP
link: the tcp suite's reference, with offloads on or off (the `offloads` parameter)."""

from __future__ import annotations

from harness.targets.base import Availability, Instance, LaunchSettings, Target, Workload
from harness.targets.process import ProcessInstance, host_python
from hostkit import namespaces
from hostkit.namespaces import VethLink


def veth_instance(workload: Workload, settings: LaunchSettings, link: VethLink) -> Instance:
    """The workload's process, started inside the server's namespace, reached from the
    client's; the link goes with it."""
    ports = {port.name: (link.guest_address, port.number) for port in workload.ports}
    listen = {name: f"{host}:{port}" for name, (host, port) in ports.items()}
    argv = [host_python(), *workload.argv(listen, str(workload.script), settings.workload_params)]
    return ProcessInstance(
        workload.name,
        argv,
        ports,
        settings,
        namespace=link.name,
        spawn_namespace=link.server.name,
        owned=(link,),
    )


class VethTarget(Target):
    name = "linux-veth"
    description = "a Linux process in a namespace, reached over a veth pair (the tcp reference)"

    def availability(self) -> Availability:
        why_not = namespaces.available()
        if why_not is not None:
            return Availability(False, why_not, "run as root with iproute2 installed")
        return Availability(True)

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        offloads = str(settings.workload_params.get("offloads", "on")) != "off"
        link = VethLink(offloads=offloads)
        try:
            return veth_instance(workload, settings, link)
        except BaseException:
            link.close()
            raise

    def metadata(self) -> dict[str, object]:
        return {"accel": "native"}
