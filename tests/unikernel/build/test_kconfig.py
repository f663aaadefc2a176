"""The per-profile configuration fragments, their merging and the check for dropped options."""

from __future__ import annotations

import pytest

from unikernel.build import kconfig

RD_OPTIONS = ("RD_GZIP", "RD_BZIP2", "RD_LZMA", "RD_XZ", "RD_LZO", "RD_LZ4", "RD_ZSTD")


@pytest.mark.parametrize("profile", kconfig.PROFILES)
def test_every_profile_has_the_boot_essentials(profile: str) -> None:
    options = kconfig.fragment(profile)
    for name in ("64BIT", "PVH", "PACKET", "DEVTMPFS", "BLK_DEV_INITRD", "SERIAL_8250_CONSOLE"):
        assert options[name] is True, name
    # Our stack owns IP, the initramfs is uncompressed, and there are no modules.
    for name in ("INET", "IPV6", "MODULES", *RD_OPTIONS):
        assert options[name] is False, name


def test_qemu_has_virtio_and_no_xen() -> None:
    options = kconfig.fragment("qemu")
    virtio = ("VIRTIO_PCI", "VIRTIO_MMIO", "VIRTIO_NET", "VIRTIO_BLK", "HW_RANDOM_VIRTIO")
    for name in ("PCI", *virtio):
        assert options[name] is True, name
    assert not any(name.startswith("XEN") for name in options)


def test_xen_has_the_pvh_front_ends_and_no_virtio() -> None:
    options = kconfig.fragment("xen")
    for name in ("XEN", "XEN_PVH", "XEN_NETDEV_FRONTEND", "XEN_BLKDEV_FRONTEND", "HVC_XEN"):
        assert options[name] is True, name
    assert options["XEN_PV"] is False
    assert not any(name.startswith("VIRTIO") for name in options)


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="needs no kernel"):
        kconfig.fragment("hosted")
    with pytest.raises(ValueError, match="qemu, xen"):
        kconfig.fragment("firecracker")


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
