"""The disk-image machinery the Linux VM and the Xen lab share: the recipe's hash, where a recipe
puts its files in a tree, and the cache's build-once logic. Fast: nothing here builds an image."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hostkit import disk_image
from hostkit.debootstrap import RootfsRecipe
from hostkit.disk_image import DiskRecipe
from hostkit.errors import ArtifactError

ROOTFS = RootfsRecipe(suite="bookworm", variant="minbase", packages=("kmod",))
DIGEST = "0123456789abcdef" * 4


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "guest"
    folder.mkdir()
    (folder / "init.sh").write_text("#!/bin/sh\n")
    (folder / "fstab").write_text("/dev/vda / ext4 rw 0 0\n")
    (folder / "probe.py").write_text("print('probe')\n")
    return folder


def recipe(sources: Path, **changes: object) -> DiskRecipe:
    fields: dict[str, object] = {
        "label": "test-vm",
        "rootfs": ROOTFS,
        "guest_files": {
            sources / "init.sh": ("/opt/unibench/init", 0o755),
            sources / "fstab": ("/etc/fstab", 0o644),
        },
        "extra_files": {"probe": (sources / "probe.py", "/opt/unibench/probe.py")},
        "enabled_units": ("ours.service",),
        "disabled_units": ("nginx.service",),
        "hostname": "unibench-test",
        "code_version": 1,
    }
    fields |= changes
    return DiskRecipe(**fields)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- the recipe's hash -------------------------------------------------------------------------


def test_the_hash_is_stable(sources: Path) -> None:
    assert recipe(sources).recipe_hash() == recipe(sources).recipe_hash()
    assert len(recipe(sources).recipe_hash()) == 64


def test_a_changed_guest_file_or_extra_file_changes_the_hash(sources: Path) -> None:
    before = recipe(sources).recipe_hash()
    (sources / "init.sh").write_text("#!/bin/sh\nexec sleep 1\n")
    after_guest = recipe(sources).recipe_hash()
    assert after_guest != before
    (sources / "probe.py").write_text("print('another probe')\n")
    assert recipe(sources).recipe_hash() != after_guest


@pytest.mark.parametrize(
    "change",
    [
        {"hostname": "another"},
        {"code_version": 2},
        {"enabled_units": ()},
        {"disabled_units": ()},
        {"rootfs": RootfsRecipe(suite="bookworm", variant="minbase", packages=("kmod", "htop"))},
    ],
)
def test_each_part_of_the_recipe_is_in_the_hash(sources: Path, change: dict[str, object]) -> None:
    assert recipe(sources, **change).recipe_hash() != recipe(sources).recipe_hash()


def test_a_moved_file_changes_the_hash(sources: Path) -> None:
    moved = {sources / "init.sh": ("/sbin/init", 0o755), sources / "fstab": ("/etc/fstab", 0o644)}
    assert recipe(sources, guest_files=moved).recipe_hash() != recipe(sources).recipe_hash()


def test_guest_files_of_one_name_are_refused(sources: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "fstab").write_text("")
    files = {sources / "fstab": ("/etc/fstab", 0o644), other / "fstab": ("/etc/fstab2", 0o644)}
    with pytest.raises(ArtifactError, match="share a name"):
        recipe(sources, guest_files=files)


# --- the tree ----------------------------------------------------------------------------------


def test_the_recipe_places_its_files_and_units(sources: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "nginx.service").symlink_to("/lib/systemd/system/nginx.service")
    helper = tree / "var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants"
    helper.mkdir(parents=True)
    (helper / "nginx.service").write_text("")
    (tree / "etc/fstab").write_text("# debootstrap's\n")
    disk_image.install_guest_files(recipe(sources), tree)
    assert (tree / "opt/unibench/init").read_text() == "#!/bin/sh\n"
    assert mode(tree / "opt/unibench/init") == 0o755
    assert (tree / "etc/fstab").read_text() == "/dev/vda / ext4 rw 0 0\n"
    assert mode(tree / "etc/fstab") == 0o644
    assert (tree / "opt/unibench/probe.py").read_text() == "print('probe')\n"
    assert mode(tree / "opt/unibench/probe.py") == disk_image.EXTRA_FILE_MODE
    assert os.readlink(wants / "ours.service") == "/etc/systemd/system/ours.service"
    assert not (wants / "nginx.service").is_symlink()
    assert not (helper / "nginx.service").exists()


def test_a_recipe_without_units_leaves_systemd_alone(sources: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    disk_image.install_guest_files(recipe(sources, enabled_units=(), disabled_units=()), tree)
    assert (tree / "opt/unibench/init").exists()
    assert not (tree / "etc/systemd").exists()


def test_the_system_is_named_after_the_recipe(sources: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "var/lib/dbus").mkdir(parents=True)
    (tree / "var/lib/dbus/machine-id").write_text("random\n")
    disk_image.configure_system(recipe(sources), tree, DIGEST)
    assert (tree / "etc/hostname").read_text() == "unibench-test\n"
    assert "127.0.1.1\tunibench-test" in (tree / "etc/hosts").read_text()
    assert (tree / "etc/resolv.conf").read_text() == ""
    assert (tree / "etc/machine-id").read_text() == DIGEST[:32] + "\n"
    assert os.readlink(tree / "var/lib/dbus/machine-id") == "/etc/machine-id"


def test_the_kernel_and_initramfs_leave_the_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/vmlinuz-6.1.0-1-amd64").write_bytes(b"kernel")
    (tree / "boot/initrd.img-6.1.0-1-amd64").write_bytes(b"initrd")
    (tree / "vmlinuz").symlink_to("boot/vmlinuz-6.1.0-1-amd64")
    staging = tmp_path / "staging"
    staging.mkdir()
    release = disk_image.kernel_release(tree)
    assert release == "6.1.0-1-amd64"
    kernel, initrd = disk_image.take_boot_files(tree, staging, release)
    assert (kernel.read_bytes(), initrd.read_bytes()) == (b"kernel", b"initrd")
    assert list((tree / "boot").iterdir()) == []
    assert not (tree / "vmlinuz").is_symlink()


def test_a_tree_with_two_kernels_is_refused(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    for release in ("6.1.0-1-amd64", "6.1.0-2-amd64"):
        (tmp_path / "boot" / f"vmlinuz-{release}").write_bytes(b"")
    with pytest.raises(ArtifactError, match="expected one kernel"):
        disk_image.kernel_release(tmp_path)


# --- the cache ---------------------------------------------------------------------------------


def test_an_image_is_built_once_and_a_leftover_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "cache" / "entry"
    directory.mkdir(parents=True)
    (directory / "leftover").write_text("half")
    builds: list[bool] = []

    def build() -> None:
        assert not directory.exists()
        builds.append(True)
        directory.mkdir()
        (directory / "image.json").write_text("{}")

    disk_image.ensure_built(directory, "image.json", build)
    disk_image.ensure_built(directory, "image.json", build)
    assert builds == [True]
    assert disk_image.is_built(directory, "image.json")
    assert not (directory / "leftover").exists()


def test_the_manifest_gives_the_fields_every_image_shares(tmp_path: Path) -> None:
    manifest = {
        "recipe_hash": DIGEST,
        "disk": "disk.qcow2",
        "disk_format": "qcow2",
        "kernel": "vmlinuz",
        "initrd": "initrd",
        "kernel_release": "6.1.0-1-amd64",
        "ssh_user": "root",
        "ssh_private_key": "ssh/id_ed25519",
        "ssh_host_key": "ssh-ed25519 AAAA",
        "hypervisor": "xen",
        "build_seconds": 1.5,
    }
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    data, common = disk_image.read_manifest(tmp_path, "image.json")
    assert data == manifest
    assert common["disk"] == tmp_path / "disk.qcow2"
    assert common["ssh_private_key"] == tmp_path / "ssh/id_ed25519"
    assert common["build_seconds"] == 1.5
    assert "hypervisor" not in common
