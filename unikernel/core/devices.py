"""What an application's `main(devices)` receives: the devices its `config.py` declared, each
already wired by the build to the driver of the image's target.

    async def main(devices: Devices) -> int:
        network = await devices.network().open()   # the first (or only) Network
        disk = devices.disk("disk0")               # a raw block device
        page = devices.data["site/index.html"]     # a file compiled into the image (bytes,
                                                   # or what its compiler made of them)
        devices.console.line("up")

The same application gets the same objects hosted, under QEMU and under Xen; only the drivers
underneath differ, and the image carries only its own target's.
"""

from __future__ import annotations

from unikernel.core.console import Console

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from unikernel.block.device import DiskDevice
    from unikernel.net.device import NetworkDevice


class DeviceError(LookupError):
    """The application asked for a device its config.py does not declare."""


class Devices:
    def __init__(
        self,
        console: Console,
        networks: Mapping[str, NetworkDevice] | None = None,
        disks: Mapping[str, DiskDevice] | None = None,
        data: Mapping[str, object] | None = None,
    ) -> None:
        self.console = console
        self.networks = dict(networks or {})
        self.disks = dict(disks or {})
        self.data = dict(data or {})

    def network(self, name: str | None = None) -> NetworkDevice:
        """The network `name`, or the first one declared."""
        return _pick(self.networks, name, "Network")

    def disk(self, name: str | None = None) -> DiskDevice:
        """The disk `name`, or the first one declared."""
        return _pick(self.disks, name, "Disk")


def _pick(found: Mapping[str, T], name: str | None, kind: str) -> T:
    if name is None and found:
        return next(iter(found.values()))
    if name is not None and name in found:
        return found[name]
    declared = ", ".join(found) or "none"
    wanted = f"{kind}({name!r})" if name else f"a {kind}"
    raise DeviceError(f"the app asked for {wanted}; its config.py declares {declared}")


if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")
