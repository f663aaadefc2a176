"""The boot suite: how long from the launch call until the workload is ready, and until it serves.

t0 is taken just before the launch call (the process spawn, `docker start`, the QEMU process,
`xl create`). time_to_ready ends when the workload's ready marker reaches the host's console
reader; time_to_service ends at the first reply to a UDP echo probe that the host sends from
before t0. Launch phases a target can tell apart (docker's create and start calls) come as extra
metrics.
"""

from __future__ import annotations

from harness.model import Measurement, Metric, Params
from harness.probes import UdpEchoProbe
from harness.suites.base import RepeatContext, Suite
from harness.targets.base import Port, Target, Workload
from workloads import script

TIME_TO_READY = Metric("time_to_ready", "s", "lower")
TIME_TO_SERVICE = Metric("time_to_service", "s", "lower")

BOOT_PROBE = Workload(
    name="boot-probe",
    script=script("boot_probe.py"),
    args=("--udp-echo", "{probe}"),
    ports=(Port("probe", "udp"),),
)


class BootSuite(Suite):
    name = "boot"
    description = "launch to ready marker and to first reply to a UDP probe"
    metrics = (TIME_TO_READY, TIME_TO_SERVICE)

    def __init__(self, workload: Workload = BOOT_PROBE) -> None:
        self._workload = workload

    def workload(self, target: Target) -> Workload:
        return self._workload

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        instance = ctx.create(self._workload)
        with UdpEchoProbe(instance.address("probe"), deadline=ctx.deadline) as probe:
            if instance.probe_during_launch:
                probe.start()
            t0 = instance.start()
            if not instance.probe_during_launch:
                probe.start()
            ready = instance.console.wait_for(self._workload.ready_marker, ctx.deadline)
            served = probe.wait()
        measurements = [
            Measurement(TIME_TO_READY, ready - t0),
            Measurement(TIME_TO_SERVICE, served - t0),
        ]
        measurements += [
            Measurement(Metric(f"phase_{phase}", "s", "lower"), seconds)
            for phase, seconds in instance.phases.items()
        ]
        return measurements
