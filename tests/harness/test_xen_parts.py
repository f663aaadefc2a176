"""The Xen targets' parts that need no Xen: the guests' addresses, a local dom0's sessions, the
lab's QEMU command line and state, guests' disks, and how a run is told which dom0 to use."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from baselines import linux_vm, xen_lab
from harness.cli import cli
from harness.targets.base import Workload
from harness.targets.xen import Dom0Lease, XenTarget, vif_offloads_off
from harness.xen import lab
from harness.xen.dom0 import Dom0Error, GuestNetwork, LocalDom0, SshDom0
from hostkit.ssh import SshHost
from unikernel.devices import Console, Disk
from unikernel.toolchain.app import AppError


def test_guests_take_addresses_in_turn_each_with_its_own_mac() -> None:
    network = GuestNetwork("xenbr0", "ns", "10.203.0.", first=16, last=18)
    turns = [network.next_guest() for _ in range(4)]
    assert [address for address, _ in turns] == [
        "10.203.0.16", "10.203.0.17", "10.203.0.18", "10.203.0.16",
    ]  # fmt: skip
    assert turns[0][1] == "00:16:3e:cb:00:10" and turns[0] == turns[3]
    assert len({mac for _, mac in turns[:3]}) == 3


def test_a_local_session_streams_output_and_close_ends_the_command() -> None:
    session = LocalDom0().session()
    chunks = session.chunks()
    session.start("echo first; sleep 60; echo never")
    assert next(chunks) == b"first\n"
    started = time.monotonic()
    session.close()
    assert time.monotonic() - started < 10
    session.close()  # twice is harmless


def test_a_local_dom0_runs_commands_and_says_what_failed() -> None:
    dom0 = LocalDom0()
    assert dom0.check("echo $((6 * 7))").strip() == "42"
    with pytest.raises(RuntimeError, match="status 3: oops"):
        dom0.check("echo oops >&2; exit 3")


def test_a_dom0_that_is_not_there_is_unavailable_with_the_fix() -> None:
    if LocalDom0.present():
        pytest.skip("this host is a Xen dom0")
    local = Dom0Lease("local").availability()
    assert not local.ok and "not a Xen dom0" in local.reason and "lab" in local.fix
    remote = Dom0Lease("rack7").availability()
    assert not remote.ok and "no host 'rack7'" in remote.reason
    assert Dom0Lease("auto").kind() == "lab" and Dom0Lease("rack7").kind() == "ssh:rack7"


def _images(tmp_path: Path) -> tuple[xen_lab.LabImage, linux_vm.VmImage]:
    lab_image = xen_lab.LabImage(
        recipe_hash="l" * 64,
        disk=tmp_path / "lab.qcow2",
        disk_format="qcow2",
        hypervisor=tmp_path / "xen",
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd",
        kernel_release="6.1.0-50-amd64",
        xen_version="4.17",
        xen_package_version="4.17.5+72-g01140da4e8-1",
        ssh_user="root",
        ssh_private_key=tmp_path / "key",
        ssh_host_key="ssh-ed25519 AAAA",
        build_seconds=1.0,
    )
    vm = linux_vm.VmImage(
        kind="linux-vm-minimal",
        recipe_hash="v" * 64,
        disk=tmp_path / "vm.qcow2",
        disk_format="qcow2",
        kernel=tmp_path / "cloud-vmlinuz",
        initrd=tmp_path / "cloud-initrd",
        kernel_release="6.1.0-50-cloud-amd64",
        kernel_args=(),
        ssh_user="root",
        ssh_private_key=tmp_path / "key",
        ssh_host_key="ssh-ed25519 AAAA",
        network_parameter=linux_vm.NETWORK_PARAMETER,
        build_seconds=1.0,
    )
    return lab_image, vm


def test_the_lab_boots_xen_with_dom0_as_a_module_and_the_linux_and_block_disks_read_only(
    tmp_path: Path,
) -> None:
    lab_image, vm = _images(tmp_path)
    data = tmp_path / "data.img"
    argv = lab.qemu_command(lab_image, vm, tmp_path / "overlay.qcow2", "ubtap0", "tcg", data)
    assert argv[argv.index("-cpu") + 1] == "max,-smap,-smep"  # what Xen needs under TCG
    assert argv[argv.index("-kernel") + 1] == str(lab_image.hypervisor)
    # QEMU splits -initrd at commas: dom0's kernel and arguments, then its initramfs.
    module, initramfs = argv[argv.index("-initrd") + 1].split(",")
    assert module.startswith(f"{lab_image.kernel} ") and initramfs == str(lab_image.initrd)
    assert "unibench.ip=10.203.0.2/24" in module.split()
    drives = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-drive"]
    # In dom0: vda its own disk, vdb the Linux guests' (LINUX_DISK), vdc the block data.
    assert drives[1] == f"file={vm.disk},if=virtio,format=qcow2,readonly=on"
    assert drives[2] == f"file={data},if=virtio,format=raw,readonly=on,cache=none"
    assert (lab.LINUX_DISK, lab.BLOCK_DATA_DISK) == ("/dev/vdb", "/dev/vdc")
    assert "dom0_mem=1024M" in argv[argv.index("-append") + 1].split()
    assert argv[argv.index("-m") + 1] == str(lab.MEMORY_MIB)
    assert (
        lab.qemu_command(lab_image, vm, tmp_path, "ubtap0", "kvm", data)[argv.index("-cpu") + 1]
        == "max"
    )


def test_lab_status_says_how_to_start_one_when_none_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lab, "STATE_DIR", tmp_path)
    result = CliRunner().invoke(cli, ["lab", "xen", "status"])
    assert result.exit_code == 3 and "bench lab xen up" in result.output
    result = CliRunner().invoke(cli, ["lab", "xen", "status", "--json"])
    assert result.output.strip() == "null"


def test_a_lab_whose_qemu_died_is_not_reported_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lab, "STATE_DIR", tmp_path)
    monkeypatch.setattr(lab, "NAMESPACE", "unibench-xen-lab-test-none")
    overlay = tmp_path / "dom0.qcow2"
    overlay.write_bytes(b"")
    state = {
        "pid": 2**22 + 7, "namespace": "n", "address": "10.203.0.2", "accel": "tcg",
        "overlay": str(overlay), "serial_log": "", "image": "", "linux_disk_recipe": "",
        "xen_version": "4.17", "started": 0.0, "up_seconds": 1.0,
    }  # fmt: skip
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert lab.status() is None
    assert not overlay.exists() and not (tmp_path / "state.json").exists()


def test_an_unknown_xen_dom0_is_refused_before_anything_runs() -> None:
    result = CliRunner().invoke(
        cli, ["run", "--suite", "boot", "--target", "unikernel-xen", "--xen-dom0", "rack7"]
    )
    assert result.exit_code == 2 and "neither lab, local nor a host" in result.output


def test_a_xen_guest_gets_the_disks_dom0_holds_and_is_refused_others(tmp_path: Path) -> None:
    data = tmp_path / "data.img"
    host = SshHost(name="lab", address="10.0.0.1", user="root", key=tmp_path / "key", host_key="")
    dom0 = SshDom0(host, "lab", host_disks={str(data): "/dev/vdc"})
    target = XenTarget("unikernel-xen", "unikernel", "test", Dom0Lease("lab"))
    reader = Workload(
        name="reader",
        script=tmp_path / "reader.py",
        devices=(Console(), Disk("data", read_only=True, backing=str(data))),
    )
    (disk,) = target._dom0_disks(reader, dom0)
    assert disk.spec() == "format=raw,vdev=xvda,access=ro,target=/dev/vdc"
    elsewhere = Workload("other", tmp_path / "reader.py", devices=(Disk("scratch"),))
    with pytest.raises(AppError, match=r"only disks dom0 holds .*`bench lab xen down`"):
        target._dom0_disks(elsewhere, dom0)
    writable = Workload("writer", tmp_path / "w.py", devices=(Disk("d", backing=str(data)),))
    with pytest.raises(AppError, match="only read-only ones"):
        target._dom0_disks(writable, dom0)


class ScriptedDom0(LocalDom0):
    """A dom0 whose commands all end as scripted, and which keeps what it was asked."""

    def __init__(self, status: int, err: str) -> None:
        super().__init__()
        self.commands: list[str] = []
        self._answer = (status, "", err)

    def run(self, command: str, timeout: float = 60) -> tuple[int, str, str]:
        self.commands.append(command)
        return self._answer


def test_offloads_off_turns_the_guest_s_vif_plain_in_dom0() -> None:
    dom0 = ScriptedDom0(0, "")
    vif_offloads_off(dom0, "unibench-7")
    (command,) = dom0.commands
    assert "xl domid unibench-7" in command and "ethtool -K $vif tx off sg off tso off" in command


@pytest.mark.parametrize(
    ("status", "err", "says"),
    [
        (127, "bash: line 1: ethtool: command not found", "ethtool is missing.*apt-get install"),
        (1, "Cannot get device udp-fragmentation-offload settings", "could not turn off"),
    ],
)
def test_a_vif_that_cannot_be_made_plain_is_a_clear_error(status: int, err: str, says: str) -> None:
    with pytest.raises(Dom0Error, match=says):
        vif_offloads_off(ScriptedDom0(status, err), "unibench-7")
