"""Our stack against Linux's, over a TAP device: ping, UDP with netcat, DHCP from dnsmasq, ARP.

Each test makes a network namespace holding a persistent TAP device whose kernel side is
Linux's host (10.77.0.1/24); the test process attaches the unikernel's side, runs our stack
over it on the scheduler, and runs Linux's tools inside the namespace. Nothing else is
touched: the namespace and the device go away when the test ends, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.linux_peer import (
    DHCP_FIRST,
    DHCP_LAST,
    LINUX,
    OURS,
    TAP,
    echo_server,
    mac_text,
    netns,
    on_stack,
    tap,
)
from tests.support.netns import Netns, require
from unikernel.core.scheduler import move_on_after, now, spawn
from unikernel.drivers.tap import TapNetif
from unikernel.net.interface import Interface
from unikernel.net.ipv4 import format_address, parse_address
from unikernel.net.sockets import UdpSocket, ping

__all__ = ["netns", "tap"]  # the fixtures, imported for pytest


def test_tap_netif_takes_the_device_settings_and_explains_errors(netns: Netns) -> None:
    netns.ip("tuntap", "add", "dev", TAP, "mode", "tap")
    netns.ip("tuntap", "add", "dev", "unibench-tun", "mode", "tun")
    netns.ip("link", "set", TAP, "mtu", "1400")
    with netns.call_inside(lambda: TapNetif(TAP, existing=True)) as netif:
        assert netif.name == TAP and netif.mtu == 1400
        assert netif.mac[0] & 0b11 == 0b10  # unicast, locally administered
        assert netif.mac != netif.kernel_mac
        assert netif.read_batch(8) == []  # nothing waits, and it does not block
        with pytest.raises(OSError, match="already attached"):
            netns.call_inside(lambda: TapNetif(TAP))
        # The kernel's side is down: the frame is lost, as a NIC loses it, and counted.
        frame = b"\xff" * 6 + netif.mac + b"\x08\x06" + bytes(28)
        assert netif.write_batch([frame]) == 1 and netif.write_errors == 1
    with pytest.raises(OSError, match="no interface 'absent'"):
        netns.call_inside(lambda: TapNetif("absent", existing=True))
    with pytest.raises(OSError, match="TUN device, not TAP"):
        netns.call_inside(lambda: TapNetif("unibench-tun"))
    with pytest.raises(ValueError):
        TapNetif("a-name-far-too-long")
    created = netns.call_inside(TapNetif)  # a new device, named by the kernel, gone on close
    assert created.name in netns.ip("-brief", "link")
    created.close()
    assert created.name not in netns.ip("-brief", "link")


@pytest.mark.parametrize("size", [56, 4000], ids=["small", "fragmented"])
def test_linux_pings_our_stack(
    netns: Netns, tap: TapNetif, size: int, record_property: Callable[[str, object], None]
) -> None:
    require("ping")

    async def body(interface: Interface) -> tuple[int, str]:
        # 4000 bytes: Linux fragments the request, we reassemble it and fragment the reply.
        pinger = netns.spawn(
            ["ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", "-s", str(size), OURS]
        )
        status = await pinger.wait(timeout=10)
        return status, pinger.output().decode()

    status, report = on_stack(tap, f"{OURS}/24", body)
    assert status == 0, report
    assert "5 received" in report and "wrong data" not in report
    rtts = [float(ms) for ms in re.findall(r"time=([\d.]+) ms", report)]
    assert len(rtts) == 5
    record_property("median_rtt_ms", statistics.median(rtts))


def test_arp_both_ways_and_we_ping_linux(netns: Netns, tap: TapNetif) -> None:
    async def body(interface: Interface) -> tuple[float, bytes | None, str]:
        rtt = await ping(interface, LINUX, timeout=2.0, data=b"unibench")
        learnt = interface.stack.arp.lookup(parse_address(LINUX), now())
        neighbours = await netns.output(["ip", "-json", "neigh", "show", "dev", TAP])
        return rtt, learnt, neighbours

    rtt, learnt, neighbours = on_stack(tap, f"{OURS}/24", body)
    assert 0.0 < rtt < 2.0
    assert tap.mac != tap.kernel_mac
    assert learnt == tap.kernel_mac  # we learnt Linux's MAC...
    entries = {entry["dst"]: entry for entry in json.loads(neighbours)}
    ours = entries.get(OURS)
    assert ours is not None, neighbours  # ...and Linux learnt ours
    assert ours.get("lladdr") == mac_text(tap.mac)
    assert not {"FAILED", "INCOMPLETE"} & set(ours.get("state", [])), ours


@pytest.mark.parametrize("size", [1000, 4000], ids=["one-frame", "fragmented"])
def test_netcat_talks_to_our_udp_echo_server(netns: Netns, tap: TapNetif, size: int) -> None:
    require("nc")
    payload = os.urandom(size)

    async def body(interface: Interface) -> bytes:
        server = spawn(echo_server, interface, 7)
        try:
            # nc sends its input as one datagram and prints what comes back.
            client = netns.spawn(["nc", "-u", OURS, "7"], stdin=payload)
            echoed = await client.wait_output(len(payload), timeout=5)
            client.kill()
        finally:
            server.cancel()
        return echoed

    assert on_stack(tap, f"{OURS}/24", body) == payload


def test_our_udp_socket_talks_to_a_netcat_listener(netns: Netns, tap: TapNetif) -> None:
    require("nc", "ss")
    question, answer = os.urandom(1200), os.urandom(700)

    async def body(interface: Interface) -> tuple[bytes, bytes, tuple[str, int]]:
        # nc answers whoever sends first with its own input.
        listener = netns.spawn(["nc", "-u", "-l", LINUX, "9000"], stdin=answer)
        await netns.wait_udp_listener(9000)
        with UdpSocket(interface) as sock:
            await sock.sendto(question, (LINUX, 9000))
            heard = await listener.wait_output(len(question), timeout=5)
            reply, peer = await sock.recvfrom(timeout=5)
        listener.kill()
        return heard, reply, peer

    heard, reply, peer = on_stack(tap, f"{OURS}/24", body)
    assert heard == question
    assert reply == answer and peer == (LINUX, 9000)


def test_we_lease_an_address_from_dnsmasq_and_linux_reaches_it(
    netns: Netns, tap: TapNetif, tmp_path: Path
) -> None:
    require("dnsmasq", "ping", "ss")
    leases = tmp_path / "leases"
    dnsmasq = netns.spawn(
        [
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            f"--interface={TAP}",
            "--bind-interfaces",
            f"--dhcp-range={DHCP_FIRST},{DHCP_LAST},12h",
            "--port=0",  # no DNS
            "--no-ping",  # its check that the address is free costs 3 s of silence
            f"--dhcp-leasefile={leases}",
            "--pid-file=",
            "--user=root",  # the lease file is in a root-owned temporary directory
            "--log-facility=-",
        ]
    )

    async def body(interface: Interface) -> tuple[str, int, str | None, int]:
        await netns.wait_udp_listener(67)
        interface.stack.start_dhcp(now(), hostname="unibench")
        interface.flush()
        with move_on_after(15):
            await interface.configured.wait()
        if interface.stack.config is None:
            pytest.fail(f"no lease after 15 s; dnsmasq said:\n{dnsmasq.errors()}")
        config = interface.stack.config
        assert config is not None
        address = format_address(config.address)
        pinger = netns.spawn(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", address])
        status = await pinger.wait(timeout=10)
        gateway = None if config.gateway is None else format_address(config.gateway)
        return address, config.prefix_len, gateway, status

    address, prefix_len, gateway, status = on_stack(tap, None, body)
    first, last, leased = (parse_address(a) for a in (DHCP_FIRST, DHCP_LAST, address))
    assert first <= leased <= last and prefix_len == 24, dnsmasq.errors()
    assert gateway == LINUX  # dnsmasq names itself the router by default
    assert status == 0, f"Linux could not ping {address}"
    lease_lines = leases.read_text().splitlines()
    assert any(mac_text(tap.mac) in line and address in line for line in lease_lines)
