"""The dns suite's server on Linux targets: Debian's NSD or BIND9, authoritative for one zone.

Usage: python3 -I -S dns_server.py --server nsd|bind9 --listen HOST:PORT --names N
       python3 -I -S dns_server.py --server nsd|bind9 --listen HOST:PORT --zone FILE --origin NAME

Writes the benchmark zone of N names (zone_text: the same zone the unikernel's appliance has
compiled in), or copies the zone FILE whose apex is NAME (the conformance tests' own zones),
and the server's configuration into a folder of its own, starts the server in the
foreground, and prints READY_LINE once the server answers a query for the zone's SOA: both
servers log differently, and a listening socket is not yet a loaded zone. Stops the server and
removes the folder when stopped (SIGTERM, SIGINT).

The harness imports this module for zone_text and query_lines (the dnsperf query mix), so the
zone is written in one place. Runs inside containers and VMs as well as on the host: standard
library only, and only the part Debian's python3-minimal has (no shutil: docker-minimal).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

ORIGIN = "unibench.test."
ZONE_SIZES = (100, 1000, 10000)
READY_LINE = "dns-server: serving"
READY_TIMEOUT = 120.0  # BIND loading 10,000 names in an emulated VM takes a while
# Each server's program; the Debian package is named as the server is.
PROGRAMS = {"nsd": "nsd", "bind9": "named"}
SERVERS = tuple(PROGRAMS)
FOLDER_PREFIX = "unibench-dns-"  # then the pid of the script that made it

# Names every zone has besides its hosts: the apex's, and one of each case the server handles.
FIXED_RECORDS = (
    "@ SOA ns1 hostmaster 2026120601 7200 3600 1209600 300",
    "@ NS ns1",
    "@ NS ns2",
    "@ MX 10 mail",
    '@ TXT "v=spf1 mx -all"',
    "ns1 A 192.0.2.1",
    "ns2 A 192.0.2.2",
    "ns2 AAAA 2001:db8::2",
    "mail A 192.0.2.25",
    "mail AAAA 2001:db8::25",
    "www CNAME h0",  # a CNAME to a name in the zone
    "chain CNAME www",  # and a chain of them
    "outside CNAME www.example.org.",  # a CNAME out of the zone
    "sub NS ns.sub",  # a delegation, its glue below the cut
    "ns.sub A 192.0.2.53",
    "*.wild A 192.0.2.80",  # a wildcard
    "_sip._udp SRV 10 60 5060 h1",
    'deep.empty TXT "an empty non-terminal above"',
    # As long as a 4096-bit DKIM key: its answer does not fit 512 bytes, so it is truncated
    # over UDP without EDNS and asked again over TCP.
    "big TXT " + " ".join(f'"{n:03d}{"MIIBCgKCAQEA" * 20}"' for n in range(3)),
)
FIXED_NAMES: tuple[str, ...] = ("", "ns1", "ns2", "mail", "www", "chain", "outside", "sub")
FIXED_NAMES += ("ns.sub", "*.wild", "_sip._udp", "deep.empty", "big")


def host_records(index: int) -> Iterator[str]:
    """The records of host h<index>: every host has an address; some an IPv6 one, a mail
    exchanger, a text record; every tenth is an alias instead."""
    name = f"h{index}"
    if index % 10 == 9:
        yield f"{name} CNAME h{index - 1}"
        return
    yield f"{name} A 10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
    if index % 2 == 0:
        yield f"{name} AAAA 2001:db8::{index:x}"
    if index % 5 == 0:
        yield f"{name} MX 10 mail"
    if index % 7 == 0:
        yield f'{name} TXT "host {index}" "of the benchmark zone"'


def host_count(names: int) -> int:
    if names <= len(FIXED_NAMES):
        raise ValueError(f"a zone needs more than {len(FIXED_NAMES)} names, not {names}")
    return names - len(FIXED_NAMES)


def zone_text(names: int) -> str:
    """The benchmark zone of exactly `names` owner names, in RFC 1035 master format."""
    lines = [f"$ORIGIN {ORIGIN}", "$TTL 3600", *FIXED_RECORDS]
    for index in range(host_count(names)):
        lines += host_records(index)
    return "\n".join(lines) + "\n"


def query_lines(names: int, count: int = 10000, seed: int = 1) -> list[str]:
    """dnsperf's query file for the zone of `names` names: "NAME TYPE" lines in a mix of names
    present (most), aliases, names absent (NXDOMAIN), types absent (NODATA), the wildcard and
    the delegation, in a fixed pseudo-random order."""
    hosts = host_count(names)
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        index = rng.randrange(hosts)
        roll = rng.random()
        if roll < 0.55:
            lines.append(f"h{index}.{ORIGIN} A")
        elif roll < 0.65:
            lines.append(f"h{index}.{ORIGIN} AAAA")  # NODATA for odd hosts
        elif roll < 0.70:
            lines.append(f"h{index}.{ORIGIN} MX")
        elif roll < 0.75:
            lines.append(f"h{index}.{ORIGIN} TXT")
        elif roll < 0.90:
            lines.append(f"absent{index}.{ORIGIN} A")  # NXDOMAIN
        elif roll < 0.95:
            lines.append(f"x{index}.wild.{ORIGIN} A")
        elif roll < 0.98:
            lines.append(f"host{index}.sub.{ORIGIN} A")  # a referral
        else:
            lines.append(f"{ORIGIN} SOA")
    return lines


def nsd_config(folder: str, host: str, port: int, origin: str) -> str:
    return f"""server:
    ip-address: {host}@{port}
    port: {port}
    username: ""
    chroot: ""
    zonesdir: "{folder}"
    database: ""
    zonelistfile: "{folder}/zone.list"
    xfrdfile: "{folder}/xfrd.state"
    pidfile: "{folder}/nsd.pid"
    logfile: ""
    hide-version: yes
    hide-identity: yes
    verbosity: 1
    # Debian builds NSD with response rate limiting on (200 a second from one /24): a
    # benchmark's single client would measure the limiter.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "{origin}"
    zonefile: "{folder}/zone"
