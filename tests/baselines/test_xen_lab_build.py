"""Integration: the Xen lab's files (built once, then cached) are what QEMU needs to boot Xen and
dom0: a multiboot ELF hypervisor, dom0's kernel and initramfs, and a qcow2 disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from baselines.xen_lab import ensure_lab_image, find_lab_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the first run builds (minutes)


def require_builder() -> None:
    """Skip unless the lab is cached or we may build it; under CI fail instead."""
    if find_lab_image() is not None:
        return
    problems = [] if os.geteuid() == 0 else ["building the lab needs root"]
    tools = ("debootstrap", "mkfs.ext4", "qemu-img", "ssh-keygen", "unshare", "chroot")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        problems.append(f"missing tools: {', '.join(missing)}")
    if problems:
        if os.environ.get("CI"):
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))


def test_the_lab_has_a_bootable_hypervisor_kernel_initramfs_and_disk() -> None:
    require_builder()
    image = ensure_lab_image(log=print)
    assert image.hypervisor.read_bytes()[:4] == b"\x7fELF"  # what QEMU's multiboot loads
    assert image.xen_version == "4.17"
    assert image.xen_package_version.startswith("4.17.")
    assert image.kernel_release.endswith("-amd64") and "cloud" not in image.kernel_release
    sizes = image.sizes()
    assert all(size > 0 for size in sizes.values()), sizes
    assert image.ssh_private_key.exists()
    assert image.ssh_host_key.startswith("ssh-ed25519 ")
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image.disk)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(info.stdout)["format"] == image.disk_format == "qcow2"
    print(f"xen-lab built in {image.build_seconds} s; sizes {sizes}")
