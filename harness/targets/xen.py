"""The Xen targets: the unikernel and a Debian guest as Xen PVH guests, created with `xl`.

    unikernel-xen  our image (the specialized kernel with the initramfs inside), the paper's
                   Mirage on Xen
    linux-xen      Debian's cloud kernel booting the Linux VM disk with our init as PID 1 (the
                   linux-vm-minimal guest), the paper's "Linux PV" baseline

Both reach a dom0 (harness/xen/dom0.py): this host if it is one, a dom0 over SSH, or the Xen
lab (harness/xen/lab.py), which a run starts itself if none is up and stops when it ends. A
launch writes the guest's xl config in dom0, and start() runs `xl create -c` there: t0 is taken
just before, and the guest's console streams back over the same session. The guest is destroyed
when the launch ends, however it ends. On the lab the guest's NIC sits on the harness's TAP link,
so the boot suite's UDP probe reaches it from the lab's namespace as it reaches a QEMU guest.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from baselines import linux_vm
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
from harness.targets.linux_vm import BAKED_IN_WORKLOADS, vm_host_availability, vm_image_size
from harness.targets.unikernel import BUILDS, app_for, image_size
from harness.xen import lab
from harness.xen.dom0 import Dom0, Dom0Error, LocalDom0, Session, SshDom0
from harness.xen.launches import (
    LAUNCHES,
    check_launch,
    install_vif_port_script,
    precreate,
    start_command,
)
from hostkit.accel import choose_accel
from hostkit.owners import pid_alive, token
from hostkit.ssh import SshHost
from hostkit.xl import Disk, Vif, xl_config
from unikernel.net.service import ADDRESS_VARIABLE, OFFLOADS_VARIABLE
from unikernel.toolchain.app import DRIVERS, AppError
from unikernel.toolchain.image import build
from unikernel.toolchain.launch import parameter_environment

if TYPE_CHECKING:
    from unikernel.devices import Offload

GuestKind = Literal["unikernel", "linux"]
# linux-vm-minimal's command line, for Xen: the disk is xvda and read-only (every guest boots
# the one disk dom0 holds), the console is Xen's.
LINUX_KERNEL_ARGS = (
    "root=/dev/xvda",
    "ro",
    "console=hvc0",
    "net.ifnames=0",
    "quiet",
    "panic=-1",
    "random.trust_cpu=on",
    f"init={linux_vm.INIT_PATH}",
)
_guests = itertools.count()


class Dom0Lease:
    """The dom0 the Xen targets of one run share: resolved on first use, and a lab this run
    started is stopped when the last target using it lets go."""

    def __init__(self, choice: str = "auto", hosts: tuple[SshHost, ...] = ()) -> None:
        self.choice = choice  # "auto", "lab", "local" or the name of a host in `hosts`
        self._hosts = {host.name: host for host in hosts}
        self._dom0: Dom0 | None = None
        self._started_lab = False
        self._holders: set[str] = set()
        self._lock = threading.Lock()

    def kind(self) -> str:
        if self.choice == "auto":
            return "local" if LocalDom0.present() else "lab"
        return self.choice if self.choice in ("lab", "local") else f"ssh:{self.choice}"

    def accel(self) -> str:
        """How the hypervisor runs: under the lab's QEMU, or on the hardware."""
        return choose_accel() if self.kind() == "lab" else "native"

    def availability(self) -> Availability:
        kind = self.kind()
        if kind == "local":
            if LocalDom0.present():
                return Availability(True)
            return Availability(False, "this host is not a Xen dom0", "use the lab: --xen-dom0 lab")
        if kind.startswith("ssh:"):
            if self.choice not in self._hosts:
                return Availability(
                    False, f"no host {self.choice!r} in the hosts file", "add it to --hosts FILE"
                )
            return Availability(True)
        return vm_host_availability("the Xen lab")

    def acquire(self, holder: str, log: Log) -> Dom0:
        with self._lock:
            self._holders.add(holder)
            if self._dom0 is None:
                self._dom0 = self._resolve(log)
                if self.kind() in ("lab", "local"):  # a shared remote dom0's guests are not ours
                    remove_stale_guests(self._dom0, log)
            return self._dom0

    def _resolve(self, log: Log) -> Dom0:
        kind = self.kind()
        if kind == "local":
            return LocalDom0()
        if kind.startswith("ssh:"):
            return SshDom0(self._hosts[self.choice])
        state = lab.status()
        if state is None:
            state = lab.up(log, owner=token())
            self._started_lab = state.owner == token()  # not if another run booted it first
        else:
            log(f"using the running Xen lab (QEMU pid {state.pid})")
        return lab.dom0(state)

    def release(self, holder: str) -> None:
        with self._lock:
            self._holders.discard(holder)
            if self._holders or self._dom0 is None:
                return
            self._dom0.close()
            self._dom0 = None
            if self._started_lab:
                self._started_lab = False
                lab.down()

    def lab_state(self) -> lab.LabState | None:
        return lab.status() if self.kind() == "lab" else None


