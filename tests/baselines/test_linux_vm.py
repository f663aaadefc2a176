"""The Linux VM images' recipe, cache and launch arguments: fast, and never a build."""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from baselines import linux_vm
from baselines.linux_vm import (
    GUEST_DIR,
    GUEST_FILES,
    VM_KINDS,
    VmImage,
    ensure_vm_image,
    find_vm_image,
    kernel_args,
    overlaid,
    overlay,
    qemu_command,
    recipe_hash,
)
from hostkit.debootstrap import RootfsRecipe
from hostkit.errors import ArtifactError
from tests.support.artifacts import refuse
from workloads.boot_probe import boot_probe


@pytest.fixture
def no_build(refuse_builds: pytest.MonkeyPatch) -> None:
    """Any attempt to build fails the test."""
    refuse_builds.setattr(linux_vm, "_build", refuse)


@pytest.fixture
def guest_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the guest files that a test may edit."""
    copy = tmp_path / "vm_guest"
    shutil.copytree(GUEST_DIR, copy)
    monkeypatch.setattr(linux_vm, "GUEST_DIR", copy)
    return copy


HOST_KEY_DATA = "AAAAC3NzaC1lZDI1NTE5AAAAIOUeo3NMBXQV0snohwvlD9zSSafA1pUOmJhnkmp6A9aR"


def fake_image(directory: Path, kind: linux_vm.VmKind = "linux-vm") -> VmImage:
    """A cache entry as a finished build leaves it, with stand-ins for the artifacts."""
    directory.mkdir(parents=True)
    for name in ("disk.qcow2", "vmlinuz", "initrd"):
        (directory / name).write_bytes(b"stand-in")
    manifest = {
        "recipe_hash": recipe_hash(),
        "rootfs": linux_vm.ROOTFS.recipe_hash(),
        "disk": "disk.qcow2",
        "disk_format": "qcow2",
        "kernel": "vmlinuz",
        "initrd": "initrd",
        "kernel_release": "6.1.0-0-cloud-amd64",
        "ssh_user": "root",
        "ssh_private_key": "ssh/id_ed25519",
        "ssh_host_key": f"ssh-ed25519 {HOST_KEY_DATA}",
        "build_seconds": 12.5,
    }
    (directory / "vm.json").write_text(json.dumps(manifest))
    return linux_vm._load(directory, kind)


# --- recipe ------------------------------------------------------------------------------------


def test_every_guest_file_has_a_place_and_every_place_a_file() -> None:
    present = {path.name for path in GUEST_DIR.iterdir()}
    assert present == set(GUEST_FILES)
    targets = [target for target, _mode in GUEST_FILES.values()]
    assert len(set(targets)) == len(targets)
    assert all(target.startswith("/") for target in targets)


def test_the_recipe_hash_is_stable_and_shared_by_both_kinds(cache: Path) -> None:
    assert recipe_hash() == recipe_hash()
    assert len(recipe_hash()) == 64
    assert linux_vm.image_dir().name == recipe_hash()[:16]


def test_a_changed_guest_file_changes_the_hash(guest_copy: Path) -> None:
    before = recipe_hash()
    script = guest_copy / "network.sh"
    script.write_text(script.read_text() + "# changed\n")
    assert recipe_hash() != before


def test_a_changed_package_list_changes_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    before = recipe_hash()
    packages = (*linux_vm.ROOTFS.packages, "htop")
    monkeypatch.setattr(linux_vm, "ROOTFS", dataclasses.replace(linux_vm.ROOTFS, packages=packages))
    assert recipe_hash() != before


def test_a_changed_code_version_or_boot_workload_changes_the_hash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = recipe_hash()
    monkeypatch.setattr(linux_vm, "VM_CODE_VERSION", linux_vm.VM_CODE_VERSION + 1)
    bumped = recipe_hash()
    assert bumped != before
    probe = tmp_path / "boot_probe.py"
    probe.write_text("print('another workload')\n")
    monkeypatch.setattr(boot_probe, "__file__", str(probe))
    assert recipe_hash() != bumped


def test_the_rootfs_has_what_the_issue_lists() -> None:
    assert isinstance(linux_vm.ROOTFS, RootfsRecipe)
    wanted = {"systemd-sysv", "openssh-server", "python3", "iperf3", "fio", "nginx", "apache2"}
    assert wanted <= set(linux_vm.ROOTFS.packages)
    assert "linux-image-cloud-amd64" in linux_vm.ROOTFS.packages


# --- kernel command line -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", VM_KINDS)
def test_kernel_args_boot_the_virtio_disk_on_the_serial_console(kind: linux_vm.VmKind) -> None:
    args = kernel_args(kind)
    assert "root=/dev/vda" in args
    assert "console=ttyS0" in args
    assert "net.ifnames=0" in args
    assert not any(arg.startswith("unibench.ip=") for arg in args)  # the launcher's to add


def test_only_the_minimal_kind_replaces_init() -> None:
    assert not any(arg.startswith("init=") for arg in kernel_args("linux-vm"))
    assert "init=/opt/unibench/init" in kernel_args("linux-vm-minimal")
    assert GUEST_FILES["init.sh"] == ("/opt/unibench/init", 0o755)


def test_an_unknown_kind_is_refused(cache: Path, no_build: None) -> None:
    with pytest.raises(ArtifactError, match="linux-vm-minimal"):
        kernel_args("linux-vm-huge")  # type: ignore[arg-type]
    with pytest.raises(ArtifactError):
        ensure_vm_image("linux-vm-huge", None)  # type: ignore[arg-type]


def test_boot_args_add_the_address_only_when_given(cache: Path) -> None:
    image = fake_image(cache / "entry")
    assert image.boot_args() == image.kernel_args
    assert image.boot_args("10.203.0.2", 24) == (*image.kernel_args, "unibench.ip=10.203.0.2/24")


# --- the guest's files -------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((GUEST_DIR / name).read_text())
    return parser


def test_the_boot_probe_unit_runs_the_workload_with_the_console_as_output() -> None:
    service = unit("unibench-boot-probe.service")
    command = service["Service"]["ExecStart"].split()
    assert command[:3] == ["/usr/bin/python3", "-I", "-S"]
    assert command[3] == linux_vm.BOOT_PROBE_PATH
    assert command[4:] == ["--udp-echo", f"0.0.0.0:{linux_vm.ECHO_PORT}"]
    assert "console" in service["Service"]["StandardOutput"]
    assert "unibench-network.service" in service["Unit"]["After"]
    assert service["Install"]["WantedBy"] == "multi-user.target"


def test_the_network_unit_runs_our_script_once_eth0_exists() -> None:
    service = unit("unibench-network.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == GUEST_FILES["network.sh"][0]
    assert "sys-subsystem-net-devices-eth0.device" in service["Unit"]["After"]
    assert "unibench-boot-probe.service" in service["Unit"]["Before"]


def test_the_minimal_init_starts_the_same_workload_and_sshd() -> None:
    script = (GUEST_DIR / "init.sh").read_text()
    assert f"{linux_vm.BOOT_PROBE_PATH} --udp-echo 0.0.0.0:{linux_vm.ECHO_PORT}" in script
    assert GUEST_FILES["network.sh"][0] in script
    assert f". {GUEST_FILES['mounts.sh'][0]}" in script
    assert "mkdir -p /dev/pts /run/sshd" in (GUEST_DIR / "mounts.sh").read_text()
    assert "/usr/sbin/sshd" in script


def test_the_initramfs_finds_the_disk_under_qemu_and_under_xen() -> None:
    # virtio under QEMU; Xen's front-ends when the same disk and kernel boot as a PVH guest.
    lines = (GUEST_DIR / "initramfs-modules").read_text().splitlines()
    modules = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {"virtio_pci", "virtio_blk", "virtio_net", "xen_blkfront", "xen_netfront"} == modules


def test_sshd_takes_keys_only() -> None:
    config = (GUEST_DIR / "sshd_config.conf").read_text().splitlines()
    assert "PasswordAuthentication no" in config
    assert "KbdInteractiveAuthentication no" in config
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in config


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash is not installed")
@pytest.mark.parametrize("script", ["init.sh", "network.sh"])
def test_the_shell_scripts_parse_in_dash(script: str) -> None:
    result = subprocess.run(
        ["dash", "-n", str(GUEST_DIR / script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash is not installed")
def test_the_network_script_reads_the_address_from_the_command_line(tmp_path: Path) -> None:
    # Run the script with /proc/cmdline and `ip` replaced: it must ask for what the parameter says.
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ip").write_text(f'#!/bin/sh\necho "$*" >>{calls}\n')
    (bin_dir / "ip").chmod(0o755)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("root=/dev/vda quiet unibench.ip=10.203.0.2/24 net.ifnames=0\n")
    sysfs = tmp_path / "sys/class/net/eth0"
    sysfs.mkdir(parents=True)
    script = (GUEST_DIR / "network.sh").read_text()
    script = script.replace("PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"PATH={bin_dir}:/usr/bin:/bin")
    script = script.replace("/proc/cmdline", str(cmdline))
    script = script.replace("/sys/class/net/", f"{tmp_path}/sys/class/net/")
    (tmp_path / "network.sh").write_text(script)
    result = subprocess.run(
        ["dash", str(tmp_path / "network.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == [
        "link set lo up",
        "address replace 10.203.0.2/24 dev eth0",
        "link set eth0 up",
    ]


# --- cache -------------------------------------------------------------------------------------


def test_nothing_is_found_in_an_empty_cache(cache: Path, no_build: None) -> None:
    assert find_vm_image("linux-vm") is None


def test_a_finished_entry_is_used_without_building(cache: Path, no_build: None) -> None:
    fake_image(linux_vm.image_dir())
    for kind in VM_KINDS:
        image = ensure_vm_image(kind, None)
        assert image.kind == kind
        assert image.kernel_args == kernel_args(kind)
        assert image.disk == linux_vm.image_dir() / "disk.qcow2"
        assert image.ssh_private_key == linux_vm.image_dir() / "ssh/id_ed25519"
        assert image.ssh_host_key.startswith("ssh-ed25519 ")
        assert find_vm_image(kind) == image


def test_an_unfinished_entry_is_built_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A directory without vm.json (a crash before the rename can't leave one, but a hand-made
    # copy could) is not an image: ensure_vm_image replaces it.
    directory = linux_vm.image_dir()
    directory.mkdir(parents=True)
    (directory / "leftover").write_text("half")
    built: list[Path] = []

    def build(target: Path, digest: str, _say: object) -> None:
        assert not target.exists()
        built.append(target)
        fake_image(target)

    monkeypatch.setattr(linux_vm, "_build", build)
    image = ensure_vm_image("linux-vm", None)
    assert built == [directory]
    assert image.disk.parent == directory
    assert not (directory / "leftover").exists()


def test_building_needs_root(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ArtifactError, match="needs root"):
        ensure_vm_image("linux-vm", None)


def test_the_disk_leaves_room_for_metadata_the_journal_and_the_guests_writes() -> None:
    assert linux_vm.disk_size_mib(0) == 64 + linux_vm.FREE_SPACE_MIB
    assert linux_vm.disk_size_mib(1000 << 20) == 1000 + 100 + 64 + linux_vm.FREE_SPACE_MIB


# --- launching ---------------------------------------------------------------------------------

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


@needs_qemu_img
def test_an_overlay_is_backed_by_the_base_and_removed_after_use(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    image = dataclasses.replace(fake_image(tmp_path / "entry"), disk=base)
    folder = tmp_path / "launches"
    with overlaid(image, folder) as path:
        assert path.parent == folder and path.name.startswith("linux-vm-")
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "--output=json", str(path)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert info["format"] == "qcow2"
        assert info["backing-filename"] == str(base)
        assert info["backing-filename-format"] == "qcow2"
        second = overlay(image, folder)  # each launch has its own
        assert second != path
        second.unlink()
    assert list(folder.iterdir()) == []


@needs_qemu_img
def test_a_failed_overlay_leaves_no_file(tmp_path: Path) -> None:
    image = dataclasses.replace(fake_image(tmp_path / "entry"), disk=tmp_path / "missing.qcow2")
    folder = tmp_path / "launches"
    with pytest.raises(ArtifactError, match="qemu-img create"):
        overlay(image, folder)
    assert list(folder.iterdir()) == []


def test_the_qemu_command_boots_the_overlay_with_our_conventions(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "entry", "linux-vm-minimal")
    disk = tmp_path / "launch.qcow2"
    nic = ["-netdev", "tap,id=net0,ifname=ubtap0", "-device", "virtio-net-pci,netdev=net0"]
    argv = qemu_command(image, disk, "tcg", 256, address="10.203.0.2", devices=nic)
    assert argv[0] == "qemu-system-x86_64"
    for option, value in (("-M", "pc"), ("-accel", "tcg"), ("-m", "256"), ("-serial", "stdio")):
        assert argv[argv.index(option) + 1] == value
    assert "-nodefaults" in argv and "-no-reboot" in argv
    assert argv[argv.index("-drive") + 1] == f"file={disk},if=none,id=root,format=qcow2"
    # The root disk's device comes before any the workload adds: it stays vda.
    assert argv.index("virtio-blk-pci,drive=root") < argv.index("virtio-net-pci,netdev=net0")
    assert argv[argv.index("-kernel") + 1] == str(image.kernel)
    assert argv[argv.index("-initrd") + 1] == str(image.initrd)
    append = argv[argv.index("-append") + 1].split()
    assert append == [*kernel_args("linux-vm-minimal"), "unibench.ip=10.203.0.2/24"]
    assert argv[argv.index("-netdev") + 1] == "tap,id=net0,ifname=ubtap0"
