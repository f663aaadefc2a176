"""The `xl` configuration that starts an image as a Xen PVH guest.

PVH boots the same vmlinux QEMU boots (its PVH entry note), with the initramfs inside it; the
console is Xen's (hvc0), and a guest that powers off or crashes is destroyed, so `xl create` to
the end of the guest's life is one boot, as the harness measures it. A Linux guest (the harness's
linux-xen) comes through the same function with its ramdisk and disk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

KERNEL_ARGS = (
    "console=hvc0",
    "panic=-1",
    "quiet",
    "random.trust_cpu=on",
    "UNIKERNEL_TARGET=xen",
)
TSC_MODES = ("default", "always_emulate", "native", "native_paravirt")
# xl's own syntax: a name becomes part of device and file names, and nothing here may close a
# quoted string.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_SCRIPT = re.compile(r"^/[A-Za-z0-9_./-]+$")


class XlConfigError(ValueError):
    """A value xl would misread; the message says which and what is allowed."""


@dataclass(frozen=True)
class Vif:
    """A NIC on a dom0 bridge; a fixed MAC keeps the neighbours' ARP caches right when a later
    guest reuses the address. `script`: the hotplug script that puts the back end's port on the
    bridge (a path in dom0; None: xl's own, vif-bridge)."""

    bridge: str
    mac: str | None = None
    script: str | None = None

    def spec(self) -> str:
        if not _NAME.match(self.bridge):
            raise XlConfigError(f"bridge name {self.bridge!r}: letters, digits, '_.-' only")
        spec = f"bridge={self.bridge}"
        if self.mac is not None:
            if not _MAC.match(self.mac):
                raise XlConfigError(f"MAC {self.mac!r}: six lower-case hex pairs joined by ':'")
            spec += f",mac={self.mac}"
        if self.script is not None:
            if not _SCRIPT.match(self.script):
                raise XlConfigError(
                    f"script {self.script!r}: an absolute path of letters, digits, '_.-/'"
                )
            spec += f",script={self.script}"
        return spec


@dataclass(frozen=True)
class Disk:
    """A block device of dom0's given to the guest as `vdev` (xvda), read-only by default so
    that many guests can boot one disk."""

    target: str  # a path in dom0: /dev/vdb
    vdev: str = "xvda"
    writable: bool = False

    def spec(self) -> str:
        if any(c in self.target for c in "',\"= ") or not self.target.startswith("/"):
            raise XlConfigError(f"disk {self.target!r}: an absolute path without ',= \"' in it")
        access = "rw" if self.writable else "ro"
        return f"format=raw,vdev={self.vdev},access={access},target={self.target}"


def xl_config(
    name: str,
    kernel: PurePath,
    memory_mib: int,
    vcpus: int = 1,
    extra_args: tuple[str, ...] = (),
    *,
    kernel_args: Sequence[str] = KERNEL_ARGS,
    ramdisk: PurePath | None = None,
    disks: Sequence[Disk] = (),
    vifs: Sequence[Vif] = (),
    tsc_mode: str | None = None,
) -> str:
    """The config file's text. `kernel` and `ramdisk` are paths in dom0; `tsc_mode` None
    leaves Xen's default."""
    if not _NAME.match(name):
        raise XlConfigError(f"guest name {name!r}: letters, digits, '_.-', at most 64")
    if memory_mib < 16:
        raise XlConfigError(f"memory {memory_mib} MiB: a PVH guest needs at least 16")
    if vcpus < 1:
        raise XlConfigError(f"vcpus {vcpus}: at least 1")
    cmdline = " ".join((*kernel_args, *extra_args))
    if '"' in cmdline or "\n" in cmdline:
        raise XlConfigError(f"kernel command line {cmdline!r} may not hold '\"' or a newline")
    lines = [
        f'name = "{name}"',
        'type = "pvh"',
        f'kernel = "{_path(kernel)}"',
    ]
    if ramdisk is not None:
        lines.append(f'ramdisk = "{_path(ramdisk)}"')
    lines += [
        f"memory = {memory_mib}",
        f"vcpus = {vcpus}",
        f'cmdline = "{cmdline}"',
    ]
    if disks:
        lines.append(f"disk = [{', '.join(repr(disk.spec()) for disk in disks)}]")
    if vifs:
        lines.append(f"vif = [{', '.join(repr(vif.spec()) for vif in vifs)}]")
    if tsc_mode is not None:
        if tsc_mode not in TSC_MODES:
            raise XlConfigError(f"tsc_mode {tsc_mode!r}: one of {', '.join(TSC_MODES)}")
        lines.append(f'tsc_mode = "{tsc_mode}"')
    lines += [
        'on_poweroff = "destroy"',
        'on_reboot = "destroy"',
        'on_crash = "destroy"',
        "",
    ]
    return "\n".join(lines)


def _path(path: PurePath) -> str:
    text = str(path)
    if '"' in text or "\n" in text or not text.startswith("/"):
        raise XlConfigError(f"path {text!r}: absolute, without '\"' or a newline")
    return text
