"""The threads workload as a unikernel: thread creation and timer jitter on our scheduler.
Parameters come from the environment (UNIBENCH_MODE, UNIBENCH_COUNT, UNIBENCH_PERIOD,
UNIBENCH_ROUNDS): hosted, from the process; under QEMU, from the kernel command line."""

from unikernel.devices import Console
from unikernel.toolchain.app import App

app = App(name="threads-probe", main="threads_probe:main", devices=(Console(),), memory_mib=512)
