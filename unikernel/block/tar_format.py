"""Tar archives (ustar, POSIX pax, GNU), read without I/O: where each member's data lies.

An archive is a run of 512-byte blocks: a header, then the member's data padded to whole
blocks, then the next header, until a zero block (or the end of the data). TarScanner walks the
headers and says which bytes it needs next, so a store can read them from a disk in whatever
chunks suit it; entries() walks an archive already in memory.

Extended headers rename the member after them: GNU 'L' (a long name) and pax 'x' (path, and
size for members past 8 GiB). Pax 'g' and GNU 'K' records are skipped; sparse members are
refused, since their data is not stored as one run of bytes.

This is not the standard library's tarfile: that one is large, reads through file objects, and
pulls half the library into an image.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

BLOCK = 512
MAX_EXTENDED = 1 << 20  # a long name or pax record past this is damage, not a name

REGULAR = "0"
HARD_LINK = "1"
SYMLINK = "2"
DIRECTORY = "5"
CONTIGUOUS = "7"
GNU_LONG_NAME = "L"
GNU_LONG_LINK = "K"
GNU_SPARSE = "S"
PAX_HEADER = "x"
PAX_GLOBAL = "g"
# Members whose size field says nothing about data following them (tarfile skips none for them).
_NO_DATA = frozenset("123456")
_POSIX_MAGIC = b"ustar\x0000"


class TarFormatError(ValueError):
    """The bytes are not a tar archive we can read: a bad checksum, a bad number field, a
    truncated archive, an unsupported member."""


class TarEntry:
    """One member: its path, where its data starts in the archive and how long it is; `kind`
    is the header's type flag ("0" a regular file, "5" a directory...), `link` a link's
    target."""

    __slots__ = ("kind", "link", "offset", "path", "size")

    def __init__(self, path: str, offset: int, size: int, kind: str, link: str = "") -> None:
        self.path = path
        self.offset = offset
        self.size = size
        self.kind = kind
        self.link = link

    @property
    def is_file(self) -> bool:
        return self.kind in (REGULAR, CONTIGUOUS)

    def __repr__(self) -> str:
        return (
            f"TarEntry({self.path!r}, offset={self.offset}, size={self.size}, kind={self.kind!r})"
        )


def _text(field: bytes | memoryview) -> str:
    raw = bytes(field)
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    # Names are bytes; undecodable ones survive as surrogates, as the os module treats paths.
    return raw.decode("utf-8", "surrogateescape")


def parse_number(field: bytes | memoryview, what: str) -> int:
    """A numeric header field: octal digits (space or NUL padded), or GNU base-256 for values
    the digits cannot hold (the first byte's top bit set; 0xff starts a negative one)."""
    raw = bytes(field)
    if raw and raw[0] & 0x80:
        if raw[0] == 0xFF:
            raise TarFormatError(f"negative {what} in a tar header")
        return int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
    digits = raw.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if digits.strip(b"01234567"):
        raise TarFormatError(f"{what} field {raw!r} in a tar header is not an octal number")
    return int(digits, 8)


def header_checksum(block: bytes | memoryview) -> tuple[int, int]:
    """The header's sum of bytes with its checksum field read as spaces, unsigned and signed
    (old tars summed signed chars; readers accept either)."""
    raw = bytes(block)
    outside = raw[:148] + raw[156:]
    unsigned = sum(outside) + 8 * 0x20
    high = sum(1 for byte in outside if byte & 0x80)
    return unsigned, unsigned - 256 * high


class TarHeader:
    """A header's fields, before any extended header renames its member."""

    __slots__ = ("kind", "link", "path", "size")

    def __init__(self, path: str, size: int, kind: str, link: str) -> None:
        self.path = path
        self.size = size
        self.kind = kind
        self.link = link


def parse_header(block: bytes | memoryview) -> TarHeader | None:
    """A header block's fields, None for a zero block (the end of the archive)."""
    if len(block) != BLOCK:
        raise TarFormatError(f"a tar header is {BLOCK} bytes, not {len(block)}: truncated")
    raw = bytes(block)
    if not raw.strip(b"\0"):
        return None
    stored = parse_number(raw[148:156], "checksum")
    if stored not in header_checksum(raw):
        raise TarFormatError(
            f"tar header checksum {stored:o} does not match the header's bytes: not a tar "
            "archive, or a damaged one"
        )
    size = parse_number(raw[124:136], "size")
    kind = chr(raw[156]) if raw[156] else REGULAR
    name = _text(raw[0:100])
    if raw[257:265] == _POSIX_MAGIC:
        prefix = _text(raw[345:500])  # GNU headers keep times here, not a prefix
        if prefix:
            name = prefix + "/" + name
    if not raw[156] and name.endswith("/"):
        kind = DIRECTORY  # how old V7 tars wrote directories
    return TarHeader(name, size, kind, _text(raw[157:257]))


def parse_pax(data: bytes | memoryview) -> dict[str, str]:
    """Pax extended header records: "LEN KEYWORD=VALUE\\n", LEN counting the whole record."""
    raw = bytes(data)
    records: dict[str, str] = {}
    position = 0
    while position < len(raw) and raw[position] != 0:
        space = raw.find(b" ", position, position + 20)
        length_field = raw[position:space] if space > position else b""
        if not length_field.isdigit():
            raise TarFormatError(f"pax record at byte {position}: no length before a space")
        end = position + int(length_field)
        if end > len(raw) or end <= space + 1 or raw[end - 1] != 0x0A:
            raise TarFormatError(
                f"pax record at byte {position}: its length {int(length_field)}"
                " does not end at a newline"
            )
        keyword, equals, value = raw[space + 1 : end - 1].partition(b"=")
        if not equals or not keyword:
            raise TarFormatError(f"pax record at byte {position}: no KEYWORD=VALUE")
        records[keyword.decode("utf-8", "surrogateescape")] = value.decode(
            "utf-8", "surrogateescape"
        )
        position = end
    return records


def _blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


# What TarScanner.wants next.
_HEADER, _EXTENDED, _DONE = 0, 1, 2


class TarScanner:
    """Walks an archive of `length` bytes header by header, without reading it itself.

        scanner = TarScanner(length)
        while (wanted := scanner.wants) is not None:
            offset, size = wanted
            entry = scanner.feed(<the archive's bytes [offset, offset + size)>)
            if entry is not None: ...

    Archives end at a zero block, or, as tarfile and GNU tar accept, exactly where the data
    ends after a member.
    """

    __slots__ = (
        "_extended",
        "_link",
        "_offset",
        "_path",
        "_size",
        "_size_override",
        "_state",
        "length",
    )

    def __init__(self, length: int) -> None:
        self.length = length
        self._offset = 0
        self._state = _HEADER if length else _DONE
        self._size = BLOCK
        self._extended = ""  # the kind of extended header whose data we want
        # What the extended headers so far say about the next member.
        self._path: str | None = None
        self._link: str | None = None
        self._size_override: int | None = None

    @property
    def wants(self) -> tuple[int, int] | None:
        """(offset, size) of the bytes feed() needs next; None once the archive has ended."""
        if self._state == _DONE:
            return None
        return self._offset, self._size

    def feed(self, data: bytes | memoryview) -> TarEntry | None:
        """Take the bytes wants asked for; the member they complete, if any."""
        if self._state == _DONE:
            raise TarFormatError("the archive has ended: nothing more to read")
        if len(data) != self._size:
            raise TarFormatError(
                f"tar archive truncated: {self._size} bytes wanted at {self._offset}, "
                f"{len(data)} there"
            )
        if self._state == _EXTENDED:
            self._take_extended(data)
            self._next(self._offset + _blocks(self._size))
            return None
        header = parse_header(data)
        if header is None:
            self._state = _DONE
            return None
        data_offset = self._offset + BLOCK
        kind = header.kind
        if kind in (GNU_LONG_NAME, GNU_LONG_LINK, PAX_HEADER, PAX_GLOBAL):
            if header.size > MAX_EXTENDED:
                raise TarFormatError(
                    f"extended header at {self._offset} of {header.size} bytes: damaged"
                )
            self._need(data_offset, header.size)
            if header.size:
                self._state = _EXTENDED
                self._extended = kind
                self._offset, self._size = data_offset, header.size
            else:
                self._next(data_offset)
            return None
        if kind == GNU_SPARSE:
            raise TarFormatError(f"{header.path}: sparse members are not supported")
        path = header.path if self._path is None else self._path
        link = header.link if self._link is None else self._link
        size = header.size if self._size_override is None else self._size_override
        self._path = self._link = None
        self._size_override = None
        if kind in _NO_DATA:
            size = 0
        if kind == DIRECTORY:
            path = path.rstrip("/") or path
        self._need(data_offset, size)
        self._next(data_offset + _blocks(size))
        return TarEntry(path, data_offset, size, kind, link)

    def _need(self, offset: int, size: int) -> None:
        if offset + size > self.length:
            raise TarFormatError(
                f"tar archive truncated: a member's {size} bytes at {offset} run past its end "
                f"at {self.length}"
            )

    def _next(self, offset: int) -> None:
        self._offset, self._size = offset, BLOCK
        self._state = _HEADER if offset < self.length else _DONE
        if self._state == _HEADER and offset + BLOCK > self.length:
            raise TarFormatError(
                f"tar archive truncated: {self.length - offset} bytes where a header starts"
            )

    def _take_extended(self, data: bytes | memoryview) -> None:
        kind = self._extended
        if kind == GNU_LONG_NAME:
            self._path = _text(data)
        elif kind == GNU_LONG_LINK:
            self._link = _text(data)
        elif kind == PAX_HEADER:
            records = parse_pax(data)
            if any(keyword.startswith("GNU.sparse.") for keyword in records):
                raise TarFormatError("sparse members (pax GNU.sparse) are not supported")
            if "path" in records:
                self._path = records["path"]
            if "linkpath" in records:
                self._link = records["linkpath"]
            if "size" in records:
                size = records["size"]
                if not (size.isascii() and size.isdigit()):
                    raise TarFormatError(f"pax size {size!r} is not a number")
                self._size_override = int(size)  # for members past the octal field's 8 GiB
        # Pax global headers set defaults that name no member; nothing of ours needs them.


def entries(archive: bytes | memoryview) -> Iterator[TarEntry]:
    """Every member of an archive held in memory, in order."""
    view = memoryview(archive)
    scanner = TarScanner(len(view))
    while (wanted := scanner.wants) is not None:
        offset, size = wanted
        entry = scanner.feed(view[offset : offset + size])
        if entry is not None:
            yield entry
