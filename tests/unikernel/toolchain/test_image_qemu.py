"""Integration: an application built into one image file boots under QEMU (TCG), prints the
ready marker, and powers off with the application's exit status."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hostkit.qemu import guest_status, qemu_command
from tests.support.apps import make_app
from tests.support.artifacts import require_specialized_kernel
from unikernel.toolchain.app import load_app
from unikernel.toolchain.image import build
from workloads import unikernel_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def specialized_kernel_is_built() -> None:
    require_specialized_kernel()


def boot(folder: Path) -> tuple[int, list[str]]:
    result = build(load_app(folder), "qemu", "specialized", log=lambda _: None)
    assert set(result.outputs) >= {"image", "initramfs"}  # one image file, initramfs inside
    command = qemu_command(result.qemu_image(), "tcg", 128)
    done = subprocess.run(command, capture_output=True, timeout=240, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout.decode(errors="replace").splitlines()


def test_the_boot_probe_boots_to_its_marker_and_powers_off_with_status_0() -> None:
    folder = unikernel_app("boot_probe")
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
