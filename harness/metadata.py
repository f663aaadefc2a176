"""Facts about the machine and software, captured once per run, so that runs can be compared
knowing what differed between them."""

from __future__ import annotations

import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path

import docker
import psutil

REPO = Path(__file__).resolve().parents[1]


def _command_output(argv: list[str], cwd: Path | None = None) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, cwd=cwd, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor()


def distribution() -> str | None:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        return None


def git_revision() -> str | None:
    revision = _command_output(["git", "rev-parse", "HEAD"], cwd=REPO)
    if revision is None:
        return None
    dirty = _command_output(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO)
    return revision + ("-dirty" if dirty else "")


def docker_engine_version() -> str | None:
    try:
        client = docker.from_env(timeout=5)
        try:
            return str(client.version().get("Version"))
        finally:
            client.close()
    except Exception:
        return None


def first_line(text: str | None) -> str | None:
    return text.splitlines()[0] if text else None


def capture_host() -> dict[str, object]:
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": psutil.cpu_count(logical=True),
        "memory_bytes": psutil.virtual_memory().total,
        "kernel": platform.release(),
        "distribution": distribution(),
        "unibench_revision": git_revision(),
        "python": platform.python_version(),
        "docker_engine": docker_engine_version(),
        "qemu": first_line(_command_output(["qemu-system-x86_64", "--version"])),
        "xen": first_line(_command_output(["xl", "info", "xen_version"])),
        "targets": {},
    }
