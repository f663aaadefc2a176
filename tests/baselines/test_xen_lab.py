"""The Xen lab's recipe, its hypervisor step and its cache: fast, and never a build."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from baselines import linux_vm, xen_lab
from baselines.xen_lab import (
    LAB_GUEST_DIR,
    LAB_GUEST_FILES,
    ensure_lab_image,
    find_lab_image,
    recipe_hash,
)
from hostkit.errors import ArtifactError
from tests.support.artifacts import refuse


@pytest.fixture
def no_build(refuse_builds: pytest.MonkeyPatch) -> None:
    """Any attempt to build fails the test."""
    refuse_builds.setattr(xen_lab, "_build", refuse)


def fake_lab(directory: Path) -> None:
    """A cache entry as a finished build leaves it, with stand-ins for the artifacts."""
    directory.mkdir(parents=True)
    for name in ("disk.qcow2", "vmlinuz", "initrd", "xen"):
        (directory / name).write_bytes(b"stand-in")
    manifest = {
        "recipe_hash": recipe_hash(),
        "rootfs": xen_lab.ROOTFS.recipe_hash(),
        "disk": "disk.qcow2",
        "disk_format": "qcow2",
        "kernel": "vmlinuz",
        "initrd": "initrd",
        "kernel_release": "6.1.0-0-amd64",
        "ssh_user": "root",
        "ssh_private_key": "ssh/id_ed25519",
        "ssh_host_key": "ssh-ed25519 AAAA",
        "hypervisor": "xen",
        "xen_version": "4.17",
        "xen_package_version": "4.17.5-1",
        "build_seconds": 20.0,
    }
    (directory / xen_lab.MANIFEST).write_text(json.dumps(manifest))


def module_lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# --- recipe ------------------------------------------------------------------------------------


def test_dom0_gets_a_kernel_that_can_be_dom0_and_xens_tools() -> None:
    packages = set(xen_lab.ROOTFS.packages)
    # Debian's cloud kernel has CONFIG_XEN_DOM0 unset: only the standard one can be dom0.
    assert xen_lab.DOM0_KERNEL_PACKAGE in packages
    assert not any("cloud" in package for package in packages)
    assert {xen_lab.XEN_PACKAGE, "xen-utils-4.17", "openssh-server", "iproute2"} <= packages
    assert "systemd-sysv" not in packages  # our init is PID 1


def test_every_lab_file_has_a_place_and_shares_the_linux_vm_files() -> None:
    assert {path.name for path in LAB_GUEST_DIR.iterdir()} == set(LAB_GUEST_FILES)
    recipe = xen_lab.disk_recipe()
    placed = {source.name: place for source, place in recipe.guest_files.items()}
    for name in xen_lab.SHARED_GUEST_FILES:
        assert (linux_vm.GUEST_DIR / name) in recipe.guest_files
        assert placed[name] == linux_vm.GUEST_FILES[name]
    assert placed["init.sh"] == ("/opt/unibench/init", 0o755) == (xen_lab.INIT_PATH, 0o755)
    targets = [target for target, _mode in recipe.guest_files.values()]
    assert len(set(targets)) == len(targets)
    assert recipe.enabled_units == recipe.disabled_units == ()
    assert recipe.hostname == "unibench-xen-lab"


def test_the_initramfs_loads_ext4_and_the_virtio_disk() -> None:
    modules = module_lines(LAB_GUEST_DIR / "initramfs-modules")
    assert modules == ["virtio_pci", "virtio_blk", "virtio_net", "ext4"]


def test_the_recipe_hash_is_stable_and_not_the_linux_vms(cache: Path) -> None:
    assert recipe_hash() == recipe_hash()
    assert recipe_hash() != linux_vm.recipe_hash()
    assert xen_lab.image_dir().name == recipe_hash()[:16]
    assert xen_lab.image_dir().parent.name == "xen-lab"


def test_a_changed_lab_file_changes_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = recipe_hash()
    copy = tmp_path / "xen_lab_guest"
    shutil.copytree(LAB_GUEST_DIR, copy)
    monkeypatch.setattr(xen_lab, "LAB_GUEST_DIR", copy)
    assert recipe_hash() == before  # the same content, elsewhere
    init = copy / "init.sh"
    init.write_text(init.read_text() + "# changed\n")
    assert recipe_hash() != before


def test_a_changed_shared_file_changes_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = recipe_hash()
    copy = tmp_path / "vm_guest"
    shutil.copytree(linux_vm.GUEST_DIR, copy)
    monkeypatch.setattr(linux_vm, "GUEST_DIR", copy)
    fstab = copy / "fstab"
    fstab.write_text(fstab.read_text() + "# changed\n")
    assert recipe_hash() != before


# --- dom0's init -------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash is not installed")
def test_the_init_parses_in_dash() -> None:
    result = subprocess.run(
        ["dash", "-n", str(LAB_GUEST_DIR / "init.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_init_starts_xen_bridges_eth0_and_starts_sshd() -> None:
    script = (LAB_GUEST_DIR / "init.sh").read_text()
    assert "/etc/init.d/xen start" in script
    # eth0 joins the bridge, which takes the address from the kernel command line.
    assert "UNIBENCH_BRIDGE=xenbr0 /opt/unibench/network" in script
    network = (linux_vm.GUEST_DIR / "network.sh").read_text()
    assert 'ip link set "$device" master "$bridge"' in network
    assert f"{linux_vm.NETWORK_PARAMETER}=*)" in network
    assert ". /opt/unibench/mounts" in script and "mkdir -p /dev/shm" in script
    assert "/usr/sbin/sshd" in script


# --- the hypervisor ----------------------------------------------------------------------------

DPKG_STATUS = """Package: kmod
Status: install ok installed
Version: 30+20221128-1

