"""`bench doctor`: what this machine can run, and what to install or start for the rest."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from harness.metadata import first_line
from hostkit.accel import kvm_verdict

Status = Literal["ok", "warn", "missing"]

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def check_docker() -> Finding:
    if shutil.which("dockerd") is None:
        return Finding(
            "docker engine",
            "missing",
            "dockerd is not installed",
            "apt-get install docker.io (./bench does it on first use)",
        )
    import docker

    try:
        version = docker.from_env(timeout=10).version()
    except Exception as exc:
        return Finding(
            "docker engine",
            "missing",
            f"no engine answers: {exc}",
            "start it as root: dockerd & (./bench does it on first use)",
        )
    return Finding("docker engine", "ok", f"engine {version.get('Version')} answers")


def check_debootstrap() -> Finding:
    if shutil.which("debootstrap") is None:
        return Finding(
            "debootstrap",
            "missing",
            "needed to build the Docker and VM base images",
            "apt-get install debootstrap",
        )
    return Finding("debootstrap", "ok", "installed")


def check_qemu() -> Finding:
    done = _run(["qemu-system-x86_64", "--version"])
    if done is None or done.returncode != 0:
        return Finding(
            "qemu",
            "missing",
            "qemu-system-x86_64 not found (unikernel-qemu, linux-vm)",
            "apt-get install --no-install-recommends qemu-system-x86",
        )
    return Finding("qemu", "ok", first_line(done.stdout) or "installed")


def check_kvm() -> Finding:
    """Boots a test guest under KVM (remembered for a day): /dev/kvm alone proves nothing."""
    verdict = kvm_verdict()
    if verdict.works:
        return Finding("kvm", "ok", f"a test guest runs under KVM ({verdict.seconds:.1f} s)")
    return Finding("kvm", "warn", verdict.reason, verdict.fix or "")


def check_xen() -> Finding:
    done = _run(["xl", "info"])
    if done is not None and done.returncode == 0:
        return Finding("xen", "ok", "xl info answers: this host is a Xen dom0")
    from baselines import xen_lab  # paramiko and the lab's code: only for this check
    from harness.xen import lab

    state = lab.status()
    if state is not None:
        return Finding(
            "xen",
            "ok",
            f"not a dom0; the Xen lab is up (Xen {state.xen_version}, {state.accel}, QEMU pid "
            f"{state.pid}) and the Xen targets use it",
        )
    built = "built" if xen_lab.find_lab_image() is not None else "built on first use (minutes)"
    return Finding(
        "xen",
        "ok",
        f"not a dom0; the Xen targets start the Xen lab (Xen inside QEMU) when they run; its "
        f"image is {built}",
        "`bench lab xen up` boots it ahead, for several runs",
    )


def check_tap() -> Finding:
    """Opens a TAP device for real (not persistent, so it vanishes when closed)."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError as exc:
        return Finding(
            "tap devices",
            "missing",
            f"cannot open /dev/net/tun: {exc}",
            "run as root (CAP_NET_ADMIN) on a kernel with TUN/TAP",
        )
    try:
        name = f"ubdoc{os.getpid() % 100000}".encode()
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name, IFF_TAP | IFF_NO_PI))
    except OSError as exc:
        return Finding(
            "tap devices",
            "missing",
            f"cannot create a TAP device: {exc}",
            "run as root or grant CAP_NET_ADMIN",
        )
    finally:
        os.close(fd)
    return Finding("tap devices", "ok", "a TAP device can be created")


def check_netns() -> Finding:
    name = f"unibench-doctor-{os.getpid()}"
    created = _run(["ip", "netns", "add", name])
    if created is None:
        return Finding(
            "network namespaces", "missing", "ip (iproute2) not found", "apt-get install iproute2"
        )
    if created.returncode != 0:
        return Finding(
            "network namespaces", "missing", created.stderr.strip(), "run as root (CAP_SYS_ADMIN)"
        )
    with contextlib.suppress(Exception):
        _run(["ip", "netns", "delete", name])
    return Finding("network namespaces", "ok", "a namespace can be created")


def check_network_tools() -> Finding:
    """The tcp suite's peer (iperf3) and offload switch (ethtool)."""
    missing = [tool for tool in ("iperf3", "ethtool") if shutil.which(tool) is None]
    if missing:
        return Finding(
            "network tools",
            "missing",
            f"{' and '.join(missing)} not found: the tcp suite cannot run",
            f"apt-get install {' '.join(missing)}",
        )
    return Finding("network tools", "ok", "iperf3 and ethtool installed")


# Each suite's peers from Debian: what runs against the target, and the Linux baselines.
SUITE_PROGRAMS = {
    "dns": {"dnsperf": "dnsperf", "nsd": "nsd", "named": "bind9", "dig": "bind9-dnsutils"},
    "web": {"wrk": "wrk", "nginx": "nginx", "apache2": "apache2"},
}


def check_suite_programs() -> Finding:
    """The dns and web suites' peers, and locust (the web suite's load generator, from PyPI)."""
    missing = {
        package: suite
        for suite, programs in SUITE_PROGRAMS.items()
        for program, package in programs.items()
        if shutil.which(program) is None
    }
    if importlib.util.find_spec("locust") is None:
        missing["locust"] = "web"
    if missing:
        debian = " ".join(p for p in missing if p != "locust")
        fixes = [f"apt-get install {debian}"] if debian else []
        if "locust" in missing:
            fixes.append("./bench (its set-up installs locust into .venv)")
        suites = " and ".join(sorted(set(missing.values())))
        return Finding(
            "suite peers",
            "missing",
            f"{', '.join(missing)} not found: the {suites} suite cannot run everywhere",
            "; ".join(fixes),
        )
    return Finding("suite peers", "ok", "dnsperf, NSD, BIND9, wrk, nginx, apache2, locust")


CHECKS: tuple[Callable[[], Finding], ...] = (
    check_docker,
    check_debootstrap,
    check_qemu,
    check_kvm,
    check_xen,
    check_tap,
    check_netns,
    check_network_tools,
    check_suite_programs,
)


def run_checks() -> list[Finding]:
    return [check() for check in CHECKS]
