"""The boot suite: how long from the launch call until the workload is ready, and until it serves.

t0 is taken just before the launch call (the process spawn, `docker start`, the QEMU process,
`xl create`). time_to_ready ends when the workload's ready marker reaches the host's console
reader; time_to_service ends at the first reply to a UDP echo probe that the host sends from
before t0. Launch phases a target can tell apart (docker's create and start calls) come as extra
metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from harness.model import Measurement, Metric, Params
from harness.probes import UdpEchoProbe
from harness.suites.base import MEMORY, Param, RepeatContext, Suite
from harness.targets.base import Instance, Target, Workload
from unikernel.devices import Console, Network, Port
from workloads import linux_script, unikernel_app

TIME_TO_READY = Metric("time_to_ready", "s", "lower")
TIME_TO_SERVICE = Metric("time_to_service", "s", "lower")

BOOT_PROBE = Workload(
    name="boot-probe",
    script=linux_script("boot_probe", "boot_probe.py"),
    args=("--udp-echo", "{probe}"),
    devices=(Console(), Network(ports=(Port("probe", "udp", number=7),))),
    unikernel_app=unikernel_app("boot_probe"),
)


GUEST_LAUNCH_TO_KERNEL = Metric("guest_launch_to_kernel", "s", "lower")
GUEST_KERNEL_TO_MAIN = Metric("guest_kernel_to_main", "s", "lower")
GUEST_BOOT_LAYER = Metric("guest_boot_layer", "s", "lower")


def guest_phases(marker_line: str, launch_to_marker: float) -> list[Measurement]:
    """What the unikernel's marker says by its own boot clock: kernel start to Python's first
    line of ours (`boottime=`), and the boot layer's work from there to the marker (`ready=`).
    The rest of `launch_to_marker` (the host's t0 to the marker's arrival) came before the
    kernel started: QEMU's start-up and firmware, or Xen's toolstack building the domain and
    running its device scripts, plus the console's way back."""
    fields = dict(item.split("=", 1) for item in marker_line.split() if "=" in item)
    try:
        booted, ready = float(fields["boottime"]), float(fields["ready"])
    except (KeyError, ValueError):
        return []  # a Linux workload's marker: the host cannot see where its boot began
    layer = Measurement(GUEST_BOOT_LAYER, ready - booted)
    if fields.get("target") == "hosted":  # the boot clock is the host's, started long ago
        return [layer]
    return [
        Measurement(GUEST_LAUNCH_TO_KERNEL, launch_to_marker - ready),
        Measurement(GUEST_KERNEL_TO_MAIN, booted),
        layer,
    ]


class BootSuite(Suite):
    name = "boot"
    params: ClassVar[Mapping[str, Param] | None] = {"memory": MEMORY}
    description = "launch to ready marker and to first reply to a UDP probe"
    metrics = (TIME_TO_READY, TIME_TO_SERVICE)

    def __init__(self, workload: Workload = BOOT_PROBE) -> None:
        self._workload = workload

    def workload(self, target: Target) -> Workload:
        return self._workload

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        instance = ctx.create(self._workload)
        address = instance.address("probe")
        if address is None:  # nothing to probe: a unikernel built without a network device
            t0 = instance.start()
            ready, line = instance.ready(ctx.deadline)
            return [
                Measurement(TIME_TO_READY, ready - t0),
                *self._phases(instance),
                *guest_phases(line, ready - t0),
            ]
        with UdpEchoProbe(address, ctx.deadline, namespace=instance.namespace) as probe:
            if instance.probe_during_launch:
                probe.start()
            t0 = instance.start()
            if not instance.probe_during_launch:
                probe.start()
            ready, line = instance.ready(ctx.deadline)
            try:
                served = probe.wait(gone=lambda: instance.console.closed)
            except TimeoutError as error:  # ready, yet deaf: the guest's last words say why
                raise TimeoutError(f"{error}; {instance.console.describe_tail()}") from None
        return [
            Measurement(TIME_TO_READY, ready - t0),
            Measurement(TIME_TO_SERVICE, served - t0),
            *self._phases(instance),
            *guest_phases(line, ready - t0),
        ]

    @staticmethod
    def _phases(instance: Instance) -> list[Measurement]:
        return [
            Measurement(Metric(f"phase_{phase}", "s", "lower"), seconds)
            for phase, seconds in instance.phases.items()
        ]
