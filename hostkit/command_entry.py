"""The entry point of our console commands (`bench`, `unikernel`): Ctrl-C while the command is
still loading (up to a second of imports on a busy machine) ends as it does once the command
runs, with click's "Aborted!" and status 1, not with a traceback, and never goes unheard.

While the command's module loads, Ctrl-C is only noted, and acted on once the imports are
done: raised there, a KeyboardInterrupt may land in one of importlib's weakref callbacks, where
CPython prints "Exception ignored" and drops it, or in a library's bare `except:`, and the
command then ran on as if never interrupted (a `unikernel run` that Ctrl-C did not stop).

It imports little, so that the handler is in place a few milliseconds after start-up.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

ABORTED_STATUS = 1  # click's, for a command it aborts on Ctrl-C


def load_then_run(module: str) -> None:
    """Import `module`, with Ctrl-C held back until it is loaded, then call its main()."""
    arrived: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    previous = None
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job ignores it
        previous = signal.signal(signal.SIGINT, note)
    try:
        __import__(module)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if arrived:
        print("Aborted!", file=sys.stderr)
        sys.exit(ABORTED_STATUS)
    sys.modules[module].main()
