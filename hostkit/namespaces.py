"""Network namespaces and the links in them: where a networked guest and its peers meet.

A target whose guest owns its network stack (a hosted unikernel on a TAP device, a VM on a TAP
device) gets a fresh namespace per launch holding one TAP device. Linux's side of the device
is the host's end of the cable (HOST_ADDRESS); the guest is GUEST_ADDRESS. The guest's process
starts inside the namespace, and every probe and client the harness runs against it does too,
so no frame ever leaves the namespace, and deleting it removes everything.

Entering a namespace is per thread (setns(2) on the calling thread), which lets the harness
spawn a child into it, or open a socket in it, without `ip netns exec`'s extra process and
mounts inside what the boot suite times.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Collection, Iterator

from hostkit.interrupts import signals_deferred
from hostkit.owners import kill_groups, pid_alive

NAME_PREFIX = "unibench"
NETNS_DIR = "/run/netns"
TAP_DEVICE = "ubtap0"
HOST_ADDRESS = "10.203.0.1"
GUEST_ADDRESS = "10.203.0.2"
PREFIX_LEN = 24
_CLONE_NEWNET = 0x40000000  # from <sched.h>
_OWNED = re.compile(rf"^{NAME_PREFIX}-(\d+)-\d+$")
_serial = itertools.count()


class NamespaceError(RuntimeError):
    """A namespace or link could not be made; the message says what was missing."""


def _setns(fd: int) -> None:
    # os.setns() comes with Python 3.12; we run 3.11.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """The calling thread inside namespace `name` for the block (None: stay where it is).
    Children spawned and sockets opened meanwhile belong to that namespace for good.

    Ctrl-C and SIGTERM are held back for the block: raised between entering and leaving, they
    would leave the thread in the namespace. So keep the block short: open a socket in it, and
    connect outside (a socket stays in the namespace it was made in)."""
    if name is None:
        yield
        return
    with (
        signals_deferred(),
        open("/proc/thread-self/ns/net") as home,
        open(f"{NETNS_DIR}/{name}") as target,
    ):
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def _ip(*args: str) -> str:
    # A session of its own: Ctrl-C signals the terminal's whole group, and an `ip` stopped
    # half-way leaves a half-made namespace or device.
    done = subprocess.run(
        ["ip", *args],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
        start_new_session=True,
    )
    if done.returncode:
        raise NamespaceError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class NetworkNamespace:
    """A namespace named unibench-<our pid>-<n>, deleted by close() (or, if we die first, by
    the next harness's remove_stale()). One given a `name` of its own outlives its maker on
    purpose (the Xen lab's): remove_stale() leaves it alone."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"{NAME_PREFIX}-{os.getpid()}-{next(_serial)}"
        self._closed = False
        path = f"{NETNS_DIR}/{self.name}"
        theirs = os.path.exists(path)  # then `ip` refuses it, and it is not ours to delete
        try:
            with signals_deferred():  # never mid-`ip`: it would leave a namespace half-made
                _ip("netns", "add", self.name)
            self.ip("link", "set", "lo", "up")
        except BaseException:  # Ctrl-C too: the caller never gets this object to close
            self._closed = True
            if not theirs and os.path.exists(path):
                with contextlib.suppress(NamespaceError):
                    delete(self.name)
            raise

    def ip(self, *args: str) -> str:
        """`ip` inside the namespace; its output."""
        return _ip("-n", self.name, *args)

    def exec_prefix(self) -> list[str]:
        """What to put before a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            delete(self.name)


class TapLink:
    """A namespace with one TAP device: Linux's side at HOST_ADDRESS, up, waiting for the guest
    (a hosted unikernel or QEMU) to attach to it by name from inside the namespace."""

    def __init__(self, name: str | None = None) -> None:
        self.namespace = NetworkNamespace(name)
        self.device = TAP_DEVICE
        self.host_address = HOST_ADDRESS
        self.guest_address = GUEST_ADDRESS
        self.prefix_len = PREFIX_LEN
        try:
            self.namespace.ip("tuntap", "add", "dev", self.device, "mode", "tap")
            self.namespace.ip(
                "address", "add", f"{self.host_address}/{self.prefix_len}", "dev", self.device
            )
            self.namespace.ip("link", "set", self.device, "up")
        except BaseException:
            self.namespace.close()
            raise

    @property
    def name(self) -> str:
        return self.namespace.name

    def close(self) -> None:
        self.namespace.close()


class VethLink:
    """Two namespaces joined by a veth pair: Linux to Linux on a link of its own, the tcp
    suite's reference. The server's side is GUEST_ADDRESS, the client's HOST_ADDRESS.

    With `raw_guest_end`, the server's end (`device`) gets no address: a hosted unikernel
    started in the server's namespace takes it whole with an AF_PACKET socket, as it takes
    its NIC in a VM, and answers for GUEST_ADDRESS itself."""

    def __init__(self, offloads: bool = True, *, raw_guest_end: bool = False) -> None:
        self.client = NetworkNamespace()
        self.host_address = HOST_ADDRESS
        self.guest_address = GUEST_ADDRESS
        self.prefix_len = PREFIX_LEN
        self.device = "veth1"  # the server's (the guest's) end
        try:
            self.server = NetworkNamespace()
        except BaseException:
            self.client.close()
            raise
        try:
            self.client.ip(
                "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
                "netns", self.server.name,
            )  # fmt: skip
            for namespace, device, address in (
                (self.client, "veth0", self.host_address),
                (self.server, self.device, None if raw_guest_end else self.guest_address),
            ):
                if address is not None:
                    namespace.ip("address", "add", f"{address}/{PREFIX_LEN}", "dev", device)
                namespace.ip("link", "set", device, "up")
                if not offloads:
                    _without_offloads(namespace, device)
        except BaseException:
            self.close()
            raise

    @property
    def name(self) -> str:
        """Where the client runs."""
        return self.client.name

    def close(self) -> None:
        try:
            self.server.close()
        finally:
            self.client.close()


def _without_offloads(namespace: NetworkNamespace, device: str) -> None:
    # Checksums, segmentation and coalescing all done per packet, as on the paper's testbed.
    argv = [*namespace.exec_prefix(), "ethtool", "-K", device]
    argv += ["tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off", "sg", "off"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    if done.returncode:
        raise NamespaceError(
            f"ethtool -K {device} failed ({done.stderr.strip()}); apt-get install ethtool"
        )


def held() -> list[str]:
    """The namespaces this process has made and not yet deleted."""
    prefix = f"{NAME_PREFIX}-{os.getpid()}-"
    try:
        return sorted(name for name in os.listdir(NETNS_DIR) if name.startswith(prefix))
    except FileNotFoundError:
        return []


def remove_held(keep: Collection[str] = ()) -> list[str]:
    """Delete the namespaces this process made and still holds, but those in `keep`; their
    names. For after every launch has stopped: what is left then, a stop failed to remove."""
    removed = []
    for name in held():
        if name not in keep:
            with contextlib.suppress(NamespaceError):
                delete(name)
                removed.append(name)
    return removed


def remove_stale() -> list[str]:
    """Delete namespaces left by harness processes that died before cleaning up, and kill what
    still runs in them (a process inside would keep a namespace alive after its name went);
    their names."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        owner = _OWNED.match(name)
        if owner is None or int(owner.group(1)) == os.getpid() or pid_alive(int(owner.group(1))):
            continue
        with contextlib.suppress(NamespaceError):
            kill_groups([int(pid) for pid in _ip("netns", "pids", name).split()])
            delete(name)
            removed.append(name)
    return removed


def delete(name: str) -> None:
    """Delete namespace `name`, whoever made it."""
    with signals_deferred():  # never mid-`ip`: the name would outlive the deletion
        _ip("netns", "delete", name)


def available() -> str | None:
    """Why namespaces with TAP devices cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces and TAP devices need root"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (modprobe tun)"
    if shutil.which("ip") is None:
        return "the ip tool is missing (apt-get install iproute2)"
    return None
