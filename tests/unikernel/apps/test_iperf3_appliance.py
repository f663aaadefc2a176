"""The iperf3 appliance as the harness runs it: workloads/iperf3/unikernel built for the hosted
target, its app.zip run by the image's Python inside a network namespace, on a TAP device it
attaches itself, with Debian's iperf3 as the client."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.support.linux_peer import LINUX, OURS, TAP, netns
from tests.support.netns import Netns, Process, require
from unikernel.apps.iperf3 import server
from unikernel.core.console import Console as ConsoleDevice
from unikernel.core.devices import Devices
from unikernel.core.scheduler import run
from unikernel.devices import Console, Network
from unikernel.toolchain.app import load_app
from unikernel.toolchain.image import build
from unikernel.toolchain.runtime import PYTHON
from workloads import unikernel_app

__all__ = ["netns"]  # the fixture, imported for pytest

APP_FOLDER = unikernel_app("iperf3")


def test_the_workload_declares_the_appliance() -> None:
    app = load_app(APP_FOLDER).app
    assert app.name == "iperf3" and app.main == "unikernel.apps.iperf3.server:main"
    assert app.devices == (Console(), Network()) and app.memory_mib == 256


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("UNIBENCH_PORT", "http", "UNIBENCH_PORT='http': a whole number is expected"),
        ("UNIBENCH_PORT", "70000", "UNIBENCH_PORT=70000: a port is 1 to 65535"),
        ("UNIBENCH_TESTS", "-1", "UNIBENCH_TESTS='-1': a whole number is expected"),
    ],
)
def test_main_says_which_setting_is_wrong(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    assert run(server.main, Devices(ConsoleDevice(1))) == 2
    assert capfd.readouterr().out == f"iperf3: {message}\n"


def wait_for_line(process: Process, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = process.output().decode(errors="replace")
        if text in output or process.popen.poll() is not None:
            return output
        time.sleep(0.05)
    return process.output().decode(errors="replace")


@pytest.mark.slow  # the build needs the image's Python runtime (a cached debootstrap rootfs)
def test_the_hosted_appliance_serves_debian_iperf3_and_exits(netns: Netns, tmp_path: Path) -> None:
    require("iperf3")
    folder = tmp_path / "iperf3"
    folder.mkdir()
    shutil.copy(APP_FOLDER / "config.py", folder)  # builds land in tmp_path, not the tree
    built = build(load_app(folder), "hosted", log=lambda _: None)
    netns.ip("tuntap", "add", "dev", TAP, "mode", "tap")
    netns.ip("address", "add", f"{LINUX}/24", "dev", TAP)
    netns.ip("link", "set", TAP, "up")
    # The harness's argv (harness/targets/unikernel.py), inside the namespace, with the
    # settings the kernel's command line would carry.
    appliance = netns.spawn(
        [
            "env",
            f"UNIKERNEL_TAP={TAP}",
            f"UNIKERNEL_IP={OURS}/24",
            "UNIBENCH_TESTS=1",
            PYTHON,
            "-I",
            "-S",
            str(built.outputs["app"]),
        ]
    )
    output = wait_for_line(appliance, f"iperf3: listening on {OURS}:5201", timeout=20)
    assert f"iperf3: listening on {OURS}:5201" in output, output + appliance.errors()
    client = netns.spawn(["iperf3", "-c", OURS, "-t", "2", "--json", "--connect-timeout", "3000"])
    client.popen.wait(timeout=20)
    status = appliance.popen.wait(timeout=15)
    output = appliance.output().decode(errors="replace")
    report = json.loads(client.output())
    assert "error" not in report, report["error"]
    assert status == 0, output + appliance.errors()
    lines = output.splitlines()
    assert lines[0].startswith("UNIBENCH-READY ") and "app=iperf3" in lines[0]
    assert lines[-1] == "UNIBENCH-EXIT status=0"
    sent, received = report["end"]["sum_sent"], report["end"]["sum_received"]
    assert sent["bytes"] == received["bytes"] > 0
    (summary,) = [line for line in lines if line.startswith("iperf3: test 1 ")]
    assert f"{received['bytes']} bytes" in summary
    print(f"\nthe hosted appliance received {received['bits_per_second'] / 1e6:.1f} Mbit/s")
