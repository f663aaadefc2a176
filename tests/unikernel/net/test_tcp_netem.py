"""Our TCP against Linux's through a bad link: loss, reordering and duplication, both ways.

Each case moves a stream from a seeded generator between netcat in the namespace and our stack
over the TAP device, with the link impaired in both directions (impair.py: tc netem where the
kernel has it, else the same impairment applied where frames cross the device). The stream is
checked by SHA-256 on the receiving end, and generated, hashed and received piece by piece:
no side ever holds it whole. Every case moves 100 MB, as the issue asks; all eight take about
two minutes on an idle 2-core machine. Each test prints its time and throughput (run with -s)
and records them as properties; a transfer that stalls fails with both TCPs' view of the
connection.
"""

from __future__ import annotations

import hashlib
import random
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support.linux_peer import LINUX, TAP, netns, tap
from tests.support.netns import Netns, require
from unikernel.core.scheduler import fail_after
from unikernel.drivers import Netif
from unikernel.drivers.tap import TapNetif
from unikernel.net.ipv4 import parse_address
from unikernel.net.tcp import Connection

from .impair import ImpairedNetif, Impairment, netem_available, netem_both_ways
from .test_tcp_linux import Tcp, on_tcp, wait_tcp_listener

__all__ = ["netns", "tap"]  # the fixtures, imported for pytest

MB = 1 << 20
CHUNK = MB  # what the generator makes at a time, on either side
SEED = 20240611
BOUND = 240.0  # seconds for one transfer, at least 10x what it takes on an idle machine
STALL = 30.0  # seconds without a byte moving that count as a stall

CASES = [
    pytest.param(Impairment(loss=0.01), 100 * MB, id="loss-1pct"),
    pytest.param(Impairment(loss=0.05), 100 * MB, id="loss-5pct"),
    pytest.param(Impairment(delay=0.001, reorder=0.25), 100 * MB, id="reorder-25pct"),
    pytest.param(Impairment(duplicate=0.01), 100 * MB, id="duplicate-1pct"),
]


def chunks(size: int, seed: int = SEED) -> Iterator[bytes]:
    """The stream: `size` bytes from a seeded generator, CHUNK at a time."""
    rng = random.Random(seed)
    for offset in range(0, size, CHUNK):
        yield rng.randbytes(min(CHUNK, size - offset))


def generator_command(size: int, seed: int = SEED) -> str:
    """A shell command writing the same stream to its output, with Linux's python3."""
    program = (
        f"import random, sys; rng = random.Random({seed}); out = sys.stdout.buffer\n"
        f"for offset in range(0, {size}, {CHUNK}): out.write(rng.randbytes(min({CHUNK}, "
        f"{size} - offset)))"
    )
    return f"python3 -c {shlex.quote(program)}"


