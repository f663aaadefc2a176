"""Every suite the harness knows, by name."""

from __future__ import annotations

from harness.suites.base import Suite
from harness.suites.block import BlockSuite
from harness.suites.boot import BootSuite
from harness.suites.dns import DnsSuite
from harness.suites.size import SizeSuite
from harness.suites.tcp import TcpSuite
from harness.suites.threads import ThreadsSuite
from harness.suites.web import WebSuite


def all_suites() -> dict[str, Suite]:
    suites: list[Suite] = [
        BootSuite(),
        ThreadsSuite(),
        TcpSuite(),
        BlockSuite(),
        DnsSuite(),
        WebSuite(),
        SizeSuite(),
    ]
    return {suite.name: suite for suite in suites}
