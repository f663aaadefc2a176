"""Debian packages on the build host, through apt and dpkg: what is installed, installing what is
missing, and fetching a package's files without installing it."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

# Other jobs on the machine may hold dpkg's lock for a while; wait rather than fail.
_APT_OPTIONS = ("-o", "DPkg::Lock::Timeout=600", "-o", "Acquire::Retries=3")


class PackageError(RuntimeError):
    """A package could not be found, installed or fetched."""


def installed_version(package: str) -> str | None:
    """The installed version of `package`, None when it is not installed."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, version = result.stdout.partition(" ")
    if result.returncode != 0 or not status.startswith("ii"):
        return None
    return version.strip()


def ensure_installed(packages: Iterable[str]) -> None:
    """Install those of `packages` that are missing (needs root), refreshing the package lists
    once if apt does not know one."""
    missing = [package for package in packages if installed_version(package) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise PackageError(
            f"missing Debian packages: {' '.join(missing)}; installing them needs root: "
            f"run `apt-get install {' '.join(missing)}` as root, or run this as root"
        )
    install = ["apt-get", "install", "-y", "--no-install-recommends", *_APT_OPTIONS, *missing]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if _run(install, env=env).returncode == 0:
        return
    _run(["apt-get", "update", *_APT_OPTIONS], env=env)
    result = _run(install, env=env)
    if result.returncode != 0:
        raise PackageError(f"`{' '.join(install)}` failed:\n{_tail(result.stdout)}")


def candidate_version(package: str) -> str:
    """The version apt would install for `package`."""
    out = _check_output(["apt-cache", "policy", package])
    match = re.search(r"^\s*Candidate:\s*(\S+)", out, re.MULTILINE)
    if match is None or match[1] == "(none)":
        raise PackageError(f"apt knows no installable version of {package}")
    return match[1]


def depends(package: str, version: str) -> list[str]:
    """The packages `package` at `version` depends on, alternatives reduced to the first one."""
    out = _check_output(["apt-cache", "show", f"{package}={version}"])
    match = re.search(r"^Depends:\s*(.+)$", out, re.MULTILINE)
    if match is None:
        return []
    names = []
    for clause in match[1].split(","):
        first = clause.split("|")[0].strip()
        names.append(first.split()[0].split(":")[0])
    return names


def download(package: str, version: str, directory: Path) -> Path:
    """Fetch the .deb of `package` at `version` into `directory` (no installation)."""
    directory.mkdir(parents=True, exist_ok=True)
    result = _run(["apt-get", "download", *_APT_OPTIONS, f"{package}={version}"], cwd=directory)
    debs = sorted(directory.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise PackageError(f"apt-get download {package}={version} failed:\n{_tail(result.stdout)}")
    return debs[0]


def extract(deb: Path, directory: Path) -> None:
    """Unpack the files of `deb` under `directory`, as dpkg would install them under /."""
    result = _run(["dpkg-deb", "-x", str(deb), str(directory)])
    if result.returncode != 0:
        raise PackageError(f"dpkg-deb -x {deb} failed:\n{_tail(result.stdout)}")


def _run(
    command: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        check=False,
    )


def _check_output(command: Sequence[str]) -> str:
    result = _run(command)
    if result.returncode != 0:
        raise PackageError(f"`{' '.join(command)}` failed:\n{_tail(result.stdout)}")
    return result.stdout


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])
