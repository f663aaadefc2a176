"""Our Authority answers as NSD 4 does: both serve the test zone on loopback, dig asks both
every probe of conformance.probes_for_zone, and the answers must be the same messages."""

from __future__ import annotations

import contextlib
import selectors
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.programs import require_programs
from tests.unikernel.apps.dns import conformance
from tests.unikernel.apps.dns.testzone import ORIGIN, ZONE_TEXT
from unikernel.apps.dns.authority import Authority
from unikernel.apps.dns.wire import FramingError, TcpFraming
from unikernel.apps.dns.zone import Zone
from unikernel.apps.dns.zonefile import compile_zone
from workloads import linux_script
from workloads.dns.dns_server import READY_LINE


def free_port() -> int:
    """A port free for both UDP and TCP on loopback, as far as one can tell."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@contextlib.contextmanager
def running_nsd(root: Path, zone_text: str, origin: str) -> Iterator[int]:
    """NSD serving `zone_text` on a loopback port, which this yields: started as the dns suite
    starts it (workloads/dns/dns_server.py), which says when NSD answers."""
    require_programs("nsd", "dig")
    port = free_port()
    (root / "zone").write_text(zone_text)
    argv = [sys.executable, "-I", "-S", str(linux_script("dns", "dns_server.py"))]
    argv += ["--server", "nsd", "--listen", f"127.0.0.1:{port}"]
    argv += ["--zone", str(root / "zone"), "--origin", origin]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # dns_server.py says when NSD answers, or exits
        assert line.startswith(READY_LINE), f"NSD did not start: {line!r}"
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LoopbackServer:
    """An Authority served on one loopback port over UDP and TCP by one thread (test-only)."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        self.selector = selectors.DefaultSelector()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()

    def _serve(self) -> None:
        self.selector.register(self.udp, selectors.EVENT_READ, "udp")
        self.selector.register(self.tcp, selectors.EVENT_READ, "listen")
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.1):
                if key.data == "udp":
                    query, peer = self.udp.recvfrom(65535)
                    response = self.authority.respond(query, "udp")
                    if response is not None:
                        self.udp.sendto(response, peer)
                elif key.data == "listen":
                    connection, _ = self.tcp.accept()
                    connection.settimeout(5)
                    self.selector.register(connection, selectors.EVENT_READ, TcpFraming())
                else:
                    self._read_tcp(key.fileobj, key.data)  # type: ignore[arg-type]

    def _read_tcp(self, connection: socket.socket, framing: TcpFraming) -> None:
        try:
            data = connection.recv(65535)
            for query in framing.feed(data) if data else ():
                response = self.authority.respond(query, "tcp")
                if response is not None:
                    connection.sendall(framing.frame(response))
        except (OSError, FramingError):
            data = b""
        if not data:
            self.selector.unregister(connection)
            connection.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, int]]:
    """Ports of NSD, of our Authority, and of our Authority memoising."""
    zone = Zone.from_compiled(compile_zone(ZONE_TEXT, ORIGIN))
    with (
        running_nsd(tmp_path_factory.mktemp("nsd"), ZONE_TEXT, ORIGIN) as nsd_port,
        LoopbackServer(Authority([zone])) as ours,
        LoopbackServer(Authority([zone], memoise=True)) as memoised,
    ):
        yield nsd_port, ours.port, memoised.port


def test_the_probes_cover_the_zone() -> None:
    probes = conformance.probes_for_zone(compile_zone(ZONE_TEXT, ORIGIN))
    assert len(probes) >= 200
    assert len(set(probes)) == len(probes)
    options = {option for probe in probes for option in probe.options}
    assert {"+tcp", "+noedns", "+bufsize=512", "+bufsize=4096", "+dnssec"} <= options
    names = {probe.qname.lower() for probe in probes}
    assert {"anything.wild.example.test.", "www.sub.example.test.", "b.ent.example.test."} <= names


