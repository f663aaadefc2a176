"""The tcp suite's server on Linux targets: Debian's own iperf3, in server mode.

Usage: python3 -I -S iperf3_server.py --listen HOST:PORT

iperf3 prints "Server listening on PORT" once its socket listens: that line is the ready
marker. --forceflush, because its output is a pipe to the harness, which would buffer it.
"""

import os
import sys


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] != "--listen" or ":" not in argv[1]:
        raise SystemExit("usage: iperf3_server.py --listen HOST:PORT")
    host, port = argv[1].rsplit(":", 1)
    command = ["iperf3", "--server", "--bind", host, "--port", port, "--forceflush"]
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        raise SystemExit("iperf3 is not installed here: apt-get install iperf3") from None


if __name__ == "__main__":
    main(sys.argv[1:])