_GUEST_NAME = re.compile(r"^unibench-(\d+)-\d+$")


def guest_name() -> str:
    """A new guest's name: it holds this harness's pid, so that the next harness can destroy
    the guests of one that died."""
    return f"unibench-{os.getpid()}-{next(_guests)}"


def remove_stale_guests(dom0: Dom0, log: Log) -> None:
    """Destroys guests that harness processes of this host left when they died."""
    _, listing, _ = dom0.run("xl list")
    for line in listing.splitlines()[1:]:
        name = line.split()[0] if line.split() else ""
        owner = _GUEST_NAME.match(name)
        if owner is not None and not pid_alive(int(owner[1])):
            log(f"destroying Xen guest {name}, left by a harness that died")
            dom0.run(f"xl destroy {shlex.quote(name)}")


class XenGuest(Instance):
    """One guest: its config written in dom0 at creation (and the guest built paused there if
    the launch is pre-created), `xl create -c` or `xl unpause` at start (launches.py)."""

    probe_during_launch = True

    def __init__(
        self,
        dom0: Dom0,
        name: str,
        config: str,
        ports: dict[str, tuple[str, int]],
        namespace: str | None,
        ready_marker: str,
        launch: str = LAUNCHES[0],
        plain_link: bool = False,
    ) -> None:
        check_launch(launch)
        self.phases: dict[str, float] = {}
        self.plain_link = plain_link  # offloads off: dom0's side of the vif made to match
        self.ready_marker = ready_marker
        self.namespace = namespace
        self._dom0 = dom0
        self._name = name
        self._ports = ports
        self._config_path = f"{dom0.work_dir()}/guests/{name}.cfg"
        self._lock = threading.Lock()
        self._stopped = False
        self._launch = launch
        dom0.write(self._config_path, config)
        if launch == "pre-created":
            try:
                self.phases["precreate"] = precreate(dom0, name, self._config_path)
            except BaseException:
                dom0.run(f"rm -f {shlex.quote(self._config_path)}")
                raise
        self._session: Session = dom0.session()
        self.console = ConsoleWatcher(self._session.chunks(), name=name)
        self.console.start()

    def start(self) -> float:
        t0 = time.perf_counter()
        self._session.start(start_command(self._launch, self._name, self._config_path))
        return t0

    def ready(self, deadline: float) -> tuple[float, str]:
        marked = super().ready(deadline)
        if self.plain_link:
            vif_offloads_off(self._dom0, self._name)
        return marked

    def address(self, port: str) -> tuple[str, int] | None:
        return self._ports.get(port)

    def usage(self) -> Usage:
        return Usage(cpu_seconds=None, peak_memory_bytes=None)  # dom0's, not this host's

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        name = shlex.quote(self._name)
        try:
            self._session.close()
        finally:
            # Fails only if the guest is still there after the destroy.
            self._dom0.check(
                f"xl destroy {name} >/dev/null 2>&1 || ! xl domid {name} >/dev/null 2>&1; "
                f"rm -f {shlex.quote(self._config_path)}"
            )
            self.console.join(timeout=5)


def vif_offloads_off(dom0: Dom0, guest: str) -> None:
    """Turn off the offloads of the guest's first vif on dom0's side, as our netfront
    negotiates them (no checksum offload, no scatter-gather, so no TSO): dom0 then hands the
    guest whole frames with full checksums whichever front end it runs. Linux's netfront
    asks for all three, and netback would pass it 64 KiB GSO packets."""
    name = shlex.quote(guest)
    status, _, err = dom0.run(
        f"vif=vif$(xl domid {name}).0 && ethtool -K $vif tx off sg off tso off "
        "&& ethtool -k $vif | grep -qx 'tcp-segmentation-offload: off'"
    )
    if status == 127 or "ethtool: not found" in err or "ethtool: command not found" in err:
        raise Dom0Error(
            f"{dom0.name}: ethtool is missing, which offloads=off needs to turn the guest's vif "
            "plain: apt-get install ethtool in dom0 (the lab has it once rebuilt: bench lab "
            "xen down, then bench lab xen up)"
        )
    if status != 0:
        raise Dom0Error(
            f"{dom0.name}: could not turn off the offloads of {guest}'s vif (status {status}): "
            f"{err.strip()[-300:]}"
        )


