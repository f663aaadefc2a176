"""The `bench` command's entry point. Ctrl-C while the harness is still loading (about half a
second of imports) ends as it does once the command runs, with click's "Aborted!", not with a
traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from harness.cli import main as run_command
    except KeyboardInterrupt:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)  # click's exit status for an aborted command
    run_command()