Package: xen-hypervisor-4.17-amd64
Status: install ok installed
Architecture: amd64
Version: 4.17.5+72-g01140da4e8-1
Description: Xen Hypervisor on AMD64
 Version: not a field
"""


def lab_tree(root: Path, hypervisor: bytes) -> Path:
    tree = root / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/xen-4.17-amd64.gz").write_bytes(gzip.compress(hypervisor))
    (tree / "boot/xen-4.17-amd64.efi").write_bytes(b"MZ")
    (tree / "boot/xen-4.17-amd64.config").write_text("CONFIG_X86=y\n")
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(DPKG_STATUS)
    (root / "staging").mkdir()
    return tree


def test_the_hypervisor_is_taken_out_gunzipped(tmp_path: Path) -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 4
    tree = lab_tree(tmp_path, elf)
    fields = xen_lab.take_hypervisor(tree, tmp_path / "staging")
    assert fields == {
        "hypervisor": "xen",
        "xen_version": "4.17",
        "xen_package_version": "4.17.5+72-g01140da4e8-1",
    }
    assert (tmp_path / "staging/xen").read_bytes() == elf
    assert sorted(path.name for path in (tree / "boot").iterdir()) == ["xen-4.17-amd64.config"]


def test_a_hypervisor_that_is_no_elf_is_refused(tmp_path: Path) -> None:
    tree = lab_tree(tmp_path, b"MZ not an ELF")
    with pytest.raises(ArtifactError, match="ELF"):
        xen_lab.take_hypervisor(tree, tmp_path / "staging")


def test_the_xen_version_comes_from_the_file_name() -> None:
    assert xen_lab.xen_version("xen-4.17-amd64.gz") == "4.17"
    with pytest.raises(ArtifactError):
        xen_lab.xen_version("xen.gz")


# --- cache -------------------------------------------------------------------------------------


def test_nothing_is_found_in_an_empty_cache(cache: Path, no_build: None) -> None:
    assert find_lab_image() is None


def test_a_finished_entry_is_used_without_building(cache: Path, no_build: None) -> None:
    directory = xen_lab.image_dir()
    fake_lab(directory)
    image = ensure_lab_image()
    assert image.hypervisor == directory / "xen"
    assert image.kernel == directory / "vmlinuz"
    assert image.disk == directory / "disk.qcow2"
    assert image.ssh_private_key == directory / "ssh/id_ed25519"
    assert (image.xen_version, image.kernel_release) == ("4.17", "6.1.0-0-amd64")
    assert find_lab_image() == image
    assert set(image.sizes()) == {"disk", "hypervisor", "kernel", "initrd"}


def test_building_needs_root(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ArtifactError, match=r"needs root.*python -m baselines\.xen_lab"):
        ensure_lab_image()