"""


def bind9_config(folder: str, host: str, port: int, origin: str) -> str:
    listen = "any" if host == "0.0.0.0" else host
    return f"""options {{
    directory "{folder}";
    pid-file "{folder}/named.pid";
    session-keyfile "{folder}/session.key";
    managed-keys-directory "{folder}";
    listen-on port {port} {{ {listen}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    dnssec-validation no;
    notify no;
    version none;
}};
controls {{ }};
zone "{origin}" {{ type primary; file "{folder}/zone"; }};
"""


def server_argv(
    program: str, server: str, folder: str, host: str, port: int, origin: str
) -> list[str]:
    """Writes the server's configuration into `folder`; the command that runs it in the
    foreground, logging to standard error."""
    if server == "nsd":
        with open(os.path.join(folder, "nsd.conf"), "w") as f:
            f.write(nsd_config(folder, host, port, origin))
        return [program, "-d", "-c", os.path.join(folder, "nsd.conf")]
    if server == "bind9":
        with open(os.path.join(folder, "named.conf"), "w") as f:
            f.write(bind9_config(folder, host, port, origin))
        return [program, "-g", "-c", os.path.join(folder, "named.conf")]
    raise SystemExit(f"--server {server}: say nsd or bind9")


def soa_query(query_id: int, origin: str) -> bytes:
    """A query for the zone's SOA, built by hand: the readiness check needs nothing more."""
    labels = b"".join(bytes([len(part)]) + part.encode() for part in origin.split(".") if part)
    return struct.pack("!6H", query_id, 0, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!2H", 6, 1)


def answers(host: str, port: int, origin: str, timeout: float) -> bool:
    """Whether the server answers the SOA query authoritatively (AA, NOERROR)."""
    query_id = random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(soa_query(query_id, origin), (host, port))
            reply = sock.recv(4096)
        except OSError:  # refused (not listening yet) or timed out
            return False
    if len(reply) < 12:
        return False
    reply_id, flags = struct.unpack("!2H", reply[:4])
    return bool(reply_id == query_id) and flags & 0x0400 != 0 and flags & 0x000F == 0


def program_version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    output = (done.stdout + done.stderr).strip().splitlines()
    return output[0] if output else "unknown"


def find_program(program: str) -> str | None:
    """Where `program` is: on PATH, or in the sbin folders servers live in (a minimal
    container's PATH may have only /usr/bin)."""
    folders = [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/sbin"]
    for folder in folders:
        path = os.path.join(folder, program)
        if folder and os.access(path, os.X_OK):
            return path
    return None


def remove_tree(folder: str) -> None:
    """The folder and all in it, as far as possible: what the server wrote there too."""
    for root, folders, files in os.walk(folder, topdown=False):
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(root, name))
        for name in folders:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, name))
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def remove_stale_folders() -> None:
    """The folders of scripts killed outright (kill -9, or a server that outlived the process
    target's grace after SIGTERM), which had no time to clean up: each is named for the pid
    that made it."""
    folder = tempfile.gettempdir()
    for name in os.listdir(folder):
        if not name.startswith(FOLDER_PREFIX):
            continue
        owner = name[len(FOLDER_PREFIX) :].split("-")[0]
        if not owner.isdigit():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            remove_tree(os.path.join(folder, name))
        except PermissionError:
            pass  # alive, and someone else's


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="NSD or BIND9, authoritative for one zone")
    parser.add_argument("--server", choices=SERVERS, required=True)
    parser.add_argument("--listen", required=True, help="HOST:PORT, UDP and TCP")
    zone = parser.add_mutually_exclusive_group(required=True)
    zone.add_argument("--names", type=int, help="the benchmark zone of this many names")
    zone.add_argument("--zone", help="a zone file to serve instead (with --origin)")
    parser.add_argument("--origin", help="the apex of --zone, as NAME.")
    args = parser.parse_args(argv)
    host, _, port_text = args.listen.rpartition(":")
    if not host or not port_text.isdigit():
        raise SystemExit(f"--listen {args.listen}: write it as HOST:PORT")
    if args.zone is not None and not (args.origin or "").endswith("."):
        raise SystemExit("--zone needs --origin, the zone's apex with its final dot")
    port = int(port_text)
    program = find_program(PROGRAMS[args.server])
    if program is None:
        raise SystemExit(f"{args.server} is not installed here: apt-get install {args.server}")
    origin = ORIGIN if args.zone is None else args.origin
    remove_stale_folders()
    folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
    try:
        if args.zone is None:
            with open(os.path.join(folder, "zone"), "w") as f:
                f.write(zone_text(args.names))
            what = f"{args.names} names"
        else:
            with open(args.zone, "rb") as source, open(os.path.join(folder, "zone"), "wb") as f:
                f.write(source.read())
            what = origin
        argv = server_argv(program, args.server, folder, host, port, origin)
        serve(args.server, argv, host, port, origin, what)
    finally:
        remove_tree(folder)


def serve(server: str, argv: list[str], host: str, port: int, origin: str, what: str) -> None:
    """Runs the server until it exits or we are stopped; says when it answers."""
    child = subprocess.Popen(argv)

    def stop(signum: int, frame: object) -> None:
        child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    probe_host = "127.0.0.1" if host == "0.0.0.0" else host
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while not answers(probe_host, port, origin, timeout=0.25):
            if child.poll() is not None:
                raise SystemExit(f"{argv[0]} exited with {child.returncode} before it answered")
            if time.monotonic() > deadline:
                raise SystemExit(f"{argv[0]} did not answer within {READY_TIMEOUT:.0f} s")
            time.sleep(0.05)
        version = program_version([argv[0], "-v"])
        print(f"{READY_LINE} {what} on {host}:{port} ({server}: {version})", flush=True)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
