"""The fast Xen launch's parts that need no Xen: the vif hotplug script run by a real POSIX shell
against stand-ins for dom0's tools, what the console session runs at t0, and a guest built
paused whose creation fails being destroyed. The launch itself is timed in test_xen_lab.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.xen.dom0 import Dom0Error, LocalDom0
from harness.xen.launches import (
    VIF_PORT_SCRIPT,
    check_launch,
    install_vif_port_script,
    precreate,
    start_command,
)

BACKEND = "backend/vif/7/0"


class RecordingDom0(LocalDom0):
    """This host as a dom0 whose work directory is a test's, noting each command it runs."""

    def __init__(self, work: Path) -> None:
        super().__init__()
        self._work = work
        self.commands: list[str] = []

    def work_dir(self) -> str:
        return str(self._work)

    def run(self, command: str, timeout: float = 120.0) -> tuple[int, str, str]:
        self.commands.append(command)
        return super().run(command, timeout)


def tools(folder: Path, ip_status: int = 0) -> Path:
    """Stand-ins for xenstore-read, xenstore-write and ip that log their arguments, one line
    per call, to folder/calls; xenstore-read answers xenbr0 for the bridge."""
    folder.mkdir(parents=True)
    log = folder / "calls"
    for name, body in {
        "xenstore-read": f'[ "$1" = "{BACKEND}/bridge" ] && echo xenbr0',
        "xenstore-write": ":",
        "ip": f"exit {ip_status}",
    }.items():
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{body}\n')
        script.chmod(0o755)
    return log


def run_script(tmp_path: Path, action: str, ip_status: int = 0) -> tuple[int, list[str]]:
    log = tools(tmp_path / "bin", ip_status)
    script = install_vif_port_script(RecordingDom0(tmp_path))
    environment = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "vif": "vif7.0",
        "XENBUS_PATH": BACKEND,
    }
    done = subprocess.run([script, action], env=environment, capture_output=True, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, calls


def test_the_vif_script_puts_the_port_on_its_bridge_then_says_connected(tmp_path: Path) -> None:
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell is not None
    assert VIF_PORT_SCRIPT.startswith("#!/bin/sh\n")  # not bash: dash starts in a fraction
    status, calls = run_script(tmp_path, "online")
    assert status == 0
    assert calls == [
        f"xenstore-read {BACKEND}/bridge",
        "ip link set dev vif7.0 master xenbr0 up",
        f"xenstore-write {BACKEND}/hotplug-status connected",
    ]  # in this order: netback connects once it reads "connected"
    assert os.access(tmp_path / "vif-port", os.X_OK)


def test_the_vif_script_never_says_connected_when_the_port_was_not_made(tmp_path: Path) -> None:
    status, calls = run_script(tmp_path, "online", ip_status=2)
    assert status != 0
    assert not any(call.startswith("xenstore-write") for call in calls), calls


def test_the_vif_script_does_nothing_when_the_vif_goes(tmp_path: Path) -> None:
    for action in ("offline", "remove"):
        status, calls = run_script(tmp_path / action, action)
        assert (status, calls) == (0, [])


def test_the_clock_starts_at_the_whole_creation_or_at_the_unpause() -> None:
    assert start_command("xl-create", "g1", "/var/lib/unibench/guests/g1.cfg") == (
        "exec xl create -c /var/lib/unibench/guests/g1.cfg"
    )
    assert start_command("pre-created", "g1", "/x.cfg") == "xl unpause g1 && exec xl console g1"
    with pytest.raises(ValueError, match="launch=fast: say xl-create or pre-created"):
        check_launch("fast")


def test_a_guest_whose_paused_creation_fails_is_destroyed(tmp_path: Path) -> None:
    dom0 = RecordingDom0(tmp_path)
    with pytest.raises(Dom0Error):
        # No xl here, so creation fails as it would in a dom0 short of memory.
        precreate(dom0, "unibench-1-0", f"{tmp_path}/missing.cfg")
    assert dom0.commands[0].startswith("xl create -p ")
    assert dom0.commands[1].startswith("xl destroy unibench-1-0")
