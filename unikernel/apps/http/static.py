"""A static site from a read-only tar store (block/tar_store.py): the web suite's static
appliance, as Mirage serves a site from its crunch or tar store.

    site = StaticSite(await TarStore.open(await devices.disk("site").block()))
    server = HttpServer(network, site.handle)

GET and HEAD only. A path names a file in the archive (percent-decoded; "/" and a folder's
path serve its index.html); "..", NUL and backslashes are refused. Every file gets a strong
ETag, so a conditional GET (If-None-Match) of an unchanged file is answered 304 without the
body. The headers of each file's response are made once and kept: the archive never changes.
"""

from __future__ import annotations

import zlib

from unikernel.apps.http.messages import Response, text_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.apps.http.messages import Request
    from unikernel.block.tar_store import TarStore

INDEX = "index.html"
CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "htm": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "ico": "image/x-icon",
    "woff2": "font/woff2",
}
DEFAULT_TYPE = "application/octet-stream"
_HEX = "0123456789abcdefABCDEF"


def content_type(key: str) -> str:
    _, dot, extension = key.rpartition(".")
    return CONTENT_TYPES.get(extension.lower(), DEFAULT_TYPE) if dot else DEFAULT_TYPE


def decode_path(path: str) -> str | None:
    """The store key a request path names, percent-decoded (UTF-8); None for a path that
    tries to leave the site or cannot be decoded."""
    if "%" in path:
        raw = bytearray()
        index = 0
        while index < len(path):
            char = path[index]
            if char == "%":
                digits = path[index + 1 : index + 3]
                if len(digits) != 2 or digits[0] not in _HEX or digits[1] not in _HEX:
                    return None
                raw.append(int(digits, 16))
                index += 3
            else:
                raw += char.encode()
                index += 1
        try:
            path = raw.decode()
        except UnicodeDecodeError:
            return None
    if "\0" in path or "\\" in path:
        return None
    parts = [part for part in path.split("/") if part and part != "."]
    if ".." in parts:
        return None
    return "/".join(parts)


class _File:
    """What answering one file takes, made once."""

    __slots__ = ("etag", "headers", "key")

    def __init__(self, key: str, etag: str) -> None:
        self.key = key
        self.etag = etag
        self.headers = [("Content-Type", content_type(key)), ("ETag", etag)]


class StaticSite:
    def __init__(self, store: TarStore, index: str = INDEX) -> None:
        self.store = store
        self.index = index
        self._files: dict[str, _File] = {}  # request path -> its file, once served

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            response = text_response(405)
            response.headers.append(("Allow", "GET, HEAD"))
            return response
        found = self._files.get(request.path)
        if found is None:
            found = await self._find(request.path)
            if found is None:
                return text_response(404, f"no such page: {request.path}")
        if _matches(request.headers.get("if-none-match"), found.etag):
            return Response(304, [("ETag", found.etag)])
        return Response(200, found.headers, await self.store.get(found.key))

    async def _find(self, path: str) -> _File | None:
        key = decode_path(path)
        if key is None:
            return None
        store = self.store
        if key not in store:
            folder_index = f"{key}/{self.index}" if key else self.index
            if folder_index not in store:
                return None
            key = folder_index
        # Strong ETag: the content's CRC and length, as the archive is fixed at build time.
        data = await store.get(key)
        found = _File(key, f'"{len(data):x}-{zlib.crc32(data):08x}"')
        if len(self._files) < 4096:  # bounded: request paths are the client's to invent
            self._files[path] = found
        return found


def _matches(header: str | None, etag: str) -> bool:
    """If-None-Match (RFC 9110 13.1.2): "*", or a list holding the ETag (weakly compared)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))
