"""The boot probe application: say it is up; given a network, answer the host's UDP probe.

With its network configured (the launcher sets UNIKERNEL_IP when it gives the guest a link), it
echoes every datagram on UNIBENCH_PROBE_PORT (default 7) until stopped: the boot suite's
time_to_service is the first echo the host receives. Without one it ends at once, status 0.
"""

import os

from unikernel.core.devices import Devices

DEFAULT_PORT = 7


async def main(devices: Devices) -> int:
    console = devices.console
    console.line("boot-probe: up")
    if not devices.network().configured():
        return 0
    network = await devices.network().open()
    port = int(os.environ.get("UNIBENCH_PROBE_PORT", DEFAULT_PORT))
    with network.udp(port) as sock:
        console.line(f"boot-probe: echoing on {network.address}:{port}")
        while True:
            data, peer = await sock.recvfrom()
            await sock.sendto(data, peer)
