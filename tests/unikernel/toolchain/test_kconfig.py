"""The specialized kernel's configuration: fragment, merging, and the check for dropped options."""

from __future__ import annotations

import pytest

from unikernel.toolchain import kconfig

RD_OPTIONS = ("RD_GZIP", "RD_BZIP2", "RD_LZMA", "RD_XZ", "RD_LZO", "RD_LZ4", "RD_ZSTD")


def test_the_kernel_has_the_boot_essentials_and_nothing_our_stack_owns() -> None:
    options = kconfig.fragment()
    for name in ("64BIT", "PVH", "PACKET", "DEVTMPFS", "BLK_DEV_INITRD", "SERIAL_8250_CONSOLE"):
        assert options[name] is True, name
    # Our stack owns IP, the initramfs is uncompressed, and there are no modules.
    for name in ("INET", "IPV6", "MODULES", *RD_OPTIONS):
        assert options[name] is False, name


def test_one_kernel_has_virtio_and_the_xen_pvh_front_ends() -> None:
    options = kconfig.fragment()
    virtio = ("VIRTIO_PCI", "VIRTIO_MMIO", "VIRTIO_NET", "VIRTIO_BLK", "HW_RANDOM_VIRTIO")
    xen = ("XEN", "XEN_PVH", "XEN_NETDEV_FRONTEND", "XEN_BLKDEV_FRONTEND", "HVC_XEN")
    for name in ("PCI", *virtio, *xen):
        assert options[name] is True, name
    # Only PVH: Xen's PV and HVM guest paths are large and unused.
    assert options["XEN_PV"] is False
    assert options["XEN_PVHVM_GUEST"] is False


def test_the_python_drivers_variant_differs_only_by_lacking_linuxs_xen_front_ends() -> None:
    ours, theirs = kconfig.fragment("python"), kconfig.fragment("kernel")
    assert theirs == kconfig.fragment()
    differing = {name for name in {*ours, *theirs} if ours.get(name) != theirs.get(name)}
    assert differing == {"XEN_NETDEV_FRONTEND", "XEN_BLKDEV_FRONTEND"}
    assert ours["XEN_NETDEV_FRONTEND"] is False and ours["XEN_BLKDEV_FRONTEND"] is False
    # What our front-ends open: /dev/xen/evtchn and gntalloc (xenbus comes with XEN).
    assert ours["XEN_DEV_EVTCHN"] is True and ours["XEN_GRANT_DEV_ALLOC"] is True
    with pytest.raises(ValueError, match="say kernel or python"):
        kconfig.fragment("both")


def test_render_writes_kconfig_lines() -> None:
    text = kconfig.render(
        {"PVH": True, "INET": False, "INITRAMFS_SOURCE": 'a "b"', "INITRAMFS_ROOT_UID": 0}
    )
    assert text.splitlines() == [
        "CONFIG_PVH=y",
        "# CONFIG_INET is not set",
        'CONFIG_INITRAMFS_SOURCE="a \\"b\\""',
        "CONFIG_INITRAMFS_ROOT_UID=0",
    ]


def test_merge_overrides_the_same_options_and_keeps_the_rest() -> None:
    base = "# header\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n"
    merged = kconfig.merge(base, {"B": True, "C": False})
    assert kconfig.parse(merged) == {"A": "y", "B": "y"}
    assert "# header" in merged
    assert merged.count("CONFIG_B") == 1
    assert merged.count("CONFIG_C") == 1


FINAL = """\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_64BIT=y
CONFIG_PVH=y
CONFIG_VIRTIO_NET=m
# CONFIG_INET is not set
CONFIG_IPV6=y
CONFIG_INITRAMFS_SOURCE=""
"""


def test_parse_keeps_set_options_only() -> None:
    assert kconfig.parse(FINAL) == {
        "64BIT": "y",
        "PVH": "y",
        "VIRTIO_NET": "m",
        "IPV6": "y",
        "INITRAMFS_SOURCE": '""',
    }


def test_mismatches_finds_dropped_modular_and_unwanted_options() -> None:
    wanted: dict[str, kconfig.Value] = {
        "64BIT": True,
        "PVH": True,
        "XEN_PVH": True,  # dropped: absent
        "VIRTIO_NET": True,  # a module is not built in
        "INET": False,
        "IPV6": False,  # set although we said no
        "INITRAMFS_SOURCE": "",
    }
    found = {m.name: m.got for m in kconfig.mismatches(FINAL, wanted)}
    assert found == {"XEN_PVH": None, "VIRTIO_NET": "m", "IPV6": "y"}


def test_verify_fails_loudly_naming_the_dropped_options() -> None:
    with pytest.raises(kconfig.KconfigError) as caught:
        kconfig.verify(FINAL, {"PVH": True, "XEN_PVH": True, "HVC_XEN": True})
    message = str(caught.value)
    assert "CONFIG_XEN_PVH: wanted y, got not set" in message
    assert "CONFIG_HVC_XEN" in message
    assert "CONFIG_PVH:" not in message


def test_verify_accepts_a_config_that_has_everything() -> None:
    kconfig.verify(FINAL, {"64BIT": True, "PVH": True, "INET": False, "XEN": False})


def test_config_hash_follows_the_config_and_the_source_version() -> None:
    key = kconfig.config_hash(FINAL, "6.1.192-3")
    assert key == kconfig.config_hash(FINAL, "6.1.192-3")
    assert len(key) == 64
    assert key != kconfig.config_hash(
        FINAL.replace("CONFIG_IPV6=y", "# CONFIG_IPV6 is not set"), "6.1.192-3"
    )
    assert key != kconfig.config_hash(FINAL, "6.1.193-1")
