"""The ssh targets: the hosts file, and the boot suite on a host reached over SSH (a Linux VM
of our own, booted by the test on a TAP link in a namespace)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from baselines.linux_vm import ensure_vm_image
from harness.cli import cli
from harness.suites.boot import BOOT_PROBE
from harness.targets.base import Instance, LaunchSettings
from harness.targets.linux_vm import LinuxVmTarget
from harness.targets.ssh import HostsFileError, load_hosts
from tests.support.netns import require

GOOD = """
[[host]]
name = "lab1"
address = "192.0.2.10"
user = "bench"
key = "~/.ssh/unibench"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_a_hosts_file_gives_one_host_per_table_with_defaults(tmp_path: Path) -> None:
    (host,) = load_hosts(write(tmp_path, GOOD))
    assert (host.name, host.address, host.port, host.user) == ("lab1", "192.0.2.10", 22, "bench")
    assert host.key == Path.home() / ".ssh" / "unibench" and host.python == "python3"
    assert host.namespace is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "list the hosts as \\[\\[host\\]\\] tables"),
        ('[[host]]\nname = "a"\n', "missing address, user, key, host_key"),
        (GOOD + 'colour = "red"\n', "unknown keys colour"),
        (GOOD + GOOD, "host names must differ"),
        (GOOD.replace('user = "bench"', 'user = "bench"\nport = "22"'), "port is a number"),
        ("[[host", "hosts.toml"),
    ],
)
def test_a_wrong_hosts_file_says_where_and_what(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(HostsFileError, match=message):
        load_hosts(write(tmp_path, text))


def test_the_ssh_targets_need_a_hosts_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--store", str(tmp_path / "b.sqlite"), "run", "--suite", "boot", "--target", "ssh"]
    )
    assert result.exit_code == 2 and "--hosts FILE" in result.output


@pytest.fixture
def guest() -> Iterator[tuple[LinuxVmTarget, Instance]]:
    """linux-vm-minimal booted and serving, to play the remote host."""
    require("qemu-system-x86_64", "qemu-img", "mkfs.ext4", "debootstrap")
    target = LinuxVmTarget("linux-vm-minimal", "the remote host")
    target.prepare(BOOT_PROBE, log=lambda _: None)
    instance = target.create(BOOT_PROBE, LaunchSettings())
    try:
        instance.start()
        instance.console.wait_for("UNIBENCH-READY", time.perf_counter() + 300)
        yield target, instance
    finally:
        instance.stop()


@pytest.mark.slow
def test_the_boot_suite_runs_on_a_host_over_ssh(
    tmp_path: Path, guest: tuple[LinuxVmTarget, Instance]
) -> None:
    _, instance = guest
    image = ensure_vm_image("linux-vm-minimal")
    address = instance.address("probe")
    assert address is not None
    hosts = write(
        tmp_path,
        f"""
[[host]]
name = "guest"
address = "{address[0]}"
user = "{image.ssh_user}"
key = "{image.ssh_private_key}"
host_key = "{image.ssh_host_key}"
namespace = "{instance.namespace}"
""",
    )
    store = tmp_path / "b.sqlite"
    args = ["--store", str(store), "run", "--suite", "boot", "--target", "ssh", "--hosts"]
    result = CliRunner().invoke(cli, [*args, str(hosts), "--repeat", "2", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    shown = CliRunner().invoke(cli, ["--store", str(store), "show", "--format", "json"])
    rows = json.loads(shown.output)["results"]
    medians: dict[str, float] = {}
    for row in rows:
        assert row["target"] == "ssh:guest" and row["failed"] == 0, row
        medians[row["metric"]] = row["median"]
    # Launching a process over SSH, then its first reply: milliseconds to seconds under TCG.
    assert 0 < medians["time_to_ready"] <= medians["time_to_service"] < 60