def compare_all(nsd_port: int, our_port: int, probes: list[conformance.Probe] | None = None) -> str:
    """The differences, in words, between NSD's answers and ours to `probes` (by default all
    those for the test zone)."""
    if probes is None:
        probes = conformance.probes_for_zone(compile_zone(ZONE_TEXT, ORIGIN))

    def one(probe: conformance.Probe) -> tuple[conformance.Probe, list[str]]:
        try:
            expected = conformance.dig("127.0.0.1", nsd_port, probe)
            actual = conformance.dig("127.0.0.1", our_port, probe)
        except conformance.DigError as error:
            return probe, [str(error)]
        return probe, conformance.differences(expected, actual)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, probes))
    return conformance.report(results)


@pytest.mark.slow
def test_every_answer_is_nsds(servers: tuple[int, int, int]) -> None:
    nsd_port, our_port, _ = servers
    assert compare_all(nsd_port, our_port) == ""


@pytest.mark.slow
def test_every_memoised_answer_is_nsds(servers: tuple[int, int, int]) -> None:
    nsd_port, _, memoised_port = servers
    assert compare_all(nsd_port, memoised_port) == ""


DIG_OUTPUT = """
; <<>> DiG 9.18 <<>> @127.0.0.1 -p 1 +norec -q www.example.test -t A
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 24296
;; flags: qr aa; QUERY: 1, ANSWER: 2, AUTHORITY: 1, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags: do; udp: 1232
; EDE: 20 (Not Authoritative)
;; QUESTION SECTION:
;www.example.test.\t\tIN\tA

;; ANSWER SECTION:
www.example.test.\t3600\tIN\tCNAME\tweb.example.test.
web.example.test.\t3600\tIN\tA\t192.0.2.80

;; AUTHORITY SECTION:
example.test.\t\t3600\tIN\tNS\tns1.example.test.

;; Query time: 0 msec
;; MSG SIZE  rcvd: 175
"""


def test_dig_output_is_read() -> None:
    response = conformance.parse_dig(DIG_OUTPUT)
    assert (response.status, response.opcode, response.flags) == (
        "NOERROR",
        "QUERY",
        frozenset({"qr", "aa"}),
    )
    assert response.counts == (1, 2, 1, 1)
    assert response.edns == ("version: 0, flags: do", "udp: 1232", "EDE: 20 (Not Authoritative)")
    assert response.question == ("www.example.test. IN A",)
    assert response.answer == (
        "web.example.test. 3600 IN A 192.0.2.80",
        "www.example.test. 3600 IN CNAME web.example.test.",
    )
    assert response.authority == ("example.test. 3600 IN NS ns1.example.test.",)
    assert response.size == 175
    with pytest.raises(conformance.DigError):
        conformance.parse_dig(";; connection timed out; no servers could be reached\n")


def test_differences_are_spelt_out() -> None:
    expected = conformance.parse_dig(DIG_OUTPUT)
    changed = DIG_OUTPUT.replace("qr aa;", "qr;").replace("3600\tIN\tA", "60\tIN\tA")
    actual = conformance.parse_dig(changed.replace("rcvd: 175", "rcvd: 170"))
    assert conformance.differences(expected, expected) == []
    assert conformance.differences(expected, actual) == [
        "flags: expected aa qr, got qr",
        "answer: missing web.example.test. 3600 IN A 192.0.2.80",
        "answer: unexpected web.example.test. 60 IN A 192.0.2.80",
    ]
    same_but_size = conformance.parse_dig(DIG_OUTPUT.replace("rcvd: 175", "rcvd: 170"))
    assert conformance.differences(expected, same_but_size) == ["size: expected 175 bytes, got 170"]


@pytest.mark.slow
def test_a_server_that_differs_is_caught(
    servers: tuple[int, int, int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The comparison can fail: a zone with one TTL changed is told apart from NSD's."""
    nsd_port, _, _ = servers
    changed = ZONE_TEXT.replace("web     A     192.0.2.80", "web 60  A     192.0.2.80")
    zone = Zone.from_compiled(compile_zone(changed, ORIGIN))
    probes = [conformance.Probe("web.example.test.", "A"), conformance.Probe("example.test.", "NS")]
    with LoopbackServer(Authority([zone])) as other:
        found = compare_all(nsd_port, other.port, probes)
    assert "dig web.example.test. IN A:" in found
    assert "answer: unexpected web.example.test. 60 IN A 192.0.2.80" in found
    assert "example.test. IN NS" not in found
