"""The build wires each declared device to its target's driver: the generated configuration's
devices() gives the app what it declared, and the image holds only its target's drivers."""

from __future__ import annotations

import os
import subprocess
import types
from pathlib import Path

import pytest

from tests.support.apps import make_app
from unikernel.block.device import DiskDevice, disk_variable
from unikernel.core.console import Console as ConsoleDevice
from unikernel.core.devices import DeviceError, Devices
from unikernel.core.scheduler import run
from unikernel.devices import Console, Data, Disk, Network, Port
from unikernel.net.device import NetworkDevice
from unikernel.toolchain.app import App, AppError, load_app
from unikernel.toolchain.image import build
from unikernel.toolchain.runtime import PYTHON
from unikernel.toolchain.wiring import config_source

APP = App(
    name="wired",
    main="wired:main",
    devices=(
        Console(),
        Network(ports=(Port("http", "tcp", 80),)),
        Disk("store", size_mib=8),
        Disk("logs", read_only=True),
    ),
)


def generated(app: App, target: str, drivers: str | None = None) -> types.ModuleType:
    module = types.ModuleType("_unikernel_config")
    exec(config_source(app, target, drivers=drivers), module.__dict__)
    return module


def test_a_vm_gets_its_disks_in_order_and_a_packet_nic_per_network() -> None:
    for target in ("qemu", "xen"):
        config = generated(APP, target)
        assert APP.devices == config.DECLARED  # the declarations travel into the image as is
        assert config.NICS == ("eth0",)
        source = config_source(APP, target)
        assert "unikernel.drivers.packet" in source and "unikernel.drivers.tap" not in source
        assert "bring_up_all(NICS, console)" in source
    config = generated(APP, "qemu")
    # devices() would bring eth0 up on the host: check what it would wire without calling it.
    assert "DiskDevice(DECLARED[2], '/dev/vda')" in config_source(APP, "qemu")
    assert "DiskDevice(DECLARED[3], '/dev/xvdb')" in config_source(APP, "xen")
    assert config.TARGET == "qemu" and config.MAIN == "wired:main"


def test_hosted_devices_come_from_what_the_launcher_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store.img"
    store.write_bytes(bytes(4096))
    logs = tmp_path / "logs.img"
    logs.write_bytes(b"x" * 512)
    monkeypatch.setenv(disk_variable("store"), str(store))
    monkeypatch.setenv(disk_variable("logs"), str(logs))
    source = config_source(APP, "hosted")
    assert "unikernel.drivers.hosted_link" in source and "PacketNetif" not in source
    devices = generated(APP, "hosted").devices(ConsoleDevice(1))
    assert isinstance(devices, Devices)
    assert isinstance(devices.network(), NetworkDevice) and devices.network().name == "net0"
    assert devices.disk().path == str(store)  # the first declared
    logs_disk = devices.disk("logs")
    assert isinstance(logs_disk, DiskDevice) and logs_disk.read_only
    assert logs_disk.size_bytes() == 512
    with pytest.raises(PermissionError if os.geteuid() else OSError):
        fd = logs_disk.open(direct=False)  # read-only: a write must fail
        try:
            os.write(fd, b"no")
        finally:
            os.close(fd)
    with pytest.raises(DeviceError, match=r"Disk\('nope'\).*store, logs"):
        devices.disk("nope")


def test_a_hosted_disk_without_its_file_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(disk_variable("store"), raising=False)
    with pytest.raises(FileNotFoundError, match="UNIKERNEL_DISK_STORE"):
        DiskDevice.hosted(Disk("store"))


