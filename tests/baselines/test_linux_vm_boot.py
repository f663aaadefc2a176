"""Integration: each Linux VM image (built once, then cached) boots under QEMU TCG on a TAP link in
a namespace made for the test, prints the ready marker on its serial console, echoes a UDP
datagram sent from inside the namespace, and takes an SSH login checked against its host key.
The times to the marker and to the first SSH command are printed (pytest -s shows them)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from baselines.linux_vm import VM_KINDS, VmImage, VmKind, ensure_vm_image, overlaid, qemu_command
from harness.console import ConsoleWatcher
from hostkit import ssh as vm_ssh
from hostkit.namespaces import TapLink, entered
from hostkit.qemu import tap_nic
from tests.support.netns import require
from unikernel.devices import READY_MARKER

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the first run builds (minutes)

BOOT_TIMEOUT = 300.0  # TCG on a loaded 2-core machine; a boot took about 45 s here
SERVICE_TIMEOUT = 120.0  # from the marker to an echo, and to an SSH login
MEMORY_MIB = 512


@pytest.fixture
def link() -> Iterator[TapLink]:
    require("qemu-system-x86_64", "qemu-img", "mkfs.ext4", "ssh-keygen", "debootstrap")
    made = TapLink()
    try:
        yield made
    finally:
        made.close()


def echo(link: TapLink, deadline: float) -> bytes:
    """Send datagrams to the guest's echo port until one comes back or time runs out."""
    with entered(link.name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(1.0)
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            payload = f"unibench-probe {attempt}".encode()
            sock.sendto(payload, (link.guest_address, 7))
            try:
                reply, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            assert peer == (link.guest_address, 7)
            return reply
    pytest.fail(f"no UDP echo from {link.guest_address}:7 in time")


def ssh_session(
    image: VmImage, link: TapLink, deadline: float, known_key: paramiko.PKey | None = None
) -> paramiko.SSHClient:
    """Log in as soon as sshd answers; until then, retry."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with entered(link.name):  # the socket belongs to the namespace for good
                sock = socket.create_connection((link.guest_address, 22), timeout=5.0)
        except OSError as error:
            last = error
            time.sleep(0.5)
            continue
        try:
            key = paramiko.Ed25519Key.from_private_key_file(str(image.ssh_private_key))
            expected = known_key or vm_ssh.parse_host_key(image.ssh_host_key)
            return vm_ssh.login(sock, link.guest_address, image.ssh_user, key, expected, 60.0)
        except paramiko.BadHostKeyException:
            sock.close()
            raise
        except (OSError, paramiko.SSHException) as error:  # sshd still starting
            sock.close()
            last = error
            time.sleep(0.5)
    pytest.fail(f"no SSH login to {link.guest_address} in time: {last}")


@pytest.mark.parametrize("kind", VM_KINDS)
def test_the_image_boots_echoes_and_takes_a_checked_ssh_login(
    kind: VmKind, link: TapLink, tmp_path: Path
) -> None:
    image = ensure_vm_image(kind, print)
    launches = tmp_path / "launches"
    with overlaid(image, launches) as disk:
        argv = qemu_command(
            image, disk, "tcg", MEMORY_MIB, address=link.guest_address,
            prefix_len=link.prefix_len, devices=tap_nic(0, link.device),
        )  # fmt: skip
        t0 = time.perf_counter()
        with entered(link.name):  # QEMU attaches to the TAP device by name, in the namespace
            qemu = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        assert qemu.stdout is not None
        fd = qemu.stdout.fileno()
        console = ConsoleWatcher(iter(lambda: os.read(fd, 65536), b""), kind)
        console.start()
        try:
            arrived, line = console.wait_for(READY_MARKER, t0 + BOOT_TIMEOUT)
            ready = arrived - t0
            deadline = time.monotonic() + SERVICE_TIMEOUT
            assert echo(link, deadline).startswith(b"unibench-probe ")
            echoed = time.perf_counter() - t0

            client = ssh_session(image, link, deadline)
            with client:
                status, out, err = vm_ssh.run(client, "uname -r")
            logged_in = time.perf_counter() - t0
            assert (status, out.strip()) == (0, image.kernel_release), err

            # A server showing any other key than the image's is refused: here the guest's real
            # key against an expected one that is not it (the client key's public half).
            wrong_key = paramiko.Ed25519Key.from_private_key_file(str(image.ssh_private_key))
            with pytest.raises(paramiko.BadHostKeyException):
                ssh_session(image, link, deadline, known_key=wrong_key)
        finally:
            qemu.kill()
            qemu.wait(timeout=30)
            console.join(timeout=10)
        print(
            f"\n{kind} under TCG: ready marker {ready:.1f} s ({line.strip()!r}), UDP echo "
            f"{echoed:.1f} s, SSH `uname -r` {logged_in:.1f} s after QEMU started"
        )
    assert not disk.exists()
    assert list(launches.iterdir()) == []
    assert image.disk.exists()  # the cached base stays
