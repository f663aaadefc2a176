"""The `bench` command's entry point. Ctrl-C while the harness is still loading (about half a
second of imports) ends as it does once the command runs, with click's "Aborted!", not with a
traceback.

While the harness loads, Ctrl-C is only noted, and acted on once the imports are done: raised
there, a KeyboardInterrupt may land in one of importlib's weakref callbacks, where CPython
prints "Exception ignored" with a traceback and drops it, and the command then ran on as if
never interrupted.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def main() -> None:
    arrived: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    previous = None
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job ignores it
        previous = signal.signal(signal.SIGINT, note)
    try:
        from harness.cli import main as run_command
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if arrived:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)  # click's exit status for an aborted command
    run_command()
