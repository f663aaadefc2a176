"""A read-only key-value store over a tar archive: on a disk, or compiled into the image (as
Mirage's tar and crunch stores serve a site's files).

    store = await TarStore.open(await devices.disk("site").block())
    page = await store.get("index.html")        # a memoryview of the file's bytes

Opening reads the headers once and keeps an index, path -> where the data lies; get() then reads
a file's sectors in one request into I/O pages and hands back the slice holding the file, with
no copy. Keys are the members' paths without a leading "./" or "/"; only regular files (and
hard links to them) are keys.
"""

from __future__ import annotations

from unikernel.block.pages import io_pages
from unikernel.block.tar_format import HARD_LINK, TarScanner, entries

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from unikernel.block.interface import BlockDevice
    from unikernel.block.tar_format import TarEntry

# Headers are read a window at a time, so an archive of small files costs few requests.
HEADER_WINDOW = 64 * 1024


class NoSuchKey(KeyError):
    """get() or size() of a path the archive has no file for."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError's own str() quotes the message


def normal_key(path: str) -> str:
    """The key a member's path is served as: "./a/b" and "/a/b" are both "a/b"."""
    while True:
        if path.startswith("./"):
            path = path[2:]
        elif path.startswith("/"):
            path = path[1:]
        else:
            return path


class TarStore:
    __slots__ = ("_data", "_device", "_index")

    def __init__(
        self,
        members: Iterable[TarEntry],
        device: BlockDevice | None = None,
        data: memoryview | None = None,
    ) -> None:
        self._device = device
        self._data = data
        self._index: dict[str, tuple[int, int]] = {}  # key -> (offset, size) of its data
        for member in members:
            key = normal_key(member.path)
            if not key:
                continue
            if member.is_file:
                self._index[key] = (member.offset, member.size)
            elif member.kind == HARD_LINK:
                target = self._index.get(normal_key(member.link))
                if target is not None:
                    self._index[key] = target
            else:
                # A later member of the same path replaces the earlier one, as tar extracts.
                self._index.pop(key, None)

    @classmethod
    async def open(cls, device: BlockDevice) -> TarStore:
        """The store of the archive on `device`, its headers read and indexed."""
        sector = device.sector_size
        length = device.capacity - device.capacity % sector  # a partial sector is unreadable
        scanner = TarScanner(length)
        buffer = io_pages(HEADER_WINDOW)
        window = buffer[:0]
        window_start = 0
        members = []
        while (wanted := scanner.wants) is not None:
            offset, size = wanted
            if offset < window_start or offset + size > window_start + len(window):
                start = offset - offset % sector
                end = min(max(_round_up(offset + size, sector), start + HEADER_WINDOW), length)
                if end - start > len(buffer):
                    buffer = io_pages(end - start)  # a long name or pax record past a window
                window = buffer[: end - start]
                window_start = start
                await device.read(start, window)
            at = offset - window_start
            member = scanner.feed(window[at : at + size])
            if member is not None:
                members.append(member)
        return cls(members, device=device)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> TarStore:
        """The store of an archive held in memory (a Data file compiled into the image, say);
        get() returns slices of `data` itself."""
        view = memoryview(data).toreadonly()
        return cls(entries(view), data=view)

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and normal_key(key) in self._index

    def __len__(self) -> int:
        return len(self._index)

    def size(self, key: str) -> int:
        return self._locate(key)[1]

    async def get(self, key: str) -> memoryview:
        """The file's bytes, read-only: a slice of the I/O pages they were read into."""
        offset, size = self._locate(key)
        if self._data is not None:
            return self._data[offset : offset + size]
        device = self._device
        assert device is not None
        if size == 0:
            return memoryview(b"")
        sector = device.sector_size
        start = offset - offset % sector
        end = _round_up(offset + size, sector)
        buffer = io_pages(end - start)[: end - start]
        await device.read(start, buffer)
        return buffer[offset - start : offset - start + size].toreadonly()

    def _locate(self, key: str) -> tuple[int, int]:
        found = self._index.get(normal_key(key))
        if found is None:
            raise NoSuchKey(f"{key!r}: the archive holds no such file ({len(self._index)} files)")
        return found


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit
