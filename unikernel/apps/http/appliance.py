"""Running an HTTP appliance: where to listen, the line that says it serves, the server.

    async def main(devices: Devices) -> int:
        return await serve_http(devices, site.handle, "the static site")

The port is 80 unless UNIBENCH_LISTEN says HOST:PORT (a launcher that gives the app a place
to listen: a process or container in socket mode). In socket mode (UNIKERNEL_NETWORK=sockets,
hosted builds) the host kernel's TCP carries the same server, bound to that HOST.
"""

from __future__ import annotations

import os

from unikernel.apps.http.server import HTTP_PORT, HttpServer
from unikernel.net.service import ADDRESS_VARIABLE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from unikernel.apps.http.messages import Handler
    from unikernel.core.devices import Devices

READY_LINE = "web-server: serving"  # as the Linux side's servers say it (workloads/web)
LISTEN_VARIABLE = "UNIBENCH_LISTEN"


def listen_place(environ: Mapping[str, str]) -> tuple[str | None, int]:
    """The host (None: the network's own address) and port UNIBENCH_LISTEN names."""
    text = environ.get(LISTEN_VARIABLE, "")
    if not text:
        return None, HTTP_PORT
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"{LISTEN_VARIABLE}={text!r}: say HOST:PORT, such as 0.0.0.0:8080")
    return host or None, int(port)


async def serve_http(devices: Devices, handler: Handler, what: str) -> int:
    """Serve `handler` on the app's network until stopped; says READY_LINE once listening."""
    host, port = listen_place(os.environ)
    if host is not None:
        # Socket mode binds the address the network is given: this one. (Our own stack has
        # its address from the launcher already, and keeps it.)
        os.environ.setdefault(ADDRESS_VARIABLE, f"{host}/32")
    network = await devices.network().open_streams()
    server = HttpServer(network, handler, port, log=devices.console.line)
    server.listen()
    devices.console.line(f"{READY_LINE} {what} on {network.address}:{port}")
    await server.serve()
    return 0
