"""The boot probe application: say it is up; given a network, answer the host's UDP probe.

With a network configured (the harness sets UNIKERNEL_IP when it gives the guest a link), it
echoes every datagram on UNIBENCH_PROBE_PORT (default 7) until stopped: the boot suite's
time_to_service is the first echo the host receives. Without one it ends at once, status 0.
"""

import os

from unikernel.core.console import Console
from unikernel.net.service import ADDRESS_VARIABLE, open_network

DEFAULT_PORT = 7


async def main() -> int:
    console = Console(1)
    console.line("boot-probe: up")
    if ADDRESS_VARIABLE not in os.environ:
        return 0
    network = await open_network()
    port = int(os.environ.get("UNIBENCH_PROBE_PORT", DEFAULT_PORT))
    with network.udp(port) as sock:
        console.line(f"boot-probe: echoing on {network.address}:{port}")
        while True:
            data, peer = await sock.recvfrom()
            await sock.sendto(data, peer)
