"""The generic kernel's modules in an image: which the app's devices need, in which order, and
where they land (the initramfs and the generated configuration). Nothing is built: the initramfs
is written from a fake runtime, and Debian's cloud kernel is read from the cache if it is there."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.support.cpio_reader import parse
from unikernel.devices import Console, Disk, Network
from unikernel.toolchain import kernel, runtime
from unikernel.toolchain.app import App
from unikernel.toolchain.image import (
    MODULES_DIR,
    kernel_modules,
    module_image_path,
    write_initramfs,
)
from unikernel.toolchain.wiring import config_source

CONSOLE_APP = App(name="c", main="m:main", devices=(Console(),))
NETWORK_APP = App(name="n", main="m:main", devices=(Console(), Network()))
DISK_APP = App(name="d", main="m:main", devices=(Console(), Disk()))


def fake_generic(folder: Path) -> kernel.GenericKernel:
    """A cloud kernel as Debian builds it: every qemu driver a module but AF_PACKET."""
    folder.mkdir(parents=True, exist_ok=True)

    def ko(name: str) -> Path:
        path = folder / f"{name}.ko"
        path.write_bytes(f"\x7fELF {name}".encode())
        return path

    ring, virtio = ko("virtio_ring"), ko("virtio")
    return kernel.GenericKernel(
        package="linux-image-test",
        version="1",
        release="6.1.0-test",
        vmlinuz=folder / "vmlinuz",
        config=folder / "config",
        modules_dir=folder,
        features={
            "VIRTIO_PCI": "m",
            "VIRTIO_MMIO": "m",
            "VIRTIO_NET": "m",
            "VIRTIO_BLK": "m",
            "HW_RANDOM_VIRTIO": "m",
            "PACKET": "y",
            "XEN_NETDEV_FRONTEND": "m",
            "XEN_BLKDEV_FRONTEND": "m",
        },
        modules={
            "virtio_pci": (ring, virtio, ko("virtio_pci")),
            "virtio_mmio": (ring, virtio, ko("virtio_mmio")),
            "virtio_net": (ring, virtio, ko("failover"), ko("net_failover"), ko("virtio_net")),
            "virtio_blk": (ring, virtio, ko("virtio_blk")),
            "virtio-rng": (ring, virtio, ko("virtio-rng")),
            "xen-netfront": (ko("xen-netfront"),),
            "xen-blkfront": (ko("xen-blkfront"),),
        },
    )


def names(paths: list[Path]) -> list[str]:
    return [path.name for path in paths]


def test_a_nic_loads_the_buses_then_the_net_driver_with_its_dependencies(tmp_path: Path) -> None:
    generic = fake_generic(tmp_path)
    assert names(kernel_modules(NETWORK_APP, "qemu", generic)) == [
        "virtio_ring.ko",
        "virtio.ko",
        "virtio_pci.ko",
        "virtio_mmio.ko",
        "failover.ko",
        "net_failover.ko",
        "virtio_net.ko",
    ]
    # No disk driver, and no virtio-rng: entropy comes from RDRAND (random.trust_cpu).
    assert names(kernel_modules(DISK_APP, "qemu", generic))[-1] == "virtio_blk.ko"
    assert "virtio_net.ko" not in names(kernel_modules(DISK_APP, "qemu", generic))
    assert names(kernel_modules(NETWORK_APP, "xen", generic)) == ["xen-netfront.ko"]


def test_no_modules_without_a_device_the_specialized_kernel_or_a_vm(tmp_path: Path) -> None:
    generic = fake_generic(tmp_path)
    assert kernel_modules(CONSOLE_APP, "qemu", generic) == []
    assert kernel_modules(NETWORK_APP, "qemu", None) == []  # the specialized kernel: no modules
    assert kernel_modules(NETWORK_APP, "hosted", generic) == []


def test_the_generated_configuration_lists_the_modules_in_loading_order(tmp_path: Path) -> None:
    modules = kernel_modules(NETWORK_APP, "qemu", fake_generic(tmp_path))
    namespace: dict[str, object] = {}
    exec(config_source(NETWORK_APP, "qemu", [module_image_path(m) for m in modules]), namespace)
    assert namespace["MODULES"] == tuple(f"{MODULES_DIR}/{m.name}" for m in modules)
    assert namespace["NICS"] == ("eth0",)
    specialized: dict[str, object] = {}
    exec(config_source(NETWORK_APP, "qemu"), specialized)
    assert specialized["MODULES"] == ()


@pytest.fixture
def fake_runtime(tmp_path: Path) -> runtime.Runtime:
    """An unpacked runtime with just what write_initramfs reads; lib is a symlink to usr/lib, as
    in Debian's merged /usr."""
    root = tmp_path / "runtime"
    python = root / runtime.PYTHON.lstrip("/")
    python.parent.mkdir(parents=True)
    python.write_bytes(b"\x7fELF python")
    (root / "usr/lib").mkdir(parents=True, exist_ok=True)
    (root / "lib").symlink_to("usr/lib")
    stdlib = root / runtime.STDLIB.lstrip("/")
    stdlib.mkdir(parents=True)
    (stdlib / "os.py").write_text("sep = '/'\n")
    (root / runtime.MANIFEST).write_text(json.dumps({runtime.PYTHON: [runtime.PYTHON, "/lib"]}))
    return runtime.Runtime(root=root, builtin_modules=frozenset())


