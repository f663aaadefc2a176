"""The dynamic web appliance as the web suite runs it: the microblog (users, follow, post,
timeline: unikernel/apps/microblog) over HTTP, its data in the writable log store on the disk
"store", so it survives a reboot on the same disk. Its code lives in the library OS; this
folder holds only the configuration."""

from unikernel.devices import Console, Disk, Network, Port
from unikernel.toolchain.app import App

app = App(
    name="microblog",
    main="unikernel.apps.microblog.appliance:main",
    devices=(
        Console(),
        Network(ports=(Port("http", "tcp", number=80),)),
        Disk("store", size_mib=64),
    ),
    memory_mib=256,
)
