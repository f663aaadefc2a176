"""The `unikernel` command itself, as a user runs it: configure, build, run with the devices the
app declares, parameters, the timeout, and clean-up whatever ends the run."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostkit import namespaces
from hostkit.launch_disk import launch_disks_dir
from hostkit.namespaces import entered
from tests.support.apps import make_app
from tests.support.artifacts import require_specialized_kernel
from tests.support.interrupts import interrupted_before_the_handler
from tests.support.netns import require
from workloads import unikernel_app

pytestmark = pytest.mark.slow  # builds images (the runtime comes from the cached rootfs)

UNIKERNEL = str(Path(sys.executable).with_name("unikernel"))
NAMESPACE = re.compile(r"network: namespace (\S+), the app at (\S+),")


def unikernel(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [UNIKERNEL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def built(tmp_path: Path, workload: str, target: str = "hosted") -> Path:
    folder = tmp_path / workload
    shutil.copytree(unikernel_app(workload), folder, ignore=shutil.ignore_patterns("_build"))
    for step in (["configure", "-t", target, str(folder)], ["build", str(folder)]):
        done = unikernel(*step)
        assert done.returncode == 0, done.stdout + done.stderr
    return folder


def echo(namespace: str, address: str, deadline: float) -> bytes:
    with entered(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            sock.sendto(b"ping", (address, 7))
            try:
                return sock.recv(64)
            except TimeoutError:
                continue
    pytest.fail("no echo from the app")


def test_run_gives_the_app_its_network_and_the_timeout_ends_it_cleanly(tmp_path: Path) -> None:
    require()
    folder = built(tmp_path, "boot_probe")
    run = subprocess.Popen(
        [UNIKERNEL, "run", str(folder), "--timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stderr is not None
    first = run.stderr.readline()
    found = NAMESPACE.search(first)
    assert found, first
    name, address = found.groups()
    assert echo(name, address, time.monotonic() + 15) == b"ping"
    out, err = run.communicate(timeout=60)
    assert run.returncode == 124, err
    assert "timed out after 20 s" in err
    assert "boot-probe: echoing on 10.203.0.2:7" in out
    assert namespaces_of(run.pid) == []


def test_parameters_reach_the_app_and_its_status_is_the_commands(tmp_path: Path) -> None:
    folder = built(tmp_path, "threads_probe")
    done = unikernel("run", str(folder), "--param", "mode=create", "--param", "count=500")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^UNIBENCH-RESULT create_seconds=\d", done.stdout, re.MULTILINE)
    bad = unikernel("run", str(folder), "--param", "mode=sing")
    assert bad.returncode == 2  # the app's own status: it knows no such mode
    assert "unknown UNIBENCH_MODE 'sing'" in bad.stdout


def test_bad_input_says_what_to_do(tmp_path: Path) -> None:
    folder = built(tmp_path, "threads_probe")
    done = unikernel("run", str(folder), "--param", "no value")
    assert done.returncode == 1
    assert "--param 'no value': write NAME=VALUE" in done.stderr
    assert unikernel("run", str(folder), "--timeout", "0").returncode == 2
    fresh = tmp_path / "fresh"
    shutil.copytree(folder, fresh, ignore=shutil.ignore_patterns("_build"))
    done = unikernel("run", str(fresh))
    assert done.returncode == 1 and "is not configured" in done.stderr


def test_a_declared_disk_is_a_blank_file_for_the_run_and_goes_after_it(tmp_path: Path) -> None:
    folder = make_app(
        tmp_path / "disk_app",
        """
        import os

        def main(devices) -> int:
            disk = devices.disk()
            fd = disk.open(direct=False)
            try:
                os.pwrite(fd, b"written", 4096)
                print("size", disk.size_bytes(), "read", os.pread(fd, 7, 4096))
            finally:
                os.close(fd)
            return 0
        """,
    )
    (folder / "config.py").write_text(
        "from unikernel.devices import Console, Disk\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='disk', main='probe_main:main', devices=(Console(), Disk(size_mib=2)))\n"
    )
    assert unikernel("configure", "-t", "hosted", str(folder)).returncode == 0
    assert unikernel("build", str(folder)).returncode == 0
    done = unikernel("run", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"size {2 << 20} read b'written'" in done.stdout
    path = Path(re.search(r"disk disk0: (\S+)", done.stderr)[1])  # type: ignore[index]
    assert path.parent == launch_disks_dir() and not path.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_a_random_moment_stops_the_run_and_leaves_nothing(
    tmp_path: Path, signum: int
) -> None:
    require()
    folder = built(tmp_path, "boot_probe")
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    for _ in range(10):
        run = subprocess.Popen(
            [UNIKERNEL, "run", str(folder), "--timeout", "60"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        moment = rng.uniform(0.05, 1.5)  # before, during or after the launch
        time.sleep(moment)
        run.send_signal(signum)
        _, err = run.communicate(timeout=60)
        said = f"seed {seed}, signal at {moment:.3f} s: {err}"
        early = interrupted_before_the_handler(err)  # CPython's start-up: its status 1
        if not early:
            assert "Traceback" not in err, said
        # 128 + signum: the run stopped; -signum: the signal came before any handler; 1:
        # Ctrl-C came while the command loaded (hostkit.command_entry), and it never began.
        aborted = signum == signal.SIGINT and run.returncode == 1 and ("Aborted!" in err or early)
        assert run.returncode in (128 + signum, -signum) or aborted, said
        assert namespaces_of(run.pid) == [], said
        leftovers = [
            p for p in _processes() if str(folder) in p and "unikernel" not in p.split()[0]
        ]
        assert leftovers == []


def interruptible() -> None:
    """In the child: SIGINT as a terminal delivers it, even where the tests themselves run as a
    background job (whose shell made them ignore it, and so their children)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def namespaces_of(pid: int) -> list[str]:
    """The network namespaces process `pid` made and left."""
    prefix = f"{namespaces.NAME_PREFIX}-{pid}-"
    directory = Path(namespaces.NETNS_DIR)
    return (
        [p.name for p in directory.iterdir() if p.name.startswith(prefix)]
        if directory.exists()
        else []
    )


def _processes() -> list[str]:
    listed = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, check=True)
    return listed.stdout.splitlines()


def test_a_qemu_image_runs_with_its_parameters(tmp_path: Path) -> None:
    require_specialized_kernel()
    folder = built(tmp_path, "threads_probe", target="qemu")
    done = unikernel(
        "run", str(folder), "--param", "mode=create", "--param", "count=500", "--timeout", "240"
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert re.search(r"^UNIBENCH-RESULT create_seconds=\d", done.stdout, re.MULTILINE)
    assert "target=qemu" in done.stdout


def test_clean_removes_the_build(tmp_path: Path) -> None:
    folder = built(tmp_path, "threads_probe")
    done = unikernel("clean", str(folder))
    assert done.returncode == 0 and not (folder / "_build").exists()
