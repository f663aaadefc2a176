"""How a Xen guest is launched, and so what its boot time counts: the seed's Fig. 6.

    xl-create    `xl create -c` as it is: on the clock, xl builds the domain, loads the kernel,
                 sets up the back ends and runs their hotplug scripts (vif-bridge, in bash,
                 with its forks and iptables), and only then unpauses the guest.
    pre-created  the toolstack's work done ahead, as the Mirage paper's asynchronous toolstack
                 and LightVM's split toolstack do, without patching Xen: `xl create -p` builds
                 the domain paused before the launch (a phase recorded on its own,
                 `phase_precreate`), with the vif's bridge port made by VIF_PORT_SCRIPT, a
                 POSIX shell script of two commands instead of vif-bridge; the clock runs from
                 `xl unpause` only.

The xl config is the same for both but for the vif's script, and a unikernel has no disk and no
device model either way (PVH, its initramfs inside the kernel): nothing else is on the path.
"""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.xen.dom0 import Dom0

LAUNCHES = ("xl-create", "pre-created")
VIF_PORT_SCRIPT_NAME = "vif-port"

# libxl runs a vif's script as `script online|offline|add|remove` with vif=vifD.N and
# XENBUS_PATH=backend/vif/D/N, and netback connects only once hotplug-status says connected.
# Offline needs nothing: the port leaves the bridge when the domain's vif goes.
VIF_PORT_SCRIPT = """#!/bin/sh
# unibench: put a guest's vif on its bridge, as vif-bridge does, without bash or iptables.
set -e
case "$1" in
online)
    bridge=$(xenstore-read "$XENBUS_PATH/bridge")
    ip link set dev "$vif" master "$bridge" up
    xenstore-write "$XENBUS_PATH/hotplug-status" connected
    ;;
esac
"""


def install_vif_port_script(dom0: Dom0) -> str:
    """Writes VIF_PORT_SCRIPT into dom0 (every time: it is small, and a stale copy would
    mislead) and returns its path there."""
    path = f"{dom0.work_dir()}/{VIF_PORT_SCRIPT_NAME}"
    dom0.write(path, VIF_PORT_SCRIPT)
    dom0.check(f"chmod 755 {shlex.quote(path)}")
    return path


def check_launch(launch: str) -> None:
    if launch not in LAUNCHES:
        raise ValueError(f"launch={launch}: say {' or '.join(LAUNCHES)}")


def precreate(dom0: Dom0, name: str, config_path: str) -> float:
    """Builds the guest paused (`xl create -p`); returns how long that took, in seconds. If it
    fails, whatever it made of the guest is destroyed before the error is raised."""
    began = time.perf_counter()
    try:
        dom0.check(f"xl create -p {shlex.quote(config_path)}")
    except BaseException:
        dom0.run(f"xl destroy {shlex.quote(name)} >/dev/null 2>&1")
        raise
    return time.perf_counter() - began


def start_command(launch: str, name: str, config_path: str) -> str:
    """What the guest's console session runs at t0: xl's whole creation, or the unpause of the
    guest built ahead, each followed by the guest's console until it ends (`launch` checked:
    XenGuest does it)."""
    if launch == "xl-create":
        return f"exec xl create -c {shlex.quote(config_path)}"
    quoted = shlex.quote(name)
    return f"xl unpause {quoted} && exec xl console {quoted}"
