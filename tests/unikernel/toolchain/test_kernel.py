"""Kernel selection and caching, without building anything: modules.dep, the cache's atomic
writes and locks, and finding a cached kernel."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from hostkit import cache
from unikernel.toolchain import kconfig, kernel

MODULES_DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/xen-netfront.ko.xz:
"""


def test_module_names_ignore_compression_and_dashes() -> None:
    assert kernel.module_name("kernel/drivers/net/xen-netfront.ko.xz") == "xen_netfront"
    assert kernel.module_name("virtio_net.ko") == "virtio_net"


def test_load_order_puts_dependencies_first() -> None:
    table = kernel.parse_modules_dep(MODULES_DEP)
    assert kernel.load_order("virtio_net", table) == [
        "kernel/net/core/failover.ko",
        "kernel/drivers/net/net_failover.ko",
        "kernel/drivers/net/virtio_net.ko",
    ]
    assert kernel.load_order("xen-netfront", table) == ["kernel/drivers/net/xen-netfront.ko.xz"]


def test_an_unknown_module_is_an_error() -> None:
    with pytest.raises(kernel.KernelBuildError, match="virtio_blk"):
        kernel.load_order("virtio_blk", kernel.parse_modules_dep(MODULES_DEP))


def test_generic_modules_for_a_target_skip_built_in_drivers(tmp_path: Path) -> None:
    shared = tmp_path / "failover.ko"
    generic = kernel.GenericKernel(
        package="linux-image-test",
        version="1",
        release="6.1.0-test",
        vmlinuz=tmp_path / "vmlinuz",
        config=tmp_path / "config",
        modules_dir=tmp_path,
        features={
            "VIRTIO_PCI": "m",
            "VIRTIO_MMIO": "y",
            "VIRTIO_NET": "m",
            "VIRTIO_BLK": "y",
            "HW_RANDOM_VIRTIO": "y",
            "PACKET": "m",
        },
        modules={
            "virtio_net": (shared, tmp_path / "virtio_net.ko"),
            "virtio_pci": (shared, tmp_path / "virtio_pci.ko"),
            "af_packet": (tmp_path / "af_packet.ko",),
        },
    )
    # The shared dependency once, before the first module that needs it.
    assert generic.modules_for("qemu") == [
        shared,
        tmp_path / "virtio_pci.ko",
        tmp_path / "virtio_net.ko",
        tmp_path / "af_packet.ko",
    ]
    # Given roles, only their drivers and the buses under them.
    assert generic.modules_for("qemu", ["network"]) == [
        shared,
        tmp_path / "virtio_pci.ko",
        tmp_path / "virtio_net.ko",
        tmp_path / "af_packet.ko",
    ]
    assert generic.modules_for("qemu", ["block"]) == [shared, tmp_path / "virtio_pci.ko"]
    assert generic.modules_for("qemu", []) == []
    # A driver neither built in nor a module is an error, not a silently missing device.
    with pytest.raises(kernel.KernelBuildError, match="CONFIG_XEN_NETDEV_FRONTEND"):
        generic.modules_for("xen")
    with pytest.raises(kernel.KernelBuildError, match="CONFIG_XEN_NETDEV_FRONTEND"):
        generic.modules_for("xen", ["network"])


def test_every_guest_driver_has_a_role() -> None:
    for drivers in kernel.GUEST_DRIVERS.values():
        assert set(drivers) <= set(kernel.DRIVER_ROLES)


def test_the_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIBENCH_CACHE", "/somewhere")
    assert cache.kernels_dir() == Path("/somewhere/kernels")
    monkeypatch.delenv("UNIBENCH_CACHE")
    assert cache.root() == Path("/var/cache/unibench")


def test_atomic_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "artifact"
    cache.write_text(target, "one")
    cache.write_text(target, "two")
    assert target.read_text() == "two"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["artifact"]


def test_a_failed_staging_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "kernel"
    with pytest.raises(RuntimeError), cache.staging_dir(final) as staging:
        (staging / "half").write_text("x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with cache.staging_dir(final) as staging:
        (staging / "whole").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["kernel"]
    assert (final / "whole").exists()


def _hold_lock(lock: str, marker: str, seconds: float) -> None:
    with cache.locked(Path(lock)):
        Path(marker).write_text("held")
        time.sleep(seconds)


def test_the_lock_excludes_another_process(tmp_path: Path) -> None:
    lock, marker = tmp_path / "k.lock", tmp_path / "held"
    holder = multiprocessing.get_context("spawn").Process(
        target=_hold_lock, args=(str(lock), str(marker), 1.0)
    )
    holder.start()
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        with cache.locked(lock):
            waited = time.monotonic() - started
    finally:
        holder.join(30)
    assert waited > 0.3


def test_nothing_is_found_in_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIBENCH_CACHE", str(tmp_path))
    assert kernel.find_specialized_kernel() is None
    assert not (tmp_path / "kernels").exists()  # looking builds nothing


def test_the_configuration_cache_entry_follows_the_source_version() -> None:
    entry = kernel._config_cache_path(kconfig.fragment(), "6.1.192-3")
    assert entry == kernel._config_cache_path(kconfig.fragment(), "6.1.192-3")
    assert kernel._config_cache_path(kconfig.fragment(), "6.1.193-1") != entry
    fewer = {k: v for k, v in kconfig.fragment().items() if k != "XEN_BLKDEV_FRONTEND"}
    assert kernel._config_cache_path(fewer, "6.1.192-3") != entry
    assert kernel._config_cache_path(kconfig.fragment("python"), "6.1.192-3") != entry


def test_the_command_line_needs_a_choice(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        kernel.main([])
    assert "--specialized" in capsys.readouterr().err
