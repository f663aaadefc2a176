"""The stack and the Xen drivers go into the image: importing them must stay light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HEAVY = {
    "typing",
    "dataclasses",
    "inspect",
    "ipaddress",
    "asyncio",
    "random",
    "enum",
    "re",
    "socket",
    "unikernel.drivers.vnet",
}


def test_the_stack_imports_nothing_heavy() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        "before = set(sys.modules); "
        "import unikernel.net.stack, unikernel.net.sockets, unikernel.net.interface, "
        "unikernel.drivers.xen.xenstore, unikernel.drivers.xen.evtchn, "
        "unikernel.drivers.xen.gntalloc, unikernel.drivers.xen.netif, "
        "unikernel.drivers.xen.blkif, unikernel.drivers.xen.frontend, "
        "unikernel.drivers.xen.netfront, unikernel.drivers.xen.blkfront; "
        f"print(sorted((set(sys.modules) - before) & set({sorted(HEAVY)!r})))"
    )
    # -S: without site, whose own imports (re, enum...) would hide ours.
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
