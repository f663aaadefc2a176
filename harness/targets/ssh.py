"""The `ssh` targets: machines someone else provisioned, reached over SSH (PerfKit Benchmarker's
static hosts). `bench run --target ssh --hosts FILE` runs on every host the file lists; each is
a target of its own, `ssh:<name>`.

The hosts file is TOML:

    [[host]]
    name = "lab1"                         # the target is ssh:lab1
    address = "192.0.2.10"
    port = 22                             # optional
    user = "bench"
    key = "~/.ssh/unibench_ed25519"       # a private key file; never a password
    host_key = "ssh-ed25519 AAAA..."      # the server's public key: checked, never learned
    description = "a 2019 Xeon, bare metal"
    python = "python3"                    # optional: the interpreter there
    namespace = "unibench-lab"            # optional: the network namespace it is reached from

A launch copies the workload's script into a fresh folder on the host, runs it there with the
host's python3, reads its output as the console, and reaches its ports at the host's address.
Stopping kills it and removes the folder. What it costs the host is not measured (Usage: None).
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.console import ConsoleWatcher
from harness.targets.base import (
    Availability,
    ImageSize,
    Instance,
    LaunchSettings,
    Log,
    Target,
    Usage,
    Workload,
)
from hostkit import ssh as vm_ssh
from hostkit.ssh import CONNECT_TIMEOUT, SshHost, channel_chunks

if TYPE_CHECKING:
    from unikernel.devices import Offload

FIRST_PORT = 7000  # where a workload's ports go when they have no number of their own


class HostsFileError(ValueError):
    """The hosts file is wrong; the message says where and what to write."""


def load_hosts(path: Path) -> list[SshHost]:
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise HostsFileError(f"{path}: {error}") from None
    entries = document.get("host")
    if not isinstance(entries, list) or not entries:
        raise HostsFileError(f"{path}: list the hosts as [[host]] tables (see `bench run --help`)")
    hosts = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}, host {number}"
        missing = [k for k in ("name", "address", "user", "key", "host_key") if k not in entry]
        if missing:
            raise HostsFileError(f"{where}: missing {', '.join(missing)}")
        unknown = set(entry) - set(SshHost.__dataclass_fields__)
        if unknown:
            raise HostsFileError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        fields = {**entry, "key": Path(str(entry["key"])).expanduser()}
        if not isinstance(fields.get("port", 22), int):
            raise HostsFileError(f"{where}: port is a number")
        hosts.append(SshHost(**fields))
    names = [host.name for host in hosts]
    if len(set(names)) != len(names):
        raise HostsFileError(f"{path}: host names must differ: {names}")
    return hosts


class SshInstance(Instance):
    """The workload run on the host through one SSH session."""

    def __init__(
        self,
        host: SshHost,
        workload: Workload,
        settings: LaunchSettings,
        port_numbers: dict[str, int] | None = None,
        disk_paths: dict[str, str] | None = None,
    ) -> None:
        """`port_numbers`: where the workload's ports go (default: from FIRST_PORT on);
        `disk_paths`: the host's device for each disk the workload declares."""
        missing = [disk.name for disk in workload.disks if disk.name not in (disk_paths or {})]
        if missing:
            raise ValueError(
                f"{host.name} has no device for disk {', '.join(missing)} of {workload.name}"
            )
        self._disk_paths = disk_paths or {}
        self.ready_marker = workload.ready_marker
        self._host = host
        self._workload = workload
        self._settings = settings
        self._lock = threading.Lock()
        self._stopped = False
        self.phases: dict[str, float] = {}
        self.namespace = host.namespace
        # Not the ports' own numbers by default: a host someone else runs may serve those.
        numbers = port_numbers or {
            port.name: FIRST_PORT + index for index, port in enumerate(workload.ports)
        }
        self._ports = {name: (host.address, number) for name, number in numbers.items()}
        self._client = host.connect()
        try:
            self._folder = self._run("mktemp -d /tmp/unibench.XXXXXX").strip()
            with self._client.open_sftp() as sftp:
                sftp.put(str(workload.script), f"{self._folder}/{workload.script.name}")
            self._channel = self._client.get_transport().open_session()  # type: ignore[union-attr]
            self._channel.set_combine_stderr(True)
        except BaseException:
            self._client.close()
            raise
        self.console = ConsoleWatcher(channel_chunks(self._channel), name=workload.name)
        self.console.start()

    def _run(self, command: str) -> str:
        status, out, err = vm_ssh.run(self._client, command, timeout=CONNECT_TIMEOUT)
        if status != 0:
            raise RuntimeError(f"ssh {self._host.name}: {command!r} failed ({status}): {err}")
        return out

    def start(self) -> float:
        places = {name: f"0.0.0.0:{port}" for name, (_, port) in self._ports.items()}
        places.update(self._disk_paths)
        script = f"{self._folder}/{self._workload.script.name}"
        argv = self._workload.argv(places, script, self._settings.workload_params)
        # The shell's pid is the workload's (exec), written where stop() finds it.
        command = f"echo $$ > {self._folder}/pid; exec {shlex.join([self._host.python, *argv])}"
        t0 = time.perf_counter()
        self._channel.exec_command(command)
        return t0

    def address(self, port: str) -> tuple[str, int] | None:
        return self._ports.get(port)

    def usage(self) -> Usage:
        return Usage(cpu_seconds=None, peak_memory_bytes=None)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        folder = shlex.quote(self._folder)
        with contextlib.suppress(Exception):  # a host gone away must not hide the other steps
            self._run(f"kill -9 $(cat {folder}/pid 2>/dev/null) 2>/dev/null; rm -rf {folder}")
        self._channel.close()
        self._client.close()
        self.console.join(timeout=5)


