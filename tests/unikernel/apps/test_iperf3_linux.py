"""Our iperf3 server and client against Debian's iperf3 (3.12), over a TAP device.

The namespace, the TAP device and our stack come from test_linux_interop's fixtures: Linux's
side is 10.77.0.1, ours 10.77.0.2, and Debian's iperf3 runs inside the namespace. Every check
reads iperf3's own --json report. Measured rates are printed (run with -s to see them).

Receiving, our server reads on after TEST_END until it has what the client says it sent, so
the two counts agree exactly. Sending (-R), they cannot: iperf3's client counts only what it
reads before its TEST_END (iperf_tcp_recv counts in TEST_RUNNING only), and what was in flight
then is sent but not counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.linux_peer import LINUX, OURS, netns, on_stack, tap
from tests.support.netns import Netns, require
from unikernel.apps.iperf3.client import ClientResult, run_client
from unikernel.apps.iperf3.protocol import TestParams
from unikernel.apps.iperf3.server import Iperf3Server, TestReport
from unikernel.core.scheduler import fail_after, sleep, spawn
from unikernel.drivers.tap import TapNetif
from unikernel.net.interface import Interface
from unikernel.net.service import NetworkService, attach_tcp

__all__ = ["netns", "tap"]  # the fixtures, imported for pytest

CLIENT_TIMEOUT = 20.0  # for one iperf3 run of 2 s; on_stack bounds the whole test at 30 s


def network_on(interface: Interface, tap: TapNetif) -> NetworkService:
    """The network service on the fixture's stack (the fixture closes the device)."""
    return NetworkService(interface, attach_tcp(interface), tap)


async def wait_tcp_listener(netns: Netns, port: int, timeout: float = 5.0) -> None:
    """Until a TCP socket in the namespace listens on `port`."""
    with fail_after(timeout):
        while not (await netns.output(["ss", "-H", "-t", "-l", "-n", f"sport = :{port}"])):
            await sleep(0.02)


def iperf3_report(output: bytes) -> dict[str, Any]:
    report = json.loads(output)
    assert isinstance(report, dict)
    return report


def show(what: str, sent: dict[str, Any], received: dict[str, Any]) -> None:
    print(
        f"\n{what}: sender {sent['bits_per_second'] / 1e6:.1f} Mbit/s ({sent['bytes']} bytes), "
        f"receiver {received['bits_per_second'] / 1e6:.1f} Mbit/s ({received['bytes']} bytes)"
    )


def serve_one(
    netns: Netns, tap: TapNetif, args: list[str]
) -> tuple[int, dict[str, Any], TestReport]:
    """Debian's `iperf3 -c OURS ARGS --json` against our server; its status and report, and
    ours."""

    async def body(interface: Interface) -> tuple[int, dict[str, Any], TestReport]:
        network = network_on(interface, tap)
        serving = spawn(Iperf3Server(network.listen(5201), log=print).serve, 1)
        client = netns.spawn(["iperf3", "-c", OURS, *args, "--json", "--connect-timeout", "3000"])
        status = await client.wait(timeout=CLIENT_TIMEOUT)
        report = iperf3_report(client.output())
        with fail_after(5):
            (ours,) = await serving.join()
        return status, report, ours

    return on_stack(tap, f"{OURS}/24", body)


@pytest.mark.parametrize(
    ("args", "streams"),
    [(["-t", "2"], 1), (["-t", "2", "-P", "4"], 4), (["-n", "20M"], 1)],
    ids=["forward", "parallel-4", "bytes-20M"],
)
def test_debian_iperf3_sends_to_our_server(
    netns: Netns, tap: TapNetif, args: list[str], streams: int
) -> None:
    require("iperf3")
    status, report, ours = serve_one(netns, tap, args)
    assert "error" not in report, report["error"]
    assert status == 0
    end = report["end"]
    sent, received = end["sum_sent"], end["sum_received"]
    show(f"iperf3 -c {' '.join(args)} -> us", sent, received)
    assert ours.error is None and not ours.reverse and len(ours.streams) == streams
    assert len(end["streams"]) == streams
    assert sent["bytes"] == received["bytes"] == ours.bytes > 0
    assert received["bits_per_second"] > 0 and sent["bits_per_second"] > 0
    # Stream by stream, as the client numbers them (1, 3, 4, 5...).
    by_socket = {s["sender"]["socket"]: s for s in end["streams"]}
    assert sorted(s["receiver"]["bytes"] for s in by_socket.values()) == sorted(
        s.bytes for s in ours.streams
    )
    if "-n" in args:
        assert sent["bytes"] == 20 << 20


