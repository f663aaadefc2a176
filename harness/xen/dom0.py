"""A dom0: where the harness runs `xl` to create, watch and destroy Xen guests.

Three kinds reach one: this host when it is dom0 itself (`local`), a dom0 someone else runs,
over SSH (`ssh:NAME` from a hosts file), and the Xen lab (harness/xen/lab.py), which is an SSH
dom0 inside QEMU whose bridge shares a TAP link with the harness, so that the harness can probe
the guests' network services too. All three offer the same few operations: run a command,
place a file, and open a session whose output streams back while it runs (`xl create -c`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shlex
import signal
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import paramiko

from harness.console import read_pipe
from hostkit import ssh as vm_ssh
from hostkit.ssh import SshHost, channel_chunks

COMMAND_TIMEOUT = 120.0
DOM0_DIR = "/var/lib/unibench"  # images and guest configs, on an SSH dom0


class Dom0Error(RuntimeError):
    """A command in dom0 failed; the message has its output."""


class GuestNetwork:
    """A dom0 bridge the harness can reach, and the addresses its guests take: one per launch,
    in turn, each with a MAC of its own so a reused address never meets a stale ARP entry."""

    def __init__(
        self, bridge: str, namespace: str, prefix: str, first: int, last: int, prefix_len: int = 24
    ) -> None:
        self.bridge = bridge
        self.namespace = namespace  # where the harness reaches the bridge from
        self.prefix = prefix  # "10.203.0."
        self.prefix_len = prefix_len
        self._turn = itertools.cycle(range(first, last + 1))
        self._lock = threading.Lock()

    def next_guest(self) -> tuple[str, str]:
        """The next address and its MAC (Xen's OUI, 00:16:3e)."""
        with self._lock:
            host = next(self._turn)
        return f"{self.prefix}{host}", f"00:16:3e:cb:00:{host:02x}"


class Session(ABC):
    """A command in dom0 whose output the harness reads while it runs."""

    @abstractmethod
    def chunks(self) -> Iterator[bytes]:
        """The output as it comes (standard error too); may be called before start()."""

    @abstractmethod
    def start(self, command: str) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Ends the command (if still running) and frees the session. Safe to call twice."""


class Dom0(ABC):
    name: str
    accel = "native"  # how the hypervisor itself runs: the lab's is emulated ("tcg")
    guest_network: GuestNetwork | None = None  # None: the harness cannot reach guests
    tsc_mode: str | None = None  # what xl must ask for here, if known: see guest_tsc_mode()
    linux_disk: str | None = None  # the dom0 device holding the Linux guests' disk
    # Host files dom0 holds as devices of its own (the lab's attached disks): file -> device.
    host_disks: Mapping[str, str] = MappingProxyType({})

    @abstractmethod
    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
        """`command` in dom0's shell: exit status, output, errors."""

    @abstractmethod
    def place(self, local: Path) -> str:
        """Where `local` is in dom0, copied there first if it must be (once per content)."""

    @abstractmethod
    def write(self, path: str, text: str) -> None: ...

    @abstractmethod
    def session(self) -> Session: ...

    def work_dir(self) -> str:
        return DOM0_DIR

    def check(self, command: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """`command`'s output; Dom0Error if it fails."""
        status, out, err = self.run(command, timeout)
        if status != 0:
            raise Dom0Error(f"{self.name}: `{command}` failed with status {status}: {err.strip()}")
        return out

    def xen_info(self) -> dict[str, str]:
        """`xl info` as a mapping: xen_version, virt_caps, free_memory, ..."""
        info = {}
        for line in self.check("xl info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        return info

    def guest_tsc_mode(self) -> str | None:
        """The tsc_mode guests need here: "native" where Xen itself runs on QEMU's emulated CPU
        (whose SVM gives Xen's RDTSCP intercept no next-instruction address, and the guest
        dies of it), else Xen's default (None)."""
        if self.tsc_mode is not None:
            return self.tsc_mode
        status, cpu, _ = self.run("grep -m1 '^model name' /proc/cpuinfo")
        return "native" if status == 0 and "QEMU TCG" in cpu else None

    def close(self) -> None:  # noqa: B027
        """Frees connections; by default nothing."""


# --- this host -----------------------------------------------------------------------------------


class LocalDom0(Dom0):
    """This host, when it is Xen's dom0 (/proc/xen/capabilities says control_d)."""

    name = "local"

    @staticmethod
    def present() -> bool:
        try:
            return "control_d" in Path("/proc/xen/capabilities").read_text()
        except OSError:
            return False

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
        done = subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True, timeout=timeout, check=False
        )
        return done.returncode, done.stdout, done.stderr

    def place(self, local: Path) -> str:
        return str(local.resolve())

    def write(self, path: str, text: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)

    def work_dir(self) -> str:
        return "/run/unibench/xen"

    def session(self) -> Session:
        return _LocalSession()


class _LocalSession(Session):
    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def chunks(self) -> Iterator[bytes]:
        return read_pipe(self._read_fd)

    def start(self, command: str) -> None:
        self._process = subprocess.Popen(
            ["sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=self._write_fd,
            stderr=self._write_fd,
            start_new_session=True,  # killed as a group by close()
        )
        os.close(self._write_fd)  # the child holds the only writer: its exit ends chunks()
        self._write_fd = -1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._write_fd >= 0:
            os.close(self._write_fd)
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        # The reader may still be in os.read: closing its fd under it is what ends the read
        # once the writer is gone, so close only after the child has exited.
        os.close(self._read_fd)


# --- over SSH ------------------------------------------------------------------------------------


class SshDom0(Dom0):
    """A dom0 reached over SSH: one connection, kept for the run, every command and session a
    channel on it (a login costs seconds on the lab's emulated CPU)."""

    def __init__(
        self,
        host: SshHost,
        name: str | None = None,
        *,
        accel: str = "native",
        guest_network: GuestNetwork | None = None,
        tsc_mode: str | None = None,
        linux_disk: str | None = None,
        host_disks: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.name = name or f"ssh:{host.name}"
        self.accel = accel
        self.guest_network = guest_network
        self.tsc_mode = tsc_mode
        self.linux_disk = linux_disk
        self.host_disks = dict(host_disks or {})
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def _connected(self) -> paramiko.SSHClient:
        with self._lock:
            client = self._client
            transport = None if client is None else client.get_transport()
            if client is None or transport is None or not transport.is_active():
                if client is not None:
                    client.close()
                client = self._client = self.host.connect()
            return client

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
        return vm_ssh.run(self._connected(), command, timeout=timeout)

    def place(self, local: Path) -> str:
        digest = hashlib.sha256(local.read_bytes()).hexdigest()[:16]
        remote = f"{self.work_dir()}/images/{digest}-{local.name}"
        status, _, _ = self.run(f"test -s {shlex.quote(remote)}")
        if status != 0:
            self.check(f"mkdir -p {self.work_dir()}/images")
            partial = f"{remote}.part"
            with self._connected().open_sftp() as sftp:
                sftp.put(str(local), partial)
            self.check(f"mv {shlex.quote(partial)} {shlex.quote(remote)}")
        return remote

    def write(self, path: str, text: str) -> None:
        self.check(f"mkdir -p {shlex.quote(str(Path(path).parent))}")
        with self._connected().open_sftp() as sftp, sftp.open(path, "w") as remote:
            remote.write(text.encode())

    def session(self) -> Session:
        transport = self._connected().get_transport()
        assert transport is not None  # _connected() made it active
        return _SshSession(transport.open_session())

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class _SshSession(Session):
    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self._channel.set_combine_stderr(True)

    def chunks(self) -> Iterator[bytes]:
        return channel_chunks(self._channel)

    def start(self, command: str) -> None:
        self._channel.exec_command(command)

    def close(self) -> None:
        self._channel.close()
