"""Integration: an application with a NIC, built for Debian's cloud kernel (whose virtio drivers
are modules), boots under QEMU (TCG) with a virtio-net device, and finds the NIC as eth0: the
boot layer loaded the modules from the initramfs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hostkit.qemu import guest_status, qemu_command
from tests.support.apps import make_app
from unikernel.toolchain import kernel
from unikernel.toolchain.app import load_app
from unikernel.toolchain.image import build

pytestmark = pytest.mark.slow  # a build (the runtime is cached) and a boot of about 5 s

# User networking with restrict=on: the guest reaches nothing outside QEMU.
NIC = ("-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0")
NIC_PROBE = """
import os


def main() -> int:
    if not os.path.exists("/sys/class/net/eth0"):
        print("probe: no eth0")
        return 4
    driver = os.readlink("/sys/class/net/eth0/device/driver").rpartition("/")[2]
    print(f"probe: eth0 driver={driver}")
    return 3
"""


@pytest.fixture(scope="module", autouse=True)
def generic_kernel_is_fetched() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    if kernel.find_generic_kernel() is None:
        message = "no cached cloud kernel: run `python -m unikernel.toolchain.kernel --generic`"
        if os.environ.get("CI"):
            pytest.fail(f"CI must fetch the generic kernel first: {message}")
        pytest.skip(message)


def test_a_nic_app_on_the_generic_kernel_loads_virtio_net_and_sees_eth0(tmp_path: Path) -> None:
    folder = make_app(tmp_path / "app", NIC_PROBE)
    (folder / "config.py").write_text(
        "from unikernel.devices import Console, Network\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='nic-probe', main='probe_main:main', devices=(Console(), Network()))\n"
    )
    result = build(load_app(folder), "qemu", "generic", log=lambda _: None)
    parts = result.report["parts"]
    assert isinstance(parts, list) and "kernel_modules" in [part["part"] for part in parts]
    command = qemu_command(result.qemu_image(), "tcg", 128, devices=NIC)
    done = subprocess.run(command, capture_output=True, timeout=240, stdin=subprocess.DEVNULL)
    lines = done.stdout.decode(errors="replace").splitlines()
    assert any(line.startswith("UNIBENCH-READY ") for line in lines), lines
    assert not [line for line in lines if line.startswith("boot:")], lines  # every module loaded
    assert "probe: eth0 driver=virtio_net" in lines, lines
    assert "UNIBENCH-EXIT status=3" in lines, lines
    # Debian's cloud kernel has no /dev/port (CONFIG_DEVPORT is off), so the status cannot
    # reach the debug-exit port: QEMU ends with the power-off and says nothing of it.
    assert guest_status(done.returncode) in (3, None), done.returncode
