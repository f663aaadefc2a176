"""The DNS appliance as the dns suite runs it (workloads/dns/unikernel on the unikernel-hosted
target: its own TAP link in a namespace), against NSD started as the suite starts it on the
process target, both serving the benchmark zones of 100, 1,000 and 10,000 names: every answer
must be NSD's, as dig reads them; and malformed queries never stop it answering."""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.suites.dns import DNS
from harness.targets import all_targets
from harness.targets.base import Instance, LaunchSettings
from hostkit.namespaces import entered
from tests.support.netns import require
from tests.unikernel.apps.dns import conformance
from unikernel.apps.dns import wire
from unikernel.apps.dns.zonefile import compile_zone
from workloads.dns.dns_server import ORIGIN, ZONE_SIZES, zone_text

pytestmark = pytest.mark.slow  # builds the appliance; the 10,000-name zone takes a while


def launch(target_name: str, params: dict[str, str]) -> Instance:
    target = all_targets()[target_name]
    target.prepare(DNS, log=lambda _: None)
    instance = target.create(DNS, LaunchSettings(workload_params=params))
    try:
        instance.start()
        instance.ready(deadline=time.perf_counter() + 120)
    except BaseException:
        instance.stop()
        raise
    return instance


@pytest.fixture(scope="module", params=ZONE_SIZES)
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[int, Instance, Instance]]:
    """NSD as a process and the appliance hosted, memoising, for one zone size."""
    require("dig", "nsd")
    names = str(request.param)
    nsd = launch("process", {"server": "nsd", "names": names, "seconds": "1"})
    try:
        ours = launch("unikernel-hosted", {"server": "unikernel", "names": names, "memoise": "on"})
        try:
            yield request.param, nsd, ours
        finally:
            ours.stop()
    finally:
        nsd.stop()


def ask(instance: Instance, probe: conformance.Probe) -> conformance.DigResponse:
    address = instance.address("dns")
    assert address is not None
    return conformance.dig(*address, probe, namespace=instance.namespace)


def test_every_answer_of_the_appliance_is_nsds(servers: tuple[int, Instance, Instance]) -> None:
    names, nsd, ours = servers
    probes = conformance.probes_for_zone(compile_zone(zone_text(names)))
    assert len(probes) >= 200
    # Twice each: the second answer of a memoising server comes from its memo.
    twice = probes + probes

    def one(probe: conformance.Probe) -> tuple[conformance.Probe, list[str]]:
        try:
            return probe, conformance.differences(ask(nsd, probe), ask(ours, probe))
        except conformance.DigError as error:
            return probe, [str(error)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert conformance.report(pool.map(one, twice)) == ""


def query(qname: str, qtype: int = 1, query_id: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in qname.split(".") if p)
    return (
        struct.pack("!6H", query_id, 0, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!2H", qtype, 1)
    )


HEADER = struct.pack("!6H", 0xBEEF, 0, 1, 0, 0, 0)
HAND_MADE = [
    b"",
    b"\x12",
    HEADER,  # a question promised, none there
    HEADER + b"\xc0\x0c\x00\x01\x00\x01",  # a name that points at itself
    HEADER + b"\x03abc\xc0\x0c\x00\x01\x00\x01",  # a loop through the header
    HEADER + b"\xc0\xff\x00\x01\x00\x01",  # a pointer forward, past the end
    HEADER + b"\x3fabc",  # a label longer than the packet
    HEADER + b"\x40abc\x00\x00\x01\x00\x01",  # a label type that does not exist
    HEADER + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # a name over 255 octets
    struct.pack("!6H", 1, 0, 2, 0, 0, 0) + query("a.b")[12:],  # two questions promised
    struct.pack("!6H", 1, 0, 1, 0xFFFF, 0xFFFF, 0xFFFF) + query(ORIGIN)[12:],  # counts lie
    struct.pack("!6H", 1, 0x8000, 1, 0, 0, 0) + query(ORIGIN)[12:],  # a response, not a query
    struct.pack("!6H", 1, 0x7800, 1, 0, 0, 0) + query(ORIGIN)[12:],  # opcode 15
    # OPT rdata past the end
    struct.pack("!6H", 1, 0, 1, 0, 0, 1) + query(ORIGIN)[12:] + b"\0\0\x29\x10\0\0\0\0\0\xff\xff",
    bytes(range(256)) * 4,
]


class Client:
    """A UDP socket inside the appliance's namespace."""

    def __init__(self, instance: Instance) -> None:
        address = instance.address("dns")
        assert address is not None
        self.address = address
        with entered(instance.namespace):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.05)

    def still_answers(self) -> bool:
        query_id = random.randrange(1 << 16)
        self.sock.settimeout(2.0)
        self.sock.sendto(query(f"h1.{ORIGIN}", query_id=query_id), self.address)
        while True:  # skip late answers to the malformed ones
            reply = self.sock.recv(4096)
            if reply[:2] == struct.pack("!H", query_id):
                return reply[3] & 0x0F == 0  # NOERROR
            self.sock.settimeout(0.5)

    def replies_to(self, payload: bytes) -> bytes | None:
        """Its reply to `payload`, if one comes at once."""
        self.sock.settimeout(0.2)
        self.sock.sendto(payload, self.address)
        try:
            return self.sock.recv(65535)
        except TimeoutError:
            return None


@pytest.fixture
def appliance() -> Iterator[Instance]:
    """The appliance alone, on the smallest zone, not memoising: every query is parsed."""
    require()
    instance = launch("unikernel-hosted", {"server": "unikernel", "names": "100", "memoise": "off"})
    try:
        yield instance
    finally:
        instance.stop()


def test_malformed_queries_get_formerr_or_nothing_and_never_stop_it(appliance: Instance) -> None:
    client = Client(appliance)
    for payload in HAND_MADE:
        reply = client.replies_to(payload)
        if reply is not None:
            assert len(reply) >= 12 and reply[2] & 0x80, f"{payload!r}: not a response"
            rcode = reply[3] & 0x0F
            assert rcode in (wire.FORMERR, wire.NOTIMP), f"{payload!r}: rcode {rcode}"
        assert client.still_answers(), f"no answer after {payload!r}"

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.one_of(
            st.binary(max_size=600),
            st.builds(
                lambda q, at, b: q[:at] + b + q[at + len(b) :],
                st.just(query(f"h1.{ORIGIN}")),
                st.integers(0, 40),
                st.binary(min_size=1, max_size=8),
            ),
        )
    )
    def any_bytes(payload: bytes) -> None:
        client.sock.sendto(payload, client.address)

    any_bytes()
    assert client.still_answers()
    client.sock.close()
