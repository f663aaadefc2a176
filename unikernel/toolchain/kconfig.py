"""The specialized kernel's configuration: tinyconfig plus only what our images need.

Following Lupine Linux, a specialized kernel is `make tinyconfig` plus only what the image needs.
One kernel serves QEMU and Xen: a PVH vmlinux with the virtio and the Xen front-ends both built in
costs a few hundred KiB, against a second 10-minute build on every fresh machine. The one other
kernel is the Xen variant for images whose own Python drivers (unikernel/drivers/xen) are the
net and block front-ends: Linux's xen-netfront would bind every vif, with no opt-out per device,
so that kernel has neither of its Xen front-ends (DRIVERS and fragment()).
Kconfig drops silently any option whose dependencies are not met, so after `olddefconfig` we check
that every option we asked for really has the value we asked for, and name the ones that do not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from unikernel.toolchain.app import DRIVERS

# True: =y; False: "is not set"; int and str: the value of an int or string option.
Value = bool | int | str
Fragment = Mapping[str, Value]

# What every image needs, whatever the hypervisor: the boot, a console, PID 1 being CPython, and
# raw devices for the library OS above. No INET, no IPv6: our Python stack owns IP.
BASE: Fragment = {
    "64BIT": True,
    # Boot: the PVH entry note in vmlinux (QEMU, Firecracker and Xen load the ELF directly), an
    # embedded uncompressed initramfs, no modules.
    "HYPERVISOR_GUEST": True,
    "PVH": True,
    "BLK_DEV_INITRD": True,
    "RD_GZIP": False,
    "RD_BZIP2": False,
    "RD_LZMA": False,
    "RD_XZ": False,
    "RD_LZO": False,
    "RD_LZ4": False,
    "RD_ZSTD": False,
    "MODULES": False,
    # bzImage decompression is on the boot path; gzip is several times faster to undo than
    # tinyconfig's xz, which matters under TCG.
    "KERNEL_GZIP": True,
    "KERNEL_XZ": False,
    # Power-off (QEMU -M pc) and Xen PVH both need ACPI; the image powers off via sysrq 'o'.
    "ACPI": True,
    "MAGIC_SYSRQ": True,
    # Console: a 16550 UART (QEMU, Firecracker), messages from the kernel.
    "PRINTK": True,
    "TTY": True,
    "SERIAL_8250": True,
    "SERIAL_8250_CONSOLE": True,
    # Running CPython as PID 1: ELF and #! executables, the mounts boot.py makes, the system calls
    # the interpreter and our scheduler use.
    "BINFMT_ELF": True,
    "BINFMT_SCRIPT": True,
    "DEVTMPFS": True,
    "DEVTMPFS_MOUNT": True,
    "PROC_FS": True,
    "SYSFS": True,
    "SHMEM": True,
    "TMPFS": True,
    "MULTIUSER": True,
    "FUTEX": True,
    "EPOLL": True,
    "EVENTFD": True,
    "SIGNALFD": True,
    "TIMERFD": True,
    "POSIX_TIMERS": True,
    "HIGH_RES_TIMERS": True,
    "ADVISE_SYSCALLS": True,
    # Linux AIO: the block driver keeps O_DIRECT requests in flight without a thread each.
    "AIO": True,
    # Entropy before Python starts (its hash randomization reads it at start-up).
    "RANDOM_TRUST_CPU": True,
    # Raw devices: Ethernet through AF_PACKET, block devices.
    "NET": True,
    "PACKET": True,
    "NETDEVICES": True,
    "NET_CORE": True,
    "INET": False,
    "IPV6": False,
    "BLOCK": True,
    "BLK_DEV": True,
    # No I/O scheduler: requests go to the device in the order the library OS sends them,
    # as Mirage's do; an elevator would cost each request time for one process's raw reads.
    "MQ_IOSCHED_DEADLINE": False,
    "MQ_IOSCHED_KYBER": False,
    "IOSCHED_BFQ": False,
}

# The hypervisors' devices.
QEMU: Fragment = {
    # virtio over PCI for QEMU -M pc, over MMIO for microvm and Firecracker.
    "PCI": True,
    "VIRTIO_MENU": True,
    "VIRTIO_PCI": True,
    "VIRTIO_MMIO": True,
    "VIRTIO_MMIO_CMDLINE_DEVICES": True,
    "VIRTIO_NET": True,
    "VIRTIO_BLK": True,
    "HW_RANDOM": True,
    "HW_RANDOM_VIRTIO": True,
    # kvmclock when KVM accelerates.
    "PARAVIRT": True,
    "KVM_GUEST": True,
}

XEN: Fragment = {
    "PARAVIRT": True,
    "XEN": True,
    "XEN_PVH": True,
    # Only PVH: the PV and HVM guest paths are large and unused.
    "XEN_PV": False,
    "XEN_PVHVM_GUEST": False,
    "XEN_NETDEV_FRONTEND": True,
    "XEN_BLKDEV_FRONTEND": True,
    "HVC_XEN": True,
    "HVC_XEN_FRONTEND": True,
    # For our own netfront and blkfront in Python: /dev/xen/{evtchn,gntalloc}; /dev/xen/xenbus
    # comes with XEN itself.
    "XEN_DEV_EVTCHN": True,
    "XEN_GRANT_DEV_ALLOC": True,
}

# With drivers="python" (App.drivers), our Python front-ends drive the vifs and vbds through the
# device files above, and Linux's must not bind them.
_WITHOUT_KERNEL_FRONTENDS: Fragment = {
    "XEN_NETDEV_FRONTEND": False,
    "XEN_BLKDEV_FRONTEND": False,
}


class KconfigError(RuntimeError):
    """The final configuration lacks options we asked for."""


@dataclass(frozen=True)
class Mismatch:
    """An option whose final value is not the one we asked for."""

    name: str
    wanted: Value
    got: str | None  # the raw value in .config ("y", "m", '"text"'), None when not set

    def __str__(self) -> str:
        return f"CONFIG_{self.name}: wanted {_show(self.wanted)}, got {self.got or 'not set'}"


def fragment(drivers: str = "kernel") -> dict[str, Value]:
    """The options the specialized kernel needs on top of tinyconfig; with drivers="python",
    those of the variant without Linux's Xen net and block front-ends."""
    if drivers not in DRIVERS:
        raise ValueError(f"drivers={drivers!r}: say {' or '.join(DRIVERS)}")
    options = {**BASE, **QEMU, **XEN}
    if drivers == "python":
        options.update(_WITHOUT_KERNEL_FRONTENDS)
    return options