def initramfs_entries(path: Path) -> dict[str, tuple[int, bytes]]:
    return {name: (mode, data) for name, mode, data, _ in parse(path.read_bytes())}


def test_the_modules_land_in_the_initramfs_in_order_and_in_the_report(
    tmp_path: Path, fake_runtime: runtime.Runtime
) -> None:
    modules = kernel_modules(NETWORK_APP, "qemu", fake_generic(tmp_path / "kernel"))
    path, parts = write_initramfs(fake_runtime, b"zip", [], tmp_path / "initramfs.cpio", modules)
    order = [name for name, *_ in parse(path.read_bytes())]
    wanted = [module_image_path(m).lstrip("/") for m in modules]
    assert [name for name in order if name.startswith("usr/lib/modules/")] == wanted
    entries = initramfs_entries(path)
    assert stat.S_ISDIR(entries["usr/lib/modules"][0])  # a real folder, not under the lib link
    for module in modules:
        mode, data = entries[module_image_path(module).lstrip("/")]
        assert stat.S_ISREG(mode) and data == module.read_bytes()
    part = {str(p["part"]): p for p in parts}["kernel_modules"]
    assert part["bytes"] == sum(m.stat().st_size for m in modules)
    assert [p["part"] for p in parts][-1] == "initramfs"


def test_an_initramfs_without_modules_has_no_modules_part(
    tmp_path: Path, fake_runtime: runtime.Runtime
) -> None:
    path, parts = write_initramfs(fake_runtime, b"zip", [], tmp_path / "initramfs.cpio")
    assert not any(name.startswith("usr/lib/modules") for name in initramfs_entries(path))
    assert "kernel_modules" not in [p["part"] for p in parts]


# --- Debian's cloud kernel, as cached ---------------------------------------------------------


@pytest.fixture(scope="module")
def cached_generic() -> kernel.GenericKernel:
    found = kernel.find_generic_kernel()
    if found is None:
        message = "no cached cloud kernel: run `python -m unikernel.toolchain.kernel --generic`"
        if os.environ.get("CI"):
            pytest.fail(f"CI must fetch the generic kernel first: {message}")
        pytest.skip(message)
    return found


def test_debians_cloud_kernel_gives_plain_module_files_for_a_nic(
    cached_generic: kernel.GenericKernel,
) -> None:
    modules = kernel_modules(NETWORK_APP, "qemu", cached_generic)
    loaded = names(modules)
    assert loaded[-1] == "virtio_net.ko"
    assert loaded.index("virtio.ko") < loaded.index("virtio_pci.ko") < loaded.index("virtio_net.ko")
    assert "virtio_blk.ko" not in loaded
    assert len(set(loaded)) == len(loaded)  # each once, though several drivers share virtio.ko
    for module in modules:
        # finit_module takes the file as it is: uncompressed ELF.
        assert module.read_bytes()[:4] == b"\x7fELF", module
    disk = names(kernel_modules(DISK_APP, "qemu", cached_generic))
    assert disk[-1] == "virtio_blk.ko" and "virtio_net.ko" not in disk


def test_a_cloud_kernel_image_carries_its_modules(
    tmp_path: Path, fake_runtime: runtime.Runtime, cached_generic: kernel.GenericKernel
) -> None:
    modules = kernel_modules(NETWORK_APP, "qemu", cached_generic)
    path, parts = write_initramfs(fake_runtime, b"zip", [], tmp_path / "initramfs.cpio", modules)
    entries = initramfs_entries(path)
    assert entries[f"{MODULES_DIR.lstrip('/')}/virtio_net.ko"][1] == modules[-1].read_bytes()
    part = {str(p["part"]): p for p in parts}["kernel_modules"]
    assert 100_000 < int(str(part["bytes"])) < 5_000_000  # about 450 KB in Debian 12's 6.1
