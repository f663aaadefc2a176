"""Reading back what a store on a disk file holds, as a fresh boot would."""

from __future__ import annotations

from unikernel.block.log_store import LogStore
from unikernel.drivers.rawdisk import RawDisk


async def log_store_contents(path: str, read_only: bool = False) -> dict[bytes, bytes]:
    """Every key a fresh open of the log store at `path` holds, with its value. `read_only`:
    open it without changing it (no format, no recovery written)."""
    device = RawDisk(path, read_only=read_only)
    try:
        store = await LogStore.open(device)
        found = {key: await store.get(key) for key in store}
        return {key: value for key, value in found.items() if value is not None}
    finally:
        device.close()
