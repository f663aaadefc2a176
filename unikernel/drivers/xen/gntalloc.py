"""gntalloc: pages granted to another domain, through Linux's /dev/xen/gntalloc.

A front-end shares memory with its back-end by granting it pages: each granted page has a
grant reference (gref) that the front-end publishes (in xenstore, in ring requests) and the
back-end maps or copies by. `GrantPool` allocates a whole pool in one ioctl and maps it in one
mmap; the pages start zeroed and stay granted until close(), which is how our front-ends use
them (persistent grants: buffers are reused, never re-granted).

The kernel caps the pages gntalloc grants at `limit`, 1024 by default, in total across every
user of the device; `ensure_limit()` raises it.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct

from unikernel.drivers.xen.device_files import io_none, open_device

GNTALLOC_PATH = "/dev/xen/gntalloc"
LIMIT_PATH = "/sys/module/xen_gntalloc/parameters/limit"
PAGE_SIZE = 4096

# <xen/gntalloc.h>, native layout. ioctl_gntalloc_alloc_gref is {u16 domid; u16 flags;
# u32 count; u64 index (out); u32 gref_ids[1] (out)}: the grefs start at 16, and the struct's
# size, which the ioctl number encodes, is padded to 24.
_ALLOC_HEAD = struct.Struct("=HHIQ")
_ALLOC_SIZE = 24
_DEALLOC = struct.Struct("=QI4x")  # {u64 index; u32 count}, padded to 16
_UNMAP_NOTIFY = struct.Struct("=QII")  # {u64 index; u32 action; u32 event_channel_port}
IOCTL_GNTALLOC_ALLOC_GREF = io_none("G", 5, _ALLOC_SIZE)
IOCTL_GNTALLOC_DEALLOC_GREF = io_none("G", 6, _DEALLOC.size)
IOCTL_GNTALLOC_SET_UNMAP_NOTIFY = io_none("G", 7, _UNMAP_NOTIFY.size)
GNTALLOC_FLAG_WRITABLE = 1
UNMAP_NOTIFY_CLEAR_BYTE = 1  # on unmap, clear the byte at `index`'s offset in the page
UNMAP_NOTIFY_SEND_EVENT = 2  # on unmap, notify `port`


def pack_alloc_gref(domid: int, count: int, writable: bool = True) -> bytearray:
    """The ALLOC_GREF argument, with room for the kernel to write back `count` grefs."""
    if count < 1:
        raise ValueError(f"a grant pool has at least one page, not {count}")
    buffer = bytearray(max(_ALLOC_SIZE, _ALLOC_HEAD.size + 4 * count))
    _ALLOC_HEAD.pack_into(buffer, 0, domid, GNTALLOC_FLAG_WRITABLE if writable else 0, count, 0)
    return buffer


def unpack_alloc_gref(buffer: bytes | bytearray, count: int) -> tuple[int, list[int]]:
    """What ALLOC_GREF wrote back: (index, the grefs). `index` is the mmap offset of the pool."""
    index = _ALLOC_HEAD.unpack_from(buffer)[3]
    grefs = list(struct.unpack_from(f"={count}I", buffer, _ALLOC_HEAD.size))
    return index, grefs


def pack_dealloc_gref(index: int, count: int) -> bytearray:
    return bytearray(_DEALLOC.pack(index, count))


def pack_unmap_notify(index: int, action: int, port: int) -> bytearray:
    return bytearray(_UNMAP_NOTIFY.pack(index, action, port))


class GrantPool:
    """`count` pages granted to domain `domid` (writable by it unless `writable` is False),
    mapped here; `grefs[i]` is page i's grant reference."""

    def __init__(
        self, domid: int, count: int, *, writable: bool = True, path: str = GNTALLOC_PATH
    ) -> None:
        self.domid = domid
        self.count = count
        self._fd = open_device(path, "CONFIG_XEN_GRANT_DEV_ALLOC", blocking=True)
        try:
            argument = pack_alloc_gref(domid, count, writable)
            try:
                fcntl.ioctl(self._fd, IOCTL_GNTALLOC_ALLOC_GREF, argument)
            except OSError as error:
                raise _explain(error, domid, count) from None
            self.index, self.grefs = unpack_alloc_gref(argument, count)
            try:
                # Shared, or gntalloc refuses it; offset `index` names this pool in the fd.
                self._map = mmap.mmap(
                    self._fd,
                    count * PAGE_SIZE,
                    flags=mmap.MAP_SHARED,
                    prot=mmap.PROT_READ | mmap.PROT_WRITE,
                    offset=self.index,
                )
            except BaseException:
                fcntl.ioctl(
                    self._fd, IOCTL_GNTALLOC_DEALLOC_GREF, pack_dealloc_gref(self.index, count)
                )
                raise
        except BaseException:
            os.close(self._fd)
            raise
        self._view = memoryview(self._map)

    def page(self, i: int) -> memoryview:
        """Page i of the pool, 4096 bytes; release the view (or drop it) before close()."""
        if not 0 <= i < self.count:
            raise IndexError(f"page {i} of a pool of {self.count}")
        return self._view[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]

    def buffer(self) -> memoryview:
        """The whole pool, page after page."""
        return self._view[:]

    def set_unmap_notify(self, page: int, action: int, port: int = 0) -> None:
        """What the kernel does for the back-end if we die with `page` mapped: clear its first
        byte (UNMAP_NOTIFY_CLEAR_BYTE), notify `port` (UNMAP_NOTIFY_SEND_EVENT), or both."""
        argument = pack_unmap_notify(self.index + page * PAGE_SIZE, action, port)
        fcntl.ioctl(self._fd, IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, argument)

    def close(self) -> None:
        """Unmap the pool and end its grants (the kernel defers that for pages the other
        domain still maps)."""
        if self._fd < 0:
            return
        self._view.release()
        try:
            self._map.close()
        except BufferError:
            self._view = memoryview(self._map)  # still open: usable, and closable again later
            raise BufferError(
                "views of the grant pool's pages are still in use: release them before close()"
            ) from None
        fcntl.ioctl(
            self._fd, IOCTL_GNTALLOC_DEALLOC_GREF, pack_dealloc_gref(self.index, self.count)
        )
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> GrantPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_limit(path: str = LIMIT_PATH) -> int:
    """The most pages gntalloc grants, in total across all its users."""
    with open(path) as file:
        return int(file.read())


def ensure_limit(pages: int, path: str = LIMIT_PATH) -> int:
    """Raise gntalloc's limit to at least `pages` (count every pool of every user); the limit
    now in force."""
    limit = read_limit(path)
    if limit < pages:
        with open(path, "w") as file:
            file.write(str(pages))
        limit = read_limit(path)
    return limit


def _explain(error: OSError, domid: int, count: int) -> OSError:
    if error.errno not in (errno.ENOSPC, errno.ENOMEM):
        return OSError(
            error.errno, f"gntalloc cannot grant {count} pages to domain {domid}: {error.strerror}"
        )
    try:
        limit = f"is {read_limit()}"
    except (OSError, ValueError):
        limit = "is unknown"
    return OSError(
        error.errno,
        f"gntalloc cannot grant {count} pages to domain {domid} ({error.strerror}): its limit"
        f" {limit} pages in total across all users ({LIMIT_PATH}); raise it with"
        " gntalloc.ensure_limit(), by writing that file as root, or with"
        " xen_gntalloc.limit=N on the kernel command line",
    )
