"""I/O pages: the page-aligned memory every block request reads into or writes from.

O_DIRECT (and a device's DMA) needs buffers aligned to the sector and the page; anonymous
mmap memory is both, and a memoryview of it travels from the device to the app and back
without a copy (Mirage's Io_page). Slices of a page buffer stay aligned at page multiples.
"""

from __future__ import annotations

import mmap

PAGE_SIZE = mmap.PAGESIZE


def io_pages(size: int) -> memoryview:
    """`size` bytes (rounded up to whole pages) of zeroed, page-aligned, writable memory."""
    if size <= 0:
        raise ValueError(f"io_pages({size}): ask for at least one byte")
    rounded = -(-size // PAGE_SIZE) * PAGE_SIZE
    return memoryview(mmap.mmap(-1, rounded, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
