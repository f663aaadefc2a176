"""The devices a workload needs, declared once: the vocabulary shared by the harness's workloads
and the unikernel's applications (their `config.py`, as Mirage's config.ml declares devices).

A declaration says what the workload needs, never how a target provides it: a `Network` becomes
a TAP device, a veth pair, a virtio-net NIC or a Xen vif; a `Disk` a file, a virtio-blk or a Xen
block device. Targets wire what is declared; the unikernel's build compiles the declarations into
the image, picks the drivers for its target, and hands the devices to the application's
`main(devices)`.

The image carries these classes too, so they are plain immutable classes rather than
dataclasses: `dataclasses` would pull `inspect`, `enum` and `re` into every image's boot.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal, TypeVar

    Protocol = Literal["udp", "tcp"]
    Offload = Literal["off", "on"]
    D = TypeVar("D", "Console", "Network", "Disk", "Data")

READY_MARKER = "UNIBENCH-READY"


class _Declaration:
    """Immutable, compared and hashed by its fields, and shown as the call that makes it (the
    build writes that text into the image's configuration)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} declarations are immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"


class Port(_Declaration):
    """A port the workload serves on: its name in the workload's arguments ("{name}"), its
    protocol, and its number where the workload has an address of its own (a VM, a namespace)."""

    _fields = ("name", "protocol", "number")
    __slots__ = _fields
    name: str
    protocol: Protocol
    number: int

    def __init__(self, name: str, protocol: Protocol, number: int = 0) -> None:
        if protocol not in ("udp", "tcp"):
            raise ValueError(f"port {name}: protocol is udp or tcp, not {protocol!r}")
        self._set(name=name, protocol=protocol, number=number)


class Console(_Declaration):
    """The console: standard output of a process, ttyS0 under QEMU, hvc0 under Xen. The workload
    prints `ready_marker` when it is ready for the host to use it."""

    _fields = ("ready_marker",)
    __slots__ = _fields
    ready_marker: str

    def __init__(self, ready_marker: str = READY_MARKER) -> None:
        self._set(ready_marker=ready_marker)


class Network(_Declaration):
    """An Ethernet link to the host. `offloads`: the settings of checksum and segmentation
    offload the workload can run with ("off" as the paper measured, "on" as NICs ship); a
    target's link may offer fewer."""

    _fields = ("name", "ports", "offloads")
    __slots__ = _fields
    name: str
    ports: tuple[Port, ...]
    offloads: tuple[Offload, ...]

    def __init__(
        self,
        name: str = "net0",
        ports: tuple[Port, ...] = (),
        offloads: tuple[Offload, ...] = ("off", "on"),
    ) -> None:
        self._set(name=name, ports=tuple(ports), offloads=tuple(offloads))


class Disk(_Declaration):
    """A raw block device. `backing`: a host file (an image) the device reads, or None for a
    blank disk of `size_mib` made for each launch and removed after it."""

    _fields = ("name", "size_mib", "read_only", "backing")
    __slots__ = _fields
    name: str
    size_mib: int
    read_only: bool
    backing: str | None

    def __init__(
        self,
        name: str = "disk0",
        size_mib: int = 64,
        read_only: bool = False,
        backing: str | None = None,
    ) -> None:
        self._set(name=name, size_mib=size_mib, read_only=read_only, backing=backing)


class Data(_Declaration):
    """A folder of the application compiled into the image as a read-only key-value store: each
    file's path to its bytes, or, given a `compiler` ("module:function", run on the build host
    with the path and the bytes), to what that returns: a Python literal the image loads as it
    is, so work such as parsing a zone file is done once, at build time."""

    _fields = ("folder", "compiler")
    __slots__ = _fields
    folder: str
    compiler: str | None

    def __init__(self, folder: str, compiler: str | None = None) -> None:
        if compiler is not None and ":" not in compiler:
            raise ValueError(f"Data({folder!r}): write the compiler as 'module:function'")
        self._set(folder=folder, compiler=compiler)


Device = Console | Network | Disk | Data


def devices_of(devices: tuple[Device, ...], kind: type[D]) -> list[D]:
    """The devices of one kind, in the order declared."""
    return [device for device in devices if isinstance(device, kind)]


def check_names(devices: tuple[Device, ...]) -> None:
    """Fail, saying which, if two networks or two disks share a name."""
    seen: set[tuple[str, str]] = set()
    for device in devices:
        if isinstance(device, (Network, Disk)):
            key = (type(device).__name__, device.name)
            if key in seen:
                raise ValueError(f"two {key[0]} devices named {key[1]!r}: give each its own name")
            seen.add(key)
