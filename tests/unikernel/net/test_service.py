"""open_network(): what the environment configures (address, offloads) on a vnet port."""

from __future__ import annotations

import pytest

from unikernel.core.scheduler import run
from unikernel.drivers.vnet import Switch
from unikernel.net.service import NetworkService, open_network

STATIC = {"UNIKERNEL_IP": "10.0.0.2/24"}


def open_on_segmenting_port(environ: dict[str, str]) -> tuple[bool, dict[str, int]]:
    """The stack's segmentation, and the link's counters, on a port that cuts super-frames."""
    port = Switch().port(b"\x02\x00\x00\x00\x00\x02")
    port.segmentation = True

    async def main() -> tuple[bool, dict[str, int]]:
        network: NetworkService = await open_network(port, environ=environ)
        try:
            return network.stack.segmentation, network.counts()
        finally:
            await network.aclose()

    result: tuple[bool, dict[str, int]] = run(main)
    return result


def test_the_device_s_segmentation_is_used_unless_offloads_are_off() -> None:
    assert open_on_segmenting_port(STATIC)[0] is True
    assert open_on_segmenting_port({**STATIC, "UNIKERNEL_OFFLOADS": "on"})[0] is True
    assert open_on_segmenting_port({**STATIC, "UNIKERNEL_OFFLOADS": "off"})[0] is False


def test_a_bad_offloads_setting_says_what_to_write() -> None:
    with pytest.raises(ValueError, match=r"UNIKERNEL_OFFLOADS='maybe': say on or off"):
        open_on_segmenting_port({**STATIC, "UNIKERNEL_OFFLOADS": "maybe"})


def test_the_link_counters_include_the_interface_s_backlog() -> None:
    counts = open_on_segmenting_port(STATIC)[1]
    assert counts == {"backlog": 0, "backlog_drops": 0, "writer_stalls": 0}