def expected_digest(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Link:
    """The impaired link: the netif our stack runs on, and how the impairment is made."""

    netif: Netif
    impairment: Impairment
    impaired: ImpairedNetif | None = None  # None: tc netem does it

    @property
    def how(self) -> str:
        return "tc netem" if self.impaired is None else "in-process"

    def start(self, tcp: Tcp) -> None:
        if self.impaired is not None:
            self.impaired.start(tcp.interface)

    def counts(self) -> str:
        return "" if self.impaired is None else f"; link: {self.impaired.counts}"

    def check(self) -> None:
        """That the link did impair (a test that met no loss would prove nothing)."""
        if self.impaired is None:
            return  # netem's own business
        counts, impairment = self.impaired.counts, self.impairment
        assert counts["lost"] > 0 or not impairment.loss, counts
        assert counts["duplicated"] > 0 or not impairment.duplicate, counts
        assert counts["delayed"] > 0 or not impairment.delay, counts


def impaired_link(netns: Netns, tap: TapNetif, impairment: Impairment) -> Link:
    require("tc", "nc", "ss", "sh", "sha256sum", "python3")
    if netem_available(netns, TAP):
        netem_both_ways(netns, TAP, impairment)
        return Link(tap, impairment)
    impaired = ImpairedNetif(tap, impairment, seed=SEED)
    return Link(impaired, impairment, impaired)


def describe(conn: Connection) -> str:
    return (
        f"{conn.state_name} snd_una={conn.snd_una} snd_nxt={conn.snd_nxt} "
        f"snd_max={conn.snd_max} snd_wnd={conn.snd_wnd} cwnd={conn.cwnd} "
        f"ssthresh={conn.ssthresh} recovery={conn.in_recovery} rto={conn.rto:.3f} "
        f"srtt={conn.srtt:.4f} unacked={conn.unacked} rcv_nxt={conn.rcv_nxt} "
        f"rcv_window={conn.rcv_window} readable={conn.readable} "
        f"retransmits={conn.retransmits}"
    )


async def diagnose(netns: Netns, tcp: Tcp, conn: Connection | None, link: Link) -> str:
    """Both sides' view of the connection, for the message of a failed transfer."""
    try:
        linux = await netns.output(["ss", "-t", "-i", "-n", "-a"])
    except (AssertionError, TimeoutError) as error:
        linux = f"(ss failed: {error})"
    ours = "no connection" if conn is None else describe(conn)
    return f"ours: {ours}; {tcp.layer.stats}{link.counts()}\nLinux's:\n{linux}"


def report(
    what: str, size: int, seconds: float, record: Callable[[str, object], None], link: Link
) -> None:
    rate = size / seconds / 1e6
    record("seconds", round(seconds, 2))
    record("MB_per_s", round(rate, 2))
    print(f"\n{what} ({link.how}): {size} bytes in {seconds:.1f} s, {rate:.2f} MB/s{link.counts()}")


@pytest.mark.slow
@pytest.mark.parametrize(("impairment", "size"), CASES)
def test_linux_sends_through_a_bad_link(
    netns: Netns,
    tap: TapNetif,
    impairment: Impairment,
    size: int,
    record_property: Callable[[str, object], None],
) -> None:
    link = impaired_link(netns, tap, impairment)

    async def body(tcp: Tcp) -> tuple[int, str, str, int, float]:
        link.start(tcp)
        command = f"{generator_command(size)} | nc -N -l {LINUX} 9001"
        server = netns.spawn(["sh", "-c", command])
        await wait_tcp_listener(netns, 9001)
        started = time.perf_counter()
        digest = hashlib.sha256()
        received = 0
        conn = None
        try:
            sock = await tcp.sockets.connect(parse_address(LINUX), 9001, timeout=10)
            conn = sock.connection
            with fail_after(BOUND):
                while data := await sock.recv(65536, timeout=STALL):
                    digest.update(data)
                    received += len(data)
            elapsed = time.perf_counter() - started
            sock.close()
            status = await server.wait(timeout=10)
        except TimeoutError as error:
            state = await diagnose(netns, tcp, conn, link)
            raise AssertionError(
                f"{error}: {received} of {size} bytes after "
                f"{time.perf_counter() - started:.1f} s\n{state}"
            ) from None
        return status, server.errors(), digest.hexdigest(), received, elapsed

    status, errors, digest, received, elapsed = on_tcp(link.netif, body, BOUND + 30)
    assert status == 0, errors
    assert received == size
    assert digest == expected_digest(size)
    link.check()
    report(f"Linux -> us, {impairment}", size, elapsed, record_property, link)


@pytest.mark.slow
@pytest.mark.parametrize(("impairment", "size"), CASES)
def test_we_send_through_a_bad_link(
    netns: Netns,
    tap: TapNetif,
    impairment: Impairment,
    size: int,
    record_property: Callable[[str, object], None],
) -> None:
    link = impaired_link(netns, tap, impairment)

    async def body(tcp: Tcp) -> tuple[int, str, str, float]:
        link.start(tcp)
        server = netns.spawn(["sh", "-c", f"nc -l {LINUX} 9000 | sha256sum"])
        await wait_tcp_listener(netns, 9000)
        started = time.perf_counter()
        digest = hashlib.sha256()
        sent = 0
        conn = None
        try:
            sock = await tcp.sockets.connect(parse_address(LINUX), 9000, timeout=10)
            conn = sock.connection
            with fail_after(BOUND):
                for chunk in chunks(size):
                    digest.update(chunk)
                    await sock.send(chunk, timeout=STALL)
                    sent += len(chunk)
                sock.close()
                await sock.drain(timeout=STALL)
            elapsed = time.perf_counter() - started
            status = await server.wait(timeout=10)  # nc exits on our FIN, then sha256sum
        except TimeoutError as error:
            state = await diagnose(netns, tcp, conn, link)
            raise AssertionError(
                f"{error}: {sent} of {size} bytes queued, {conn and conn.unacked} unacknowledged, "
                f"after {time.perf_counter() - started:.1f} s\n{state}"
            ) from None
        return status, server.output().decode(), digest.hexdigest(), elapsed

    status, output, digest, elapsed = on_tcp(link.netif, body, BOUND + 30)
    assert status == 0, output
    assert output.split()[0] == digest, f"Linux received other bytes than we sent: {output}"
    link.check()
    report(f"us -> Linux, {impairment}", size, elapsed, record_property, link)
