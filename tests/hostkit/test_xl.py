from pathlib import Path

import pytest

from hostkit.xl import Disk, Vif, XlConfigError, xl_config


def test_xl_config_is_a_pvh_guest_destroyed_when_it_ends() -> None:
    text = xl_config("unikernel-probe", Path("/images/u.vmlinux"), 256, extra_args=("A=1",))
    settings = dict(line.split(" = ", 1) for line in text.strip().splitlines())
    assert settings["type"] == '"pvh"'
    assert settings["kernel"] == '"/images/u.vmlinux"'
    assert settings["memory"] == "256" and settings["vcpus"] == "1"
    assert "console=hvc0" in settings["cmdline"] and settings["cmdline"].endswith(' A=1"')
    assert "UNIKERNEL_TARGET=xen" in settings["cmdline"]
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        assert settings[event] == '"destroy"'


def _settings(text: str) -> dict[str, str]:
    return dict(line.split(" = ", 1) for line in text.strip().splitlines())


def test_a_linux_guest_boots_its_ramdisk_from_a_read_only_disk_on_the_bridge() -> None:
    text = xl_config(
        "linux-1",
        Path("/var/lib/unibench/images/vmlinuz"),
        512,
        extra_args=("unibench.ip=10.203.0.16/24",),
        kernel_args=("root=/dev/xvda", "ro"),
        ramdisk=Path("/var/lib/unibench/images/initrd"),
        disks=[Disk("/dev/vdb")],
        vifs=[Vif("xenbr0", "00:16:3e:cb:00:10")],
        tsc_mode="native",
    )
    settings = _settings(text)
    assert settings["ramdisk"] == '"/var/lib/unibench/images/initrd"'
    assert settings["cmdline"] == '"root=/dev/xvda ro unibench.ip=10.203.0.16/24"'
    assert settings["disk"] == "['format=raw,vdev=xvda,access=ro,target=/dev/vdb']"
    assert settings["vif"] == "['bridge=xenbr0,mac=00:16:3e:cb:00:10']"
    assert settings["tsc_mode"] == '"native"'


def test_the_unikernel_config_leaves_out_what_it_does_not_use() -> None:
    settings = _settings(xl_config("u", Path("/u.vmlinux"), 64))
    assert not {"ramdisk", "disk", "vif", "tsc_mode"} & set(settings)


def test_a_writable_disk_and_a_nic_without_a_fixed_mac() -> None:
    assert (
        Disk("/dev/vdc", vdev="xvdb", writable=True)
        .spec()
        .endswith("vdev=xvdb,access=rw,target=/dev/vdc")
    )
    assert Vif("xenbr0").spec() == "bridge=xenbr0"
    assert (
        Vif("xenbr0", "00:16:3e:cb:00:10", script="/run/unibench/vif-port").spec()
        == "bridge=xenbr0,mac=00:16:3e:cb:00:10,script=/run/unibench/vif-port"
    )


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"name": "two words"}, "guest name"),
        ({"name": 'q"uote'}, "guest name"),
        ({"memory_mib": 8}, "memory"),
        ({"vcpus": 0}, "vcpus"),
        ({"extra_args": ('A="1"',)}, "command line"),
        ({"kernel": Path("relative/vmlinux")}, "path"),
        ({"tsc_mode": "fast"}, "tsc_mode"),
        ({"vifs": [Vif("xenbr0", "00:16:3E:CB:00:10")]}, "MAC"),
        ({"vifs": [Vif("br 0")]}, "bridge"),
        ({"vifs": [Vif("xenbr0", script="vif-port")]}, "script"),
        ({"vifs": [Vif("xenbr0", script="/x,mac=00:16:3e:00:00:01")]}, "script"),
        ({"disks": [Disk("/dev/vd,b")]}, "disk"),
    ],
)
def test_values_xl_would_misread_are_refused_with_what_is_allowed(
    change: dict[str, object], complaint: str
) -> None:
    arguments: dict[str, object] = {"name": "ok", "kernel": Path("/k"), "memory_mib": 128}
    arguments.update(change)
    with pytest.raises(XlConfigError, match=complaint):
        xl_config(**arguments)  # type: ignore[arg-type]