def render(options: Fragment) -> str:
    """`options` as .config lines."""
    return "".join(_line(name, value) + "\n" for name, value in options.items())


_SET = re.compile(r"^CONFIG_(\w+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_(\w+) is not set$")


def parse(config_text: str) -> dict[str, str]:
    """The options set in a .config, name (without CONFIG_) to raw value; unset ones are absent."""
    values: dict[str, str] = {}
    for line in config_text.splitlines():
        if match := _SET.match(line.strip()):
            values[match[1]] = match[2]
    return values


def merge(config_text: str, options: Fragment) -> str:
    """`config_text` with `options` overriding its lines for the same names, as
    scripts/kconfig/merge_config.sh -m does; `make olddefconfig` must follow."""
    kept = [line for line in config_text.splitlines() if (_option_name(line) or "") not in options]
    return "\n".join(kept) + "\n" + render(options)


def mismatches(config_text: str, options: Fragment) -> list[Mismatch]:
    """The options of `options` that do not have their wanted value in `config_text`."""
    final = parse(config_text)
    found = []
    for name, wanted in options.items():
        got = final.get(name)
        if got != _raw(wanted):
            found.append(Mismatch(name, wanted, got))
    return found


def verify(config_text: str, options: Fragment) -> None:
    """Fail, naming them, if Kconfig dropped or changed options we asked for."""
    wrong = mismatches(config_text, options)
    if wrong:
        listed = "\n  ".join(str(m) for m in wrong)
        raise KconfigError(
            f"{len(wrong)} kernel option(s) did not end up as asked (missing dependencies?):"
            f"\n  {listed}"
        )


def config_hash(config_text: str, source_version: str) -> str:
    """The cache key of a kernel: its final configuration and the source it is built from."""
    digest = hashlib.sha256()
    digest.update(source_version.encode() + b"\0")
    digest.update(config_text.encode())
    return digest.hexdigest()


def _raw(value: Value) -> str | None:
    if value is True:
        return "y"
    if value is False:
        return None
    if isinstance(value, int):
        return str(value)
    return _quote(value)


def _line(name: str, value: Value) -> str:
    raw = _raw(value)
    return f"# CONFIG_{name} is not set" if raw is None else f"CONFIG_{name}={raw}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _show(value: Value) -> str:
    raw = _raw(value)
    return "not set" if raw is None else raw


def _option_name(line: str) -> str | None:
    match = _SET.match(line.strip()) or _UNSET.match(line.strip())
    return match[1] if match else None
