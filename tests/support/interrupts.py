"""What a command may print when Ctrl-C comes before it could take Ctrl-C over."""

from __future__ import annotations

import re

# Only module bodies on the stack: pip's console script importing the entry point, which
# installs its handler (hostkit.command_entry) as soon as it has been imported.
_WHILE_IMPORTING_THE_ENTRY = re.compile(
    r"\ATraceback \(most recent call last\):\n"
    r'(?:  File "[^"]*", line \d+, in <module>\n(?:    .*\n)*)+'
    r"KeyboardInterrupt\n\Z"
)


def interrupted_before_the_handler(stderr: str) -> bool:
    """Ctrl-C came while CPython started (its site import), or while the console script
    imported the entry point: both print a traceback before any handler of ours is in place."""
    return (
        "Fatal Python error: init_import_site" in stderr
        or _WHILE_IMPORTING_THE_ENTRY.match(stderr) is not None
    )
