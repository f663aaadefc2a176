"""The boot probe application: nothing to do once booted but say so."""

from unikernel.core.console import Console


async def main() -> int:
    Console(1).line("boot-probe: up")
    return 0
