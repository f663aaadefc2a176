"""The boot workload for Linux targets: announce readiness, then answer UDP echo probes.

Usage: python3 -I -S boot_probe.py --udp-echo HOST:PORT

The ready marker is the first thing it does, so time to ready measures the launch up to the first
line of application code; binding the socket and answering belong to time to service.
"""

import socket
import sys
import time

READY_MARKER = "UNIBENCH-READY"


def parse_listen(argv: list[str]) -> tuple[str, int]:
    if len(argv) != 2 or argv[0] != "--udp-echo" or ":" not in argv[1]:
        raise SystemExit("usage: boot_probe.py --udp-echo HOST:PORT")
    host, port = argv[1].rsplit(":", 1)
    return host, int(port)


def serve_echo(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def main(argv: list[str]) -> None:
    # The guest's own monotonic clock, for targets whose host cannot see the guest boot start.
    sys.stdout.write(f"{READY_MARKER} monotonic={time.monotonic():.6f}\n")
    sys.stdout.flush()
    host, port = parse_listen(argv)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        serve_echo(sock)


if __name__ == "__main__":
    main(sys.argv[1:])
