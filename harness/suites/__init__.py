"""Every suite the harness knows, by name."""

from __future__ import annotations

from harness.suites.base import Suite
from harness.suites.boot import BootSuite


def all_suites() -> dict[str, Suite]:
    suites: list[Suite] = [BootSuite()]
    return {suite.name: suite for suite in suites}
