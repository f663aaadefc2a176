"""The boot probe as a unikernel: the boot layer prints the ready marker; the app then reports
and ends, so the VM powers off with status 0. (It answers the UDP probe once the network stack
is in the image.)"""

from unikernel.build.app import App, Console

app = App(name="boot-probe", main="boot_probe:main", devices=(Console(),), memory_mib=128)
