from pathlib import Path

from unikernel.build.xl import xl_config


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
