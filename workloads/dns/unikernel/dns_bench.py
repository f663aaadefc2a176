"""The dns suite's appliance: the zone of UNIBENCH_NAMES names (100, 1000 or 10000; compiled in
from zones/), memoised responses when UNIBENCH_MEMOISE is "on", served on UDP and TCP port 53.
Prints the line the harness waits for, as the Linux side's servers do, once it answers."""

from __future__ import annotations

import os

from unikernel.apps.dns.authority import Authority
from unikernel.apps.dns.service import DnsService
from unikernel.apps.dns.zone import Zone

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.apps.dns.zonefile import CompiledZone
    from unikernel.core.devices import Devices

READY_LINE = "dns-server: serving"  # as workloads/dns/dns_server.py says it


def zone_of(devices: Devices, names: str) -> Zone:
    path = f"zones/unibench-{names}.zone"
    if path not in devices.data:
        sizes = sorted(p for p in devices.data if p.startswith("zones/"))
        raise SystemExit(f"UNIBENCH_NAMES={names}: no {path} in the image; it has {sizes}")
    compiled: CompiledZone = devices.data[path]  # type: ignore[assignment]  # see config.py
    return Zone.from_compiled(compiled)


async def main(devices: Devices) -> int:
    names = os.environ.get("UNIBENCH_NAMES", "1000")
    memoise = os.environ.get("UNIBENCH_MEMOISE", "off")
    if memoise not in ("on", "off"):
        raise SystemExit(f"UNIBENCH_MEMOISE={memoise}: say on or off")
    authority = Authority([zone_of(devices, names)], memoise=memoise == "on")
    network = await devices.network().open()
    service = DnsService(network, authority)
    console = devices.console
    address = f"{network.address}:{service.port}"
    console.line(f"{READY_LINE} {names} names on {address} (memoise {memoise})")
    await service.serve()
    return 0
