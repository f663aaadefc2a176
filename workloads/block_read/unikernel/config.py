"""The block-read appliance (unikernel.apps.blockread): random reads over the disk "data", the
block suite's counterpart to fio. Its code lives in the library OS; this folder holds only the
configuration. The harness wires the disk to the suite's data file."""

from unikernel.devices import Console, Disk
from unikernel.toolchain.app import App

app = App(
    name="block-read",
    main="unikernel.apps.blockread.appliance:main",
    devices=(Console(), Disk("data", read_only=True)),
    memory_mib=256,
)
