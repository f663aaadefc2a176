"""The Xen lab: Xen 4.17 from Debian's packages running inside QEMU, for machines without Xen.

`bench lab xen up` boots it and leaves it running; `down` stops it; `status` says whether it is
up. A run that needs a dom0 and finds no lab starts one itself and stops it when the run ends.

The lab is one QEMU process (TCG here: `-cpu max,-smap,-smep` is what lets Debian's Xen boot
on QEMU's emulated CPU) booting Debian's Xen hypervisor with a dom0 made from Debian's standard
kernel and a small disk (baselines/xen_lab.py) whose PID 1 starts Xen's services and sshd. The
harness drives dom0 over SSH with the image's own keys. dom0 bridges its NIC into xenbr0, and
that NIC is a TAP device in a network namespace of the lab's own, so guests on xenbr0 sit on
the same link as the harness's probes, which never leave the namespace. The Linux VM disk is
attached read-only as dom0's /dev/vdb, for Linux guests to boot from.

What the lab is doing lives in STATE_DIR (/run: a reboot ends the lab too): state.json with
QEMU's pid, and the serial console's log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from baselines import block_data, linux_vm, xen_lab
from harness.xen.dom0 import GuestNetwork, SshDom0
from hostkit import cache, disk_image, namespaces
from hostkit.accel import choose_accel
from hostkit.namespaces import TapLink, entered
from hostkit.owners import token, token_alive, unmarked_environment
from hostkit.qemu import DISK_CACHE, machine_args, tap_nic
from hostkit.ssh import SshHost

Log = Callable[[str], None]

NAMESPACE = f"{namespaces.NAME_PREFIX}-xen-lab"  # not pid-named: it outlives `lab up`
STATE_DIR = Path("/run/unibench/xen-lab")
MEMORY_MIB = 4096  # dom0's, Xen's, and room for a 2 GiB guest: the memory sweep's largest
DOM0_MEMORY_MIB = 1024
CPUS = 2  # dom0 on one, a guest on the other
UP_TIMEOUT = 900.0  # to boot Xen and dom0 and answer SSH, on a loaded 2-core machine
BRIDGE = "xenbr0"
GUESTS = GuestNetwork(
    BRIDGE, NAMESPACE, prefix=namespaces.HOST_ADDRESS.rsplit(".", 1)[0] + ".", first=16, last=250
)
LINUX_DISK = "/dev/vdb"
# The block suite's data file, attached read-only (cache=none, as every VM's disk) so that
# guests get it from dom0 as a device of their own, with no copy into dom0.
BLOCK_DATA_DISK = "/dev/vdc"
# Under QEMU's emulated SVM, Xen's intercept of RDTSCP finds no next-instruction address and
# kills the guest ("SVM Insn len emulation failed"); TSC reads that do not trap avoid it.
TSC_MODE = "native"
# Xen's and dom0's command lines. QEMU's -initrd splits modules at commas: none in dom0's.
XEN_ARGS = (
    "console=com1",
    "com1=115200,8n1",
    f"dom0_mem={DOM0_MEMORY_MIB}M",
    "dom0_max_vcpus=1",
    "loglvl=info",
    "guest_loglvl=all",  # dom0's console reaches the serial log only with this
    "noreboot",
)
DOM0_ARGS = (
    "root=/dev/vda",
    "rw",
    "console=hvc0",
    "earlyprintk=xen",
    "keep_bootcon",
    "net.ifnames=0",
    "quiet",
    "random.trust_cpu=on",
    f"init={xen_lab.INIT_PATH}",
)


class LabError(RuntimeError):
    """The lab could not start or be reached; the message says why and where to look."""


@dataclass(frozen=True)
class LabState:
    pid: int
    namespace: str
    address: str
    accel: str
    overlay: str
    serial_log: str
    image: str  # the lab image's recipe hash
    linux_disk_recipe: str  # the Linux VM image's, attached as LINUX_DISK
    xen_version: str
    started: float  # time.time()
    up_seconds: float  # from QEMU's start to dom0 answering `xl info` over SSH
    block_data: str = ""  # the host file attached as BLOCK_DATA_DISK ("": a lab from before)
    # The owner token of the run that booted it, which stops it when it ends (and the next
    # harness, if that run died); "": a user's lab (`bench lab xen up`), left running.
    owner: str = ""
    # The owner token of the process booting it, until dom0 answers; "" once it is up.
    booting: str = ""


LOCK = STATE_DIR / "lock"
STOP_GRACE = 5.0  # seconds QEMU has to quit on SIGTERM


def _state_file() -> Path:
    return STATE_DIR / "state.json"


def status() -> LabState | None:
    """The running lab, or None: none is up, or one is still booting (up() waits for it).
    A lab whose QEMU died, or whose booting process died before dom0 answered, is cleaned up
    first."""
    try:
        state = LabState(**json.loads(_state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if state.booting and token_alive(state.booting):
        return None
    if not state.booting and _qemu_alive(state.pid):
        return state
    _clean_up(state)
    return None


def _qemu_alive(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and "qemu" in process.name()
    except psutil.Error:
        return False


def dom0(state: LabState) -> SshDom0:
    """The lab's dom0, reached over SSH from the lab's namespace."""
    image = xen_lab.find_lab_image()
    if image is None or image.recipe_hash != state.image:
        raise LabError(
            "the running lab was booted from a lab image that is no longer the current one: "
            "`bench lab xen down`, then `bench lab xen up`"
        )
    host = SshHost(
        name="xen-lab",
        address=state.address,
        user=image.ssh_user,
        key=image.ssh_private_key,
        host_key=image.ssh_host_key,
        namespace=state.namespace,
    )
    return SshDom0(
        host,
        "lab",
        accel=state.accel,
        guest_network=GUESTS,
        tsc_mode=TSC_MODE,
        linux_disk=LINUX_DISK,
        host_disks={state.block_data: BLOCK_DATA_DISK} if state.block_data else {},
    )


def qemu_command(
    image: xen_lab.LabImage,
    linux: linux_vm.VmImage,
    overlay: Path,
    device: str,
    accel: str,
    data: Path,
) -> list[str]:
    cpu = "max,-smap,-smep" if accel == "tcg" else "max"
    command = machine_args(accel, MEMORY_MIB, CPUS)
    command[command.index("-cpu") + 1] = cpu
    address = f"{namespaces.GUEST_ADDRESS}/{namespaces.PREFIX_LEN}"
    dom0_args = (*DOM0_ARGS, f"{linux_vm.NETWORK_PARAMETER}={address}")
    return [
        *command,
        "-drive", f"file={overlay},if=virtio,format={image.disk_format}",
        "-drive", f"file={linux.disk},if=virtio,format={linux.disk_format},readonly=on",
        "-drive", f"file={data},if=virtio,format=raw,readonly=on,cache={DISK_CACHE}",
        *tap_nic(0, device),
        "-kernel", str(image.hypervisor),
        "-append", " ".join(XEN_ARGS),
        "-initrd", f"{image.kernel} {' '.join(dom0_args)},{image.initrd}",
    ]  # fmt: skip


def up(log: Log | None = None, owner: str = "") -> LabState:
    """The running lab, booted first if there is none (a minute or more under TCG, plus the
    images' builds the first time), for `owner` (see LabState.owner). LabError if it does not
    come up; nothing is left behind."""
    say = log or (lambda _message: None)
    with cache.locked(LOCK):  # one lab, whoever asks at once
        running = status()
        if running is not None:
            return running
        return _boot(say, owner)


def _boot(say: Log, owner: str) -> LabState:
    image = xen_lab.ensure_lab_image(say)
    linux = linux_vm.ensure_vm_image("linux-vm-minimal", say)
    data = block_data.ensure_data_file()
    why_not = namespaces.available()
    if why_not is not None:
        raise LabError(f"the Xen lab needs a TAP link: {why_not}")
    _remove_leftovers()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    serial_log = STATE_DIR / "serial.log"
    accel = choose_accel()
    link = TapLink(NAMESPACE)
    overlay: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    try:
        overlays = cache.directory("xen-lab-overlays")
        for old in overlays.glob("dom0-*"):  # no lab runs while one boots: all are left over
            old.unlink(missing_ok=True)
        overlay = disk_image.overlay(image.disk, image.disk_format, overlays, "dom0")
        command = qemu_command(image, linux, overlay, link.device, accel, data)
        say(f"booting the Xen lab ({accel}); its console goes to {serial_log}")
        started = time.time()
        clock = time.monotonic()
        state = LabState(
            pid=0,
            namespace=link.name,
            address=namespaces.GUEST_ADDRESS,
            accel=accel,
            overlay=str(overlay),
            serial_log=str(serial_log),
            image=image.recipe_hash,
            linux_disk_recipe=linux.recipe_hash,
            block_data=str(data),
            xen_version="",
            started=started,
            up_seconds=0.0,
            owner=owner,
            booting=token(),
        )
        # Recorded before QEMU starts, so that if we die booting, the next harness finds it
        # (by its overlay, named on its command line) and stops it.
        cache.write_text(_state_file(), json.dumps(asdict(state), indent=2) + "\n")
        with serial_log.open("wb") as console, entered(link.name):
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `bench lab xen up`, and our Ctrl-C
                env=unmarked_environment(),  # its end is the owner's, not the process sweep's
            )
        state = dataclasses.replace(state, pid=process.pid)
        cache.write_text(_state_file(), json.dumps(asdict(state), indent=2) + "\n")
        info = _wait_for_dom0(state, process, clock + UP_TIMEOUT, say)
        state = dataclasses.replace(
            state,
            xen_version=info.get("xen_version", "?"),
            up_seconds=round(time.monotonic() - clock, 1),
            booting="",
        )
        cache.write_text(_state_file(), json.dumps(asdict(state), indent=2) + "\n")
        _children[state.pid] = process
        say(f"the Xen lab is up: Xen {state.xen_version}, {state.up_seconds:.0f} s")
        return state
    except BaseException:
        if process is not None:
            _stop_process(process.pid, process)
        if overlay is not None:
            overlay.unlink(missing_ok=True)
        _state_file().unlink(missing_ok=True)
        link.close()
        raise


# QEMU processes this process started: reaped by down(), so none is left a zombie.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _wait_for_dom0(
    state: LabState, process: subprocess.Popen[bytes], deadline: float, say: Log
) -> dict[str, str]:
    lab = dom0(state)
    last_error = "no answer yet"
    said = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LabError(
                    f"the lab's QEMU exited with status {process.returncode} before dom0 "
                    f"answered:\n{_tail(Path(state.serial_log))}"
                )
            try:
                return lab.xen_info()
            except Exception as error:  # sshd not up yet, xl not ready yet
                last_error = f"{type(error).__name__}: {error}"
            if time.monotonic() - said > 60:
                say(f"still waiting for dom0 ({last_error})")
                said = time.monotonic()
            time.sleep(2)
    finally:
        lab.close()
    raise LabError(
        f"dom0 did not answer `xl info` over SSH within {UP_TIMEOUT:.0f} s ({last_error}); "
        f"its console:\n{_tail(Path(state.serial_log))}"
    )


def _tail(path: Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no console log)"


def down(log: Log | None = None) -> bool:
    """Stops the lab and removes what it held; False if none was running."""
    say = log or (lambda _message: None)
    with cache.locked(LOCK):
        try:
            state = LabState(**json.loads(_state_file().read_text()))
        except (OSError, ValueError, TypeError):
            _remove_leftovers()
            return False
        _clean_up(state)
    say(f"the Xen lab (QEMU pid {state.pid}) is down")
    return True


def stop_orphaned() -> LabState | None:
    """Stops a lab a run booted for itself and then died without stopping; what it stopped."""
    state = status()
    if state is None or not state.owner or token_alive(state.owner):
        return None
    down()
    return state


def _clean_up(state: LabState) -> None:
    if state.pid and _qemu_alive(state.pid):
        _stop_process(state.pid, _children.pop(state.pid, None))
    for qemu in _qemu_using(state.overlay):  # started by a process that died before noting it
        _stop_process(qemu, None)
    Path(state.overlay).unlink(missing_ok=True)
    _state_file().unlink(missing_ok=True)
    _remove_leftovers()


def _stop_process(pid: int, child: subprocess.Popen[bytes] | None) -> None:
    # SIGTERM lets QEMU close its disks; dom0's is a throwaway overlay, so no guest shutdown.
    # SIGKILL for what is left after the grace.
    for signum, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)
        try:
            if child is not None:
                child.wait(timeout=wait)
            else:
                psutil.Process(pid).wait(timeout=wait)
            return
        except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
            continue
        except psutil.NoSuchProcess:
            return


def _qemu_using(overlay: str) -> list[int]:
    """QEMU processes whose command line names the lab's overlay."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if "qemu" in (process.info["name"] or "") and any(
            overlay in arg for arg in process.info["cmdline"] or ()
        ):
            found.append(process.pid)
    return found


def _remove_leftovers() -> None:
    """The lab's namespace, if a lab that is not running left it."""
    if os.path.exists(f"{namespaces.NETNS_DIR}/{NAMESPACE}"):
        with contextlib.suppress(namespaces.NamespaceError):
            namespaces.delete(NAMESPACE)
