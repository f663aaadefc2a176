"""Integration: an application built into one image file boots under QEMU (TCG), prints the
ready marker, and powers off with the application's exit status."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unikernel.build.test_pruning import make_app
from unikernel.build.app import load_app
from unikernel.build.image import build
from unikernel.build.kernel import find_specialized_kernel
from unikernel.build.qemu import guest_status, qemu_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def specialized_kernel_is_built() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    if find_specialized_kernel("qemu") is None:
        message = "no cached qemu kernel: run `python -m unikernel.build.kernel --profile qemu`"
        if os.environ.get("CI"):
            pytest.fail(f"CI must pre-build the kernel: {message}")
        pytest.skip(message)


def boot(folder: Path) -> tuple[int, list[str]]:
    result = build(load_app(folder), "qemu", "specialized", log=lambda _: None)
    assert set(result.outputs) >= {"image", "initramfs"}  # one image file, initramfs inside
    command = qemu_command(result.qemu_image(), "tcg", 128)
    done = subprocess.run(command, capture_output=True, timeout=240, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout.decode(errors="replace").splitlines()


def test_the_boot_probe_boots_to_its_marker_and_powers_off_with_status_0() -> None:
    folder = Path(__file__).resolve().parents[3] / "workloads" / "unikernel" / "boot_probe"
    code, lines = boot(folder)
    ready = [line for line in lines if line.startswith("UNIBENCH-READY ")]
    assert ready and "target=qemu" in ready[0], lines
    assert "boot-probe: up" in lines
    assert "UNIBENCH-EXIT status=0" in lines
    assert guest_status(code) == 0


def test_an_apps_exit_status_leaves_the_vm(tmp_path: Path) -> None:
    folder = make_app(tmp_path / "app", "def main() -> int:\n    return 7\n")
    code, lines = boot(folder)
    assert "UNIBENCH-EXIT status=7" in lines, lines
    assert guest_status(code) == 7
