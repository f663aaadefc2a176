"""The block device interface every storage driver provides and every store uses.

A device is an array of sectors: `capacity` bytes in `sector_size` units. Requests move whole
sectors between the device and I/O pages (block/pages.py), at sector-aligned offsets, and any
number of threads may have requests in flight at once: each awaits only its own. Nothing is
copied on the way: the app gets the very memoryview the device filled.
"""

from __future__ import annotations


class BlockError(OSError):
    """A request the device refused or failed: misaligned, out of range, read-only, or an I/O
    error from below."""


class BlockDevice:
    """What a driver implements: read, write and flush, each awaitable by several threads at
    once. `check()` validates a request the same way for every driver."""

    sector_size: int = 512
    capacity: int = 0  # bytes
    read_only: bool = True

    async def read(self, offset: int, buffer: memoryview) -> None:
        """Fill `buffer` (a whole number of sectors) from the device at byte `offset`."""
        raise NotImplementedError

    async def write(self, offset: int, buffer: memoryview) -> None:
        """Write `buffer` (a whole number of sectors) at byte `offset`. Durable only after a
        flush() that began after this write completed."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Make every completed write durable (the device's write cache flushed)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def expect_random_reads(self) -> None:
        """Reads will come at random offsets: a device read through a cache drops what it holds
        and reads nothing ahead, as fio does before random reads (its invalidate=1 and
        fadvise_hint). By default nothing: a device that caches nothing has nothing to drop."""

    def check(self, offset: int, buffer: memoryview, writing: bool) -> None:
        """Raise BlockError unless the request is one the device can do."""
        size = buffer.nbytes
        sector = self.sector_size
        if writing and self.read_only:
            raise BlockError(f"write at {offset}: the device is read-only")
        if offset % sector or size % sector or size == 0:
            raise BlockError(
                f"request of {size} bytes at {offset}: offsets and sizes are whole sectors "
                f"of {sector} bytes"
            )
        if offset < 0 or offset + size > self.capacity:
            raise BlockError(
                f"request of {size} bytes at {offset}: beyond the device's {self.capacity} bytes"
            )
        if not buffer.contiguous or (writing is False and buffer.readonly):
            raise BlockError("requests need contiguous, writable I/O pages (block.pages.io_pages)")
