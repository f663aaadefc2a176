"""Integration: the boot probe image under QEMU, with a virtio-net NIC on a TAP link in a
namespace made for the test, leases its address from Debian's dnsmasq there, then answers a
UDP datagram sent from inside the namespace."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostkit.namespaces import TapLink, entered
from hostkit.qemu import qemu_command, tap_nic
from tests.support.artifacts import require_specialized_kernel
from tests.support.netns import require
from unikernel.toolchain.app import load_app
from unikernel.toolchain.image import build
from workloads import unikernel_app

pytestmark = pytest.mark.slow

BOOT_PROBE = unikernel_app("boot_probe")
ECHOING = re.compile(r"boot-probe: echoing on (10\.203\.0\.\d+):(\d+)")
BOOT_TIMEOUT = 180.0  # TCG on a loaded 2-core machine: seconds per boot, not minutes


@pytest.fixture
def link() -> Iterator[TapLink]:
    require("dnsmasq")
    require_specialized_kernel()
    made = TapLink()
    try:
        yield made
    finally:
        made.close()


def start_dnsmasq(link: TapLink, leases: Path) -> subprocess.Popen[bytes]:
    argv = [
        *link.namespace.exec_prefix(),
        "dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--interface={link.device}",
        "--bind-interfaces", "--dhcp-range=10.203.0.50,10.203.0.60,1h", "--port=0", "--no-ping",
        f"--dhcp-leasefile={leases}", "--pid-file=", "--user=root", "--log-facility=-",
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_line(process: subprocess.Popen[bytes], pattern: re.Pattern[str]) -> re.Match[str]:
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        raw = process.stdout.readline()
        if not raw:
            break
        line = raw.decode(errors="replace").rstrip()
        seen.append(line)
        if found := pattern.search(line):
            return found
    pytest.fail("the guest never said it was echoing:\n" + "\n".join(seen[-30:]))


def test_the_image_leases_an_address_by_dhcp_and_echoes_udp(link: TapLink, tmp_path: Path) -> None:
    built = build(load_app(BOOT_PROBE), "qemu", "specialized", log=lambda _: None)
    command = qemu_command(
        built.qemu_image(), "tcg", 128, extra_args=("UNIKERNEL_IP=dhcp",),
        devices=tuple(tap_nic(0, link.device)),
    )  # fmt: skip
    dnsmasq = start_dnsmasq(link, tmp_path / "leases")
    with entered(link.name):  # QEMU attaches to the TAP device by name, in the namespace
        qemu = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        found = wait_for_line(qemu, ECHOING)
        address = (found.group(1), int(found.group(2)))
        with entered(link.name):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.settimeout(2.0)
            sock.sendto(b"unibench-probe 1", address)
            reply, peer = sock.recvfrom(2048)
        assert reply == b"unibench-probe 1" and peer == address
        leases = (tmp_path / "leases").read_text()
        assert found.group(1) in leases  # the address is dnsmasq's lease, not a guess
    finally:
        qemu.kill()
        qemu.wait(timeout=10)
        dnsmasq.kill()
        dnsmasq.wait(timeout=10)
