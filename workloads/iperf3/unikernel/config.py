"""The iperf3 appliance: an iperf3 server (`iperf3 -s`) on the unikernel's own TCP, the tcp
suite's peer for Debian's iperf3 client. Its code lives in the library OS
(unikernel.apps.iperf3), so this folder holds only the configuration."""

from unikernel.devices import Console, Network
from unikernel.toolchain.app import App

app = App(
    name="iperf3",
    main="unikernel.apps.iperf3.server:main",
    devices=(Console(), Network()),
    memory_mib=256,
)