def test_debian_iperf3_receives_from_our_server(netns: Netns, tap: TapNetif) -> None:
    require("iperf3")
    status, report, ours = serve_one(netns, tap, ["-t", "2", "-R"])
    assert "error" not in report, report["error"]
    assert status == 0
    sent, received = report["end"]["sum_sent"], report["end"]["sum_received"]
    show("iperf3 -c -R <- us", sent, received)
    assert ours.error is None and ours.reverse
    assert sent["bytes"] == ours.bytes  # what we say we sent...
    # ...of which the client counted what came before its TEST_END (see the docstring).
    assert 0.9 * sent["bytes"] <= received["bytes"] <= sent["bytes"]
    assert received["bits_per_second"] > 0
    assert sent["retransmits"] >= 0  # we report our retransmissions, as a Linux sender does


def test_debian_iperf3_is_told_why_a_udp_test_is_refused(netns: Netns, tap: TapNetif) -> None:
    require("iperf3")

    async def body(interface: Interface) -> tuple[dict[str, Any], list[TestReport]]:
        network = network_on(interface, tap)
        serving = spawn(Iperf3Server(network.listen(5201)).serve, 1)
        try:
            client = netns.spawn(["iperf3", "-c", OURS, "-u", "-t", "1", "--json"])
            await client.wait(timeout=CLIENT_TIMEOUT)
            report = iperf3_report(client.output())
            # The server goes on: a TCP test after the refused one runs.
            client = netns.spawn(["iperf3", "-c", OURS, "-n", "1M", "--json"])
            await client.wait(timeout=CLIENT_TIMEOUT)
            assert "error" not in iperf3_report(client.output())
            with fail_after(5):
                reports = await serving.join()
            return report, reports
        finally:
            serving.cancel()

    report, ours = on_stack(tap, f"{OURS}/24", body)
    assert report["error"] == "an option you are trying to set is not implemented yet"
    assert [r.error is None for r in ours] == [False, True]
    assert "UDP tests are not supported" in str(ours[0].error)


def run_against_debian(
    netns: Netns, tap: TapNetif, params: TestParams
) -> tuple[ClientResult, dict[str, Any]]:
    """Our client against `iperf3 -s -1 --json` in the namespace; our result and its report."""
    require("iperf3", "ss")

    async def body(interface: Interface) -> tuple[ClientResult, dict[str, Any]]:
        network = network_on(interface, tap)
        server = netns.spawn(["iperf3", "-s", "-1", "-B", LINUX, "--json"])
        await wait_tcp_listener(netns, 5201)
        result = await run_client(network, LINUX, params)
        status = await server.wait(timeout=10)
        assert status == 0, server.errors()
        return result, iperf3_report(server.output())

    return on_stack(tap, f"{OURS}/24", body)


@pytest.mark.parametrize(
    "params",
    [TestParams(time=2), TestParams(time=2, parallel=4)],
    ids=["forward", "parallel-4"],
)
def test_our_client_sends_to_debian_iperf3(
    netns: Netns, tap: TapNetif, params: TestParams, record_property: Callable[[str, object], None]
) -> None:
    result, report = run_against_debian(netns, tap, params)
    assert "error" not in report, report["error"]
    end = report["end"]
    show(f"us -> iperf3 -s (P={params.parallel})", end["sum_sent"], end["sum_received"])
    print(f"our view: {result}")
    assert len(result.streams) == len(end["streams"]) == params.parallel
    # We wait for every byte to be acknowledged before TEST_END; but an ACK says Linux's TCP
    # has a byte, not that iperf3 read it before it stopped counting. What it left unread is
    # within its sockets' receive buffers (net.ipv4.tcp_rmem's largest, in the namespace).
    largest_buffer = netns.call_inside(
        lambda: int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    )
    unread = result.sent_bytes - end["sum_received"]["bytes"]
    assert result.sent_bytes == result.our_bytes > 0
    assert 0 <= unread <= params.parallel * largest_buffer, (unread, end["sum_received"])
    assert result.received_bytes == end["sum_received"]["bytes"]  # its count, as it told us
    assert result.received_mbps > 0
    record_property("mbps", result.received_mbps)


def test_our_client_receives_from_debian_iperf3(
    netns: Netns, tap: TapNetif, record_property: Callable[[str, object], None]
) -> None:
    result, report = run_against_debian(netns, tap, TestParams(time=2, reverse=True))
    assert "error" not in report, report["error"]
    end = report["end"]
    show("us <- iperf3 -s -R", end["sum_sent"], end["sum_received"])
    print(f"our view: {result}")
    # iperf3's server closes the streams at TEST_END and we read to their end: every byte
    # it counted as sent, we counted as received.
    assert end["sum_sent"]["bytes"] == result.received_bytes == result.our_bytes > 0
    assert result.sent_bytes == result.received_bytes
    assert result.received_mbps > 0
    record_property("mbps", result.received_mbps)


def test_our_client_by_byte_count_against_debian_iperf3(netns: Netns, tap: TapNetif) -> None:
    result, report = run_against_debian(
        netns, tap, TestParams(time=0, bytes=5 << 20, parallel=2, reverse=True)
    )
    assert "error" not in report, report["error"]
    assert report["end"]["sum_sent"]["bytes"] == result.received_bytes >= 5 << 20
