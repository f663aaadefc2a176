"""The boot probe as a unikernel: the boot layer prints the ready marker; the app then reports,
and either ends (the VM powers off with status 0) or, given a network, echoes the host's UDP
probe until stopped."""

from unikernel.devices import Console, Network
from unikernel.toolchain.app import App

app = App(
    name="boot-probe",
    main="boot_probe:main",
    devices=(Console(), Network()),
    memory_mib=128,
)