class SshTarget(Target):
    def __init__(self, host: SshHost) -> None:
        self.host = host
        self.name = f"ssh:{host.name}"
        self.description = host.description or f"{host.user}@{host.address} over SSH"

    def availability(self) -> Availability:
        try:
            self.host.connect(timeout=10).close()
        except Exception as error:
            return Availability(
                False,
                f"cannot log in to {self.host.address}: {type(error).__name__}: {error}",
                "check the address, user, key and host_key in the hosts file",
            )
        return Availability(True)

    def prepare(
        self, workload: Workload, log: Log, own: Sequence[Mapping[str, str]] = ({},)
    ) -> None:
        status, _, err = self.host.run(f"{shlex.quote(self.host.python)} --version")
        if status != 0:
            raise RuntimeError(f"{self.name}: no {self.host.python} there ({err.strip()})")

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        return SshInstance(self.host, workload, settings)

    def link_offloads(self, workload: Workload) -> tuple[Offload, ...]:
        return ("on",)  # the host's NIC as its owner set it up

    def image_size(
        self, workload: Workload, build: str | None, log: Log, own: Mapping[str, str] | None = None
    ) -> ImageSize:
        """What the host's python3 and its standard library take on its disk, as `du` counts
        them there (no compressed size: nothing is copied back to compress)."""
        command = (
            f"{shlex.quote(self.host.python)} -I -c "
            "'import sys, sysconfig; print(sys.executable, sysconfig.get_paths()[\"stdlib\"])'"
        )
        status, out, err = self.host.run(command)
        if status != 0 or len(out.split()) != 2:
            raise RuntimeError(f"{self.name}: cannot find its python3 ({err.strip()})")
        status, out, err = self.host.run(f"du -scbL {out.strip()} | tail -n 1")
        if status != 0:
            raise RuntimeError(f"{self.name}: du failed ({err.strip()})")
        total = int(out.split()[0])
        return ImageSize(total=(total, total))

    def metadata(self) -> dict[str, object]:
        _, uname, _ = self.host.run("uname -srm")
        return {"address": self.host.address, "uname": uname.strip()}


def ssh_targets(hosts_file: Path) -> list[Target]:
    return [SshTarget(host) for host in load_hosts(hosts_file)]
