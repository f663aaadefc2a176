"""The dns suite's Linux side: the benchmark zone, and NSD and BIND9 started on it."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from harness.targets.base import free_port
from tests.support.netns import require
from workloads import linux_script
from workloads.dns.dns_server import FIXED_NAMES, ORIGIN, READY_LINE, ZONE_SIZES, zone_text

SCRIPT = linux_script("dns", "dns_server.py")


def owner_names(text: str) -> set[str]:
    owners: set[str] = set()
    for line in text.splitlines():
        if line and not line.startswith(("$", " ")):
            owner = line.split()[0]
            owners.add(ORIGIN if owner == "@" else f"{owner}.{ORIGIN}")
    return owners


@pytest.mark.parametrize("names", ZONE_SIZES)
def test_the_zone_has_exactly_the_names_it_is_named_for(names: int) -> None:
    assert len(owner_names(zone_text(names))) == names


def test_a_zone_too_small_for_its_fixed_names_is_refused() -> None:
    with pytest.raises(ValueError, match="more than"):
        zone_text(len(FIXED_NAMES))


def dig(port: int, *query: str) -> str:
    done = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+norecurse", "+tries=1", "+time=2", *query],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize("server", ["nsd", "bind9"])
def test_the_server_answers_for_the_zone_then_leaves_nothing_behind(server: str) -> None:
    require("dig", "nsd" if server == "nsd" else "named")
    port = free_port("udp")
    before = set(glob.glob(f"{tempfile.gettempdir()}/unibench-dns-*"))
    argv = [sys.executable, "-I", "-S", str(SCRIPT), "--server", server]
    argv += ["--listen", f"127.0.0.1:{port}", "--names", "100"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith(f"{READY_LINE} 100 names on 127.0.0.1:{port}")
        answer = dig(port, f"h1.{ORIGIN}", "A")
        assert "status: NOERROR" in answer and "flags: qr aa" in answer
        assert "10.0.0.1" in answer
        assert "status: NXDOMAIN" in dig(port, f"absent.{ORIGIN}", "A")
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) is not None
    assert set(glob.glob(f"{tempfile.gettempdir()}/unibench-dns-*")) <= before


def test_a_missing_argument_says_how_to_call_it() -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), "--server", "nsd", "--listen", "nowhere"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "--names" in done.stderr


def test_the_folder_of_a_killed_server_is_removed_by_the_next_one() -> None:
    require("nsd")
    argv = [sys.executable, "-I", "-S", str(SCRIPT), "--server", "nsd", "--names", "100"]
    killed = subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{free_port('udp')}"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert killed.stdout is not None and killed.stdout.readline().startswith(READY_LINE)
    left = glob.glob(f"{tempfile.gettempdir()}/unibench-dns-{killed.pid}-*")
    os.killpg(killed.pid, signal.SIGKILL)  # as the process target stops its workloads
    killed.wait()
    assert len(left) == 1 and os.path.isdir(left[0])  # SIGKILL left no time to clean up
    next_one = subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{free_port('udp')}"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert next_one.stdout is not None and next_one.stdout.readline().startswith(READY_LINE)
        assert not os.path.exists(left[0])
    finally:
        next_one.send_signal(signal.SIGTERM)
        next_one.wait(timeout=30)
