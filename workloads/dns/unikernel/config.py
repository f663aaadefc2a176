"""The DNS appliance as the dns suite runs it: authoritative for the benchmark zone of 100,
1,000 or 10,000 names (UNIBENCH_NAMES picks one), with memoised responses or not
(UNIBENCH_MEMOISE). The zone files are made here from the one description of the zone the Linux
servers are given too (workloads/dns/dns_server.py), then compiled into the image by the DNS
library's zone compiler: the image holds parsed records, not text."""

from pathlib import Path

from unikernel.devices import Console, Data, Network, Port
from unikernel.toolchain.app import App
from workloads.dns.dns_server import ZONE_SIZES, zone_text

ZONES = Path(__file__).resolve().parent / "zones"  # made here, never edited: see .gitignore


def write_zones() -> None:
    ZONES.mkdir(exist_ok=True)
    for names in ZONE_SIZES:
        path = ZONES / f"unibench-{names}.zone"
        text = zone_text(names)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)


write_zones()

app = App(
    name="dns",
    main="dns_bench:main",
    devices=(
        Console(),
        Network(ports=(Port("dns", "udp", number=53),)),
        Data("zones", compiler="unikernel.apps.dns.zonefile:compile_data"),
    ),
    memory_mib=256,
)
