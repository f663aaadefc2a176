"""HTTP/1.1 requests and responses as the server's handlers see them (RFC 9110, 9112).

A handler is `async def handle(request: Request) -> Response`: the connection engine
(protocol.py) has parsed the request and read its whole body, within the server's limits; the
response's framing (Content-Length or chunked, Date, Connection, no body for HEAD, 1xx, 204
and 304) is the engine's business, not the handler's.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    Buffer = bytes | bytearray | memoryview
    Handler = Callable[["Request"], Awaitable["Response"]]

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    422: "Unprocessable Content",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class Headers:
    """Header fields in the order received; names compared without case (stored lower-case)."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields = [(name.lower(), value) for name, value in fields]

    @classmethod
    def lowercased(cls, fields: list[tuple[str, str]]) -> Headers:
        """Fields whose names are lower-case already (the engine's): taken as they are."""
        headers = cls.__new__(cls)
        headers._fields = fields
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field's value; several fields of one name joined with ", " (RFC 9110 5.3)."""
        name = name.lower()
        values = [value for key, value in self._fields if key == name]
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self._fields if key == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(key == name.lower() for key, _ in self._fields)

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class Request:
    """One request: `target` as sent ("/a/b?x=1"), `path` its part before "?" (not decoded),
    `query` the part after it, `body` all of the body's bytes (chunked ones joined)."""

    __slots__ = ("body", "headers", "method", "path", "query", "target", "version")

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "1.1",
    ) -> None:
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition("?")
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} HTTP/{self.version}>"


class Response:
    """What a handler returns: status, header fields of its own (not Content-Length,
    Transfer-Encoding, Date or Connection: the engine writes those), and the body, which may be
    a memoryview of a stored file (sent without a copy)."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, headers: Iterable[tuple[str, str]] = (), body: Buffer = b""
    ) -> None:
        self.status = status
        self.headers = list(headers)
        self.body = body

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


def text_response(status: int, text: str = "", content_type: str = "text/plain") -> Response:
    """A short response in UTF-8; the reason phrase when `text` is empty."""
    body = (text or REASONS.get(status, "")).encode() + b"\n"
    return Response(status, [("Content-Type", f"{content_type}; charset=utf-8")], body)