class XenTarget(Target):
    def __init__(self, name: str, guest: GuestKind, description: str, lease: Dom0Lease) -> None:
        self.name = name
        self.guest = guest
        self.family = "unikernel" if guest == "unikernel" else "linux"
        self.description = description
        self.lease = lease
        # Who drives the guest's vifs and vbds (Linux's front-ends, or our own in Python), and
        # what its boot time counts (launches.py).
        self.params = {"launch": LAUNCHES}
        if guest == "unikernel":
            self.params["drivers"] = DRIVERS
        self._vif_script: str | None = None  # VIF_PORT_SCRIPT's path in dom0, once placed
        self._dom0: Dom0 | None = None
        self._kernel: dict[tuple[str, str], str] = {}  # (workload, drivers) -> path in dom0
        self._ramdisk: str | None = None
        self._tsc_mode: str | None = None
        self._memory: dict[str, int] = {}
        self._facts: dict[str, object] = {}

    def availability(self) -> Availability:
        return self.lease.availability()

    def prepare(
        self, workload: Workload, log: Log, own: Sequence[Mapping[str, str]] = ({},)
    ) -> None:
        if self.guest == "linux" and workload.name not in BAKED_IN_WORKLOADS:
            raise AppError(f"{self.name} runs the boot workload only, not {workload.name}")
        loaded = app_for(workload) if self.guest == "unikernel" else None
        dom0 = self.lease.acquire(self.name, log)
        self._dom0 = dom0
        self._dom0_disks(workload, dom0)
        if any(c.get("launch") == "pre-created" for c in own):
            self._vif_script = install_vif_port_script(dom0)
        if loaded is not None:
            for drivers in dict.fromkeys(c.get("drivers", DRIVERS[0]) for c in own):
                built = build(loaded, "xen", "specialized", log=log, drivers=drivers)
                log(f"placing the {workload.name} image ({drivers} drivers) in dom0 ({dom0.name})")
                self._kernel[workload.name, drivers] = dom0.place(built.outputs["image"])
            self._memory[workload.name] = loaded.app.memory_mib
        else:
            image = linux_vm.ensure_vm_image("linux-vm-minimal", log)
            if dom0.linux_disk is None:
                raise AppError(
                    f"{self.name} boots the Linux VM disk, which only the Xen lab's dom0 holds "
                    "(as /dev/vdb): use --xen-dom0 lab"
                )
            state = self.lease.lab_state()
            if state is not None and state.linux_disk_recipe != image.recipe_hash:
                raise AppError(
                    "the running Xen lab holds an older Linux VM disk: "
                    "`bench lab xen down`, then run again"
                )
            log(f"placing the Linux kernel and initramfs in dom0 ({dom0.name})")
            self._kernel[workload.name, ""] = dom0.place(image.kernel)
            self._ramdisk = dom0.place(image.initrd)
            self._memory[workload.name] = linux_vm.DEFAULT_MEMORY_MIB
        self._tsc_mode = dom0.guest_tsc_mode()
        info = dom0.xen_info()
        self._facts = {
            "tsc_mode": self._tsc_mode or "default",
            "xen_version": info.get("xen_version"),
            "virt_caps": info.get("virt_caps"),
            "dom0_kernel": info.get("release"),
        }

    def _dom0_disks(self, workload: Workload, dom0: Dom0) -> list[Disk]:
        """The workload's disks as dom0's devices, in the order the image wires them (xvda,
        xvdb, ...). A guest's disk must be a device dom0 already holds: the Xen lab holds the
        block suite's data; anything else is refused, saying so."""
        disks = []
        for index, declared in enumerate(workload.disks):
            device = dom0.host_disks.get(declared.backing or "")
            if device is None:
                held = ", ".join(dom0.host_disks) or "none"
                raise AppError(
                    f"{self.name} gives a guest only disks dom0 holds (here: {held}), not "
                    f"{workload.name}'s {declared.name} ({declared.backing or 'a blank disk'}); "
                    "a lab started before the block suite existed holds none: "
                    "`bench lab xen down`, then run again"
                )
            if not declared.read_only:
                raise AppError(
                    f"{workload.name}'s disk {declared.name}: dom0's disks are shared by every "
                    "guest, so only read-only ones can be given"
                )
            disks.append(Disk(device, vdev=f"xvd{chr(ord('a') + index)}"))
        return disks

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        dom0 = self._dom0
        drivers = str(settings.workload_params.get("drivers", DRIVERS[0]))
        kernel = self._kernel.get((workload.name, drivers if self.guest == "unikernel" else ""))
        if dom0 is None or kernel is None:
            raise RuntimeError(
                f"{self.name}: prepare() was not called for {workload.name} ({drivers} drivers)"
            )
        name = guest_name()
        launch = str(settings.workload_params.get("launch", LAUNCHES[0]))  # XenGuest checks it
        script = self._vif_script if launch == "pre-created" else None
        if launch == "pre-created" and script is None:
            raise RuntimeError(f"{self.name}: prepare() did not place the vif script in dom0")
        network = dom0.guest_network if workload.ports else None
        ports: dict[str, tuple[str, int]] = {}
        vifs: list[Vif] = []
        address_args: list[str] = []
        if network is not None:
            address, mac = network.next_guest()
            vifs.append(Vif(network.bridge, mac, script))
            ports = {port.name: (address, port.number) for port in workload.ports}
            cidr = f"{address}/{network.prefix_len}"
            address_args.append(
                f"{ADDRESS_VARIABLE}={cidr}"
                if self.guest == "unikernel"
                else f"{linux_vm.NETWORK_PARAMETER}={cidr}"
            )
        memory = settings.memory_mib or self._memory[workload.name]
        # Offloads off: no TSO from the guest's side (UNIKERNEL_OFFLOADS), none from dom0's.
        plain = settings.offloads is False and network is not None and self.guest == "unikernel"
        if self.guest == "unikernel":
            # The kernel hands name=value arguments it does not know to PID 1's environment.
            environment = parameter_environment(settings.workload_params)
            if plain:
                environment[OFFLOADS_VARIABLE] = "off"
            parameters = [f"{k}={v}" for k, v in environment.items()]
            config = xl_config(
                name,
                PurePosixPath(kernel),
                memory,
                extra_args=(*parameters, *address_args),
                disks=self._dom0_disks(workload, dom0),
                vifs=vifs,
                tsc_mode=self._tsc_mode,
            )
        else:
            assert self._ramdisk is not None and dom0.linux_disk is not None
            config = xl_config(
                name,
                PurePosixPath(kernel),
                memory,
                extra_args=tuple(address_args),
                kernel_args=LINUX_KERNEL_ARGS,
                ramdisk=PurePosixPath(self._ramdisk),
                disks=[Disk(dom0.linux_disk)],
                vifs=vifs,
                tsc_mode=self._tsc_mode,
            )
        namespace = network.namespace if network is not None else None
        return XenGuest(
            dom0, name, config, ports, namespace, workload.ready_marker, launch, plain_link=plain
        )

    def link_offloads(self, workload: Workload) -> tuple[Offload, ...]:
        # Off only: our netfront negotiates none yet (offloads on, GSO and scatter-gather in
        # it, is planned); with Linux's netfront, dom0's side is turned off at ready().
        return ("off",)

    def image_builds(self, workload: Workload) -> tuple[str, ...]:
        return BUILDS if self.guest == "unikernel" else ()

    def image_size(
        self,
        workload: Workload,
        build_name: str | None,
        log: Log,
        own: Mapping[str, str] | None = None,
    ) -> ImageSize:
        if self.guest == "linux":
            # What dom0 boots: Debian's kernel and the linux-vm-minimal guest's initrd and disk.
            return vm_image_size(linux_vm.ensure_vm_image("linux-vm-minimal", log))
        prune = build_name != "standard"
        drivers = (own or {}).get("drivers")
        return image_size(
            build(app_for(workload), "xen", "specialized", log=log, prune=prune, drivers=drivers)
        )

    def release(self) -> None:
        self._dom0 = None
        self._kernel.clear()
        self.lease.release(self.name)

    def metadata(self) -> dict[str, object]:
        facts: dict[str, object] = {
            "guest": self.guest,
            "dom0": self.lease.kind(),
            **self._facts,
            **self.sample_params(),
        }
        state = self.lease.lab_state()
        if state is not None:
            facts["lab"] = {"up_seconds": state.up_seconds, "pid": state.pid}
        return facts

    def sample_params(self) -> dict[str, str]:
        default = linux_vm.DEFAULT_MEMORY_MIB if self.guest == "linux" else None
        params = {"hypervisor": "xen", "accel": self.lease.accel()}
        if default is not None:
            params["memory"] = str(default)
        return params


def xen_targets(lease: Dom0Lease | None = None) -> list[Target]:
    shared = lease or Dom0Lease()
    return [
        XenTarget("unikernel-xen", "unikernel", "the unikernel image as a Xen PVH guest", shared),
        XenTarget(
            "linux-xen", "linux", "Debian's cloud kernel and disk as a Xen PVH guest", shared
        ),
    ]