def test_a_xen_image_with_our_drivers_connects_its_front_ends_only_when_the_app_opens_them(
    tmp_path: Path,
) -> None:
    config = generated(APP, "xen", drivers="python")
    assert config.DRIVERS == "python" and config.NICS == ()  # no kernel interface to bring up
    source = config_source(APP, "xen", drivers="python")
    assert "bring_up_all" not in source and "unikernel.drivers.packet" not in source
    assert "open_netfront(0)" in source
    # xvda and xvdb, as xenstore names them (202 << 8 | 16 * index)
    assert "DiskDevice(DECLARED[2], connect=lambda: open_blkfront('51712'))" in source
    assert "DiskDevice(DECLARED[3], connect=lambda: open_blkfront('51728'))" in source
    devices = config.devices(ConsoleDevice(1))  # wiring alone touches no device
    store = devices.disk("store")
    assert store.path is None
    with pytest.raises(OSError, match=r"own front-end.*await disk\.block\(\)"):
        store.size_bytes()
    # Off Xen the front-end fails at once, saying which device file is missing.
    with pytest.raises(OSError, match="/dev/xen"):
        run(store.block)
    # The app's config chooses too, and the build's choice overrides it.
    ours = App(name="ours", main="m:main", devices=APP.devices, drivers="python")
    assert "open_netfront(0)" in config_source(ours, "xen")
    assert "PacketNetif('eth0')" in config_source(ours, "xen", drivers="kernel")


def test_our_front_ends_are_xen_only_and_drivers_are_named_exactly() -> None:
    for target in ("hosted", "qemu"):
        with pytest.raises(AppError, match="our own front-ends are Xen's"):
            config_source(APP, target, drivers="python")
    with pytest.raises(AppError, match="say kernel or python"):
        config_source(APP, "xen", drivers="pyhton")
    with pytest.raises(AppError, match="drivers = 'xen'"):
        App(name="x", main="m:main", drivers="xen")


def test_bad_declarations_are_refused_with_the_reason() -> None:
    with pytest.raises(AppError, match="two Disk devices named 'a'"):
        App(name="x", main="m:main", devices=(Disk("a"), Disk("a")))
    with pytest.raises(AppError, match=r"unikernel\.devices declarations"):
        App(name="x", main="m:main", devices=("disk",))  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_hosted_image_keeps_only_its_own_driver_and_main_gets_the_devices(
    tmp_path: Path,
) -> None:
    folder = make_app(
        tmp_path / "app",
        """
        def main(devices) -> int:
            print("network", devices.network().name, "data", sorted(devices.data))
            return 0
        """,
    )
    (folder / "pages").mkdir()
    (folder / "pages" / "a.txt").write_text("a")
    (folder / "config.py").write_text(
        "from unikernel.devices import Console, Data, Network\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='probe', main='probe_main:main',"
        " devices=(Console(), Network(), Data('pages')))\n"
    )
    result = build(load_app(folder), "hosted", log=lambda _: None)
    kept = result.report["kept_modules"]
    assert isinstance(kept, dict)
    # Its two links (a TAP device, a veth end on packet rings), and no Xen front-end.
    assert "unikernel.drivers.tap" in kept and "unikernel.drivers.packet_ring" in kept
    assert "unikernel.drivers.xen.netfront" not in kept
    done = subprocess.run(
        [PYTHON, "-I", "-S", str(result.outputs["app"])], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "network net0 data ['pages/a.txt']" in done.stdout.splitlines()
    assert Data("pages") in load_app(folder).app.devices


@pytest.mark.slow
def test_a_device_that_cannot_be_had_ends_the_run_with_the_reason_before_the_marker(
    tmp_path: Path,
) -> None:
    folder = make_app(tmp_path / "app", "def main(devices) -> int:\n    return 0\n")
    (folder / "config.py").write_text(
        "from unikernel.devices import Console, Disk\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='probe', main='probe_main:main', devices=(Console(), Disk('store')))\n"
    )
    result = build(load_app(folder), "hosted", log=lambda _: None)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("UNIKERNEL_DISK_")}
    done = subprocess.run(
        [PYTHON, "-I", "-S", str(result.outputs["app"])],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert done.returncode == 1
    assert "UNIBENCH-READY" not in done.stdout
    assert "set UNIKERNEL_DISK_STORE to its path" in done.stdout
    assert done.stdout.splitlines()[-1] == "UNIBENCH-EXIT status=1"
