"""The hosted unikernel's link, as its launcher names it in the environment: a TAP device or a
veth end taken with AF_PACKET rings, each made here inside a test-made namespace; and what
the launcher writes for each."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostkit.namespaces import TapLink, VethLink, entered
from tests.support.netns import require
from unikernel.drivers.hosted_link import (
    OFFLOADS_VARIABLE,
    PACKET_VARIABLE,
    TAP_VARIABLE,
    launch_link,
)
from unikernel.drivers.packet import PacketNetif
from unikernel.drivers.packet_ring import PacketRingNetif
from unikernel.drivers.tap import TapNetif
from unikernel.toolchain.image import BuildResult
from unikernel.toolchain.launch import launch


@pytest.fixture
def no_link(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in (TAP_VARIABLE, PACKET_VARIABLE, OFFLOADS_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_without_a_link_named_it_says_what_to_set(no_link: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match=f"{TAP_VARIABLE}.*{PACKET_VARIABLE}"):
        launch_link()


def test_offloads_are_on_or_off(no_link: pytest.MonkeyPatch) -> None:
    no_link.setenv(TAP_VARIABLE, "ubtap0")
    no_link.setenv(OFFLOADS_VARIABLE, "yes")
    with pytest.raises(ValueError, match=f"{OFFLOADS_VARIABLE} is on or off, not 'yes'"):
        launch_link()


@pytest.mark.parametrize(
    ("offloads", "driver"), [(False, PacketRingNetif), (True, PacketNetif)], ids=["off", "on"]
)
def test_a_veth_end_is_taken_whole_on_rings_where_frames_are_small(
    no_link: pytest.MonkeyPatch, offloads: bool, driver: type
) -> None:
    require()
    link = VethLink(offloads=offloads, raw_guest_end=True)
    try:
        no_link.setenv(PACKET_VARIABLE, link.device)
        no_link.setenv(OFFLOADS_VARIABLE, "on" if offloads else "off")
        with entered(link.server.name):
            netif = launch_link()
        try:
            assert type(netif) is driver
            assert netif.name == link.device and netif.offloads == offloads
        finally:
            netif.close()
        # The unikernel answers for the guest's address: Linux on that end has none.
        assert "inet " not in link.server.ip("-4", "address", "show", "dev", link.device)
    finally:
        link.close()


def test_a_tap_device_is_opened_when_the_launcher_made_one(no_link: pytest.MonkeyPatch) -> None:
    require()
    link = TapLink()
    try:
        no_link.setenv(TAP_VARIABLE, link.device)
        with entered(link.name):
            netif = launch_link()
        try:
            assert isinstance(netif, TapNetif) and netif.name == link.device
            assert not netif.segmentation  # offloads off, the default
        finally:
            netif.close()
    finally:
        link.close()


def _hosted(tmp_path: Path) -> BuildResult:
    return BuildResult(target="hosted", kernel_profile=None, outputs={"app": tmp_path / "app"})


def test_the_launcher_names_the_link_it_made(tmp_path: Path) -> None:
    require()
    veth = VethLink(offloads=False, raw_guest_end=True)
    try:
        command = launch(_hosted(tmp_path), params={}, link=veth, memory_mib=64, accel="native")
        assert command.environment[PACKET_VARIABLE] == veth.device
        assert command.environment[OFFLOADS_VARIABLE] == "off"
        assert TAP_VARIABLE not in command.environment
    finally:
        veth.close()
    tap = TapLink()
    try:
        command = launch(
            _hosted(tmp_path), params={}, link=tap, memory_mib=64, accel="native", offloads=True
        )
        assert command.environment[TAP_VARIABLE] == tap.device
        assert command.environment[OFFLOADS_VARIABLE] == "on"
        assert PACKET_VARIABLE not in command.environment
    finally:
        tap.close()
