"""The `unikernel` command's entry point: see hostkit.command_entry for why it is one of its
own."""

from __future__ import annotations

from hostkit.command_entry import load_then_run


def main() -> None:
    load_then_run("unikernel.toolchain.cli")
