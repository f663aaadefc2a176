"""The server's side of an HTTP/1.1 connection (RFC 9112, RFC 9110), sans-IO.

ServerConnection is fed what the socket gives (`receive`, b"" at end of file) and hands out
events (`next_event`): a complete Request (head parsed, whole body read and de-chunked),
NEED_DATA, CLOSED, or once a ProtocolFailure when the client sent something we refuse. The
driver answers each Request with `respond` (or `respond_chunked`, `chunk`, `end_chunks`) and
sends the bytes those return. It does no I/O and reads no clock: `now` (monotonic seconds) and
`wall` (time.time() seconds, for the Date field) are passed in, and the driver asks `deadline()`
when to call `timed_out()`.

One request at a time: after next_event() has returned a Request, it returns NEED_DATA until
that request has been answered; pipelined bytes received meanwhile wait in the buffer, so
responses go out in the order of the requests.

What the parser refuses, and with which status (the response says Connection: close, and the
connection is over after it; these responses carry no Date, the engine having no wall clock
then):
- 400: a malformed request line, method, target or header field (no colon, a name that is not
  a token, whitespace before the colon, obs-fold, control characters), a bare CR, an HTTP/1.1
  request without Host or any request with more than one, a bad Content-Length or several that
  differ, Transfer-Encoding together with Content-Length or in an HTTP/1.0 request, chunked
  applied twice, a malformed chunk, more than _MAX_BLANK_LINES empty lines before a request;
- 408: a request not whole `request_timeout` seconds after its first byte (from timed_out);
- 413: a body over `body_bytes` (at once when Content-Length says so);
- 414: a request line over `request_line` bytes because of its target (400 otherwise);
- 431: over `header_bytes` of header fields (trailer fields counted in) or `header_count` fields;
- 501: a transfer coding other than chunked;
- 505: an HTTP version other than 1.x (HTTP/1.2 and later minors are served as 1.1, RFC 9110
  section 2.5).
End of file in the middle of a request closes the connection without a response (there is no
request to answer, and the client is not listening for one).
"""

from __future__ import annotations

import re
import time

from unikernel.apps.http.messages import REASONS, Headers, Request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from unikernel.apps.http.messages import Buffer, Response


class Sentinel:
    """NEED_DATA and CLOSED: unique objects, compared with `is`."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = Sentinel("NEED_DATA")
CLOSED = Sentinel("CLOSED")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_MAX_BLANK_LINES = 8  # RFC 9112 2.2: ignore at least one empty line before a request
_MAX_CHUNK_LINE = 1024  # a chunk's size line with its extensions
_JOIN_MAX = 8192  # bodies up to this size go out joined to the head: one send is cheaper
_NAMES_MAX = 512  # header names remembered as valid (bounded: clients choose the names)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:.")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but HTAB
_CTL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"))
# Request fields the engine acts on; everything else only goes into Request.headers.
_REQUEST_FIELDS = frozenset(("host", "content-length", "transfer-encoding", "connection", "expect"))
# Response fields the engine writes itself, or must know of, when a handler gives them.
_RESPONSE_FIELDS = frozenset(
    ("connection", "content-length", "transfer-encoding", "date", "server")
)

# Valid header names as sent -> lower case: most requests repeat a browser's few dozen names,
# and a dict look-up is cheaper than validating and lowering each again.
_NAMES: dict[str, str] = {}

# States of a connection's cycle.
_READING = 0  # no request with the handler: reading the next one
_HANDLER = 1  # next_event() gave a Request; respond() or respond_chunked() is awaited
_STREAMING = 2  # respond_chunked() was called; chunk() and end_chunks() are awaited

# How a streamed body is framed.
_NO_BODY = 0  # HEAD, 204, 304: chunks are dropped
_CHUNKED = 1
_RAW = 2  # HTTP/1.0: the body runs to the connection's close

# States of a chunked body's reader.
_SIZE = 0
_DATA = 1
_DATA_END = 2
_TRAILER = 3


class Limits:
    """How much a client may send, and how long it may take (seconds)."""

    __slots__ = (
        "body_bytes",
        "header_bytes",
        "header_count",
        "idle_timeout",
        "request_line",
        "request_timeout",
    )

    def __init__(
        self,
        *,
        request_line: int = 8192,
        header_bytes: int = 16384,
        header_count: int = 100,
        body_bytes: int = 1 << 20,
        request_timeout: float = 10.0,
        idle_timeout: float = 15.0,
    ) -> None:
        self.request_line = request_line  # bytes of the request line, without its CRLF
        self.header_bytes = header_bytes  # bytes of the field lines, CRLFs in, blank line out
        self.header_count = header_count
        self.body_bytes = body_bytes
        self.request_timeout = request_timeout  # from a request's first byte to its last
        self.idle_timeout = idle_timeout  # keep-alive, between requests

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Limits({fields})"


class ProtocolFailure:
    """The client sent something we refuse: send `response` (it says Connection: close), then
    close the connection."""

    __slots__ = ("reason", "response", "status")

    def __init__(self, status: int, reason: str, response: bytes) -> None:
        self.status = status
        self.reason = reason
        self.response = response

    def __repr__(self) -> str:
        return f"<ProtocolFailure {self.status} {self.reason!r}>"


if TYPE_CHECKING:
    # What next_event() gives: NEED_DATA and CLOSED are the Sentinels (`object` as the
    # drivers were written against; isinstance() sorts Request and ProtocolFailure out).
    Event = Request | ProtocolFailure | object


class _DateCache:
    """The Date field of the current second, shared by all connections."""

    __slots__ = ("field", "second")

    def __init__(self) -> None:
        self.second = -1
        self.field = ""


_DATE = _DateCache()
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def date_field(wall: float) -> str:
    """The Date field line, "Date: Sun, 06 Nov 1994 08:49:37 GMT\\r\\n" (IMF-fixdate)."""
    second = int(wall)
    if second != _DATE.second:
        t = time.gmtime(second)
        _DATE.field = (
            f"Date: {_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d}"
            f" {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT\r\n"
        )
        _DATE.second = second
    return _DATE.field


_STATUS_LINES: dict[int, str] = {}


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"not an HTTP status: {status!r}")
        line = f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
        _STATUS_LINES[status] = line
    return line


def _tokens(value: str) -> set[str]:
    """The members of a comma-separated list of tokens, in lower case, empty ones left out."""
    value = value.lower()
    if "," not in value:
        return {value.strip(" \t")}
    return {item.strip(" \t") for item in value.split(",")} - {""}


class ServerConnection:
    """One connection's HTTP/1.1 state: see the module's docstring."""

    __slots__ = (
        "_blanks",
        "_body",
        "_body_len",
        "_buf",
        "_chunk_left",
        "_chunk_state",
        "_closed",
        "_cycle",
        "_eof",
        "_expect",
        "_failure",
        "_fields",
        "_head",
        "_head_bytes",
        "_idle_since",
        "_keep",
        "_length",
        "_limits",
        "_method",
        "_now",
        "_persistent",
        "_pos",
        "_req_head",
        "_req_old",
        "_scan",
        "_server",
        "_start",
        "_stream",
        "_target",
        "_trailer_bytes",
        "_trailer_count",
        "_version",
    )

    def __init__(
        self, limits: Limits | None = None, *, server: str = "unibench", now: float = 0.0
    ) -> None:
        if not server.isprintable() or not server.isascii():
            raise ValueError(f"not a Server field value: {server!r}")
        self._limits = limits if limits is not None else Limits()
        self._server = f"Server: {server}\r\n" if server else ""
        self._buf = bytearray()
        self._pos = 0  # the first byte of _buf not parsed yet
        self._scan = 0  # where to go on looking for the end of the head
        self._blanks = 0  # empty lines skipped before the current request
        self._cycle = _READING
        self._closed = False  # next_event() says CLOSED
        self._eof = False  # the peer closed its side
        self._failure: ProtocolFailure | None = None  # for next_event() to give
        self._now = now  # the latest `now` given
        self._start = now  # when the request being read began
        self._idle_since = now  # when the connection last became idle
        self._keep = True  # whether the last response kept the connection open
        # The request being read (once `_head`) or with the handler.
        self._head = False
        self._method = ""
        self._target = ""
        self._version = "1.1"
        self._fields: list[tuple[str, str]] = []
        self._length = 0  # of the body; -1 for chunked
        self._persistent = True
        self._expect = False  # it asked for 100 Continue, not answered yet
        self._head_bytes = 0  # of its header fields
        self._req_head = False  # the request with the handler is a HEAD
        self._req_old = False  # ... is HTTP/1.0
        # A chunked body being read.
        self._chunk_state = _SIZE
        self._chunk_left = 0
        self._body = bytearray()
        self._body_len = 0
        self._trailer_bytes = 0
        self._trailer_count = 0
        self._stream = _NO_BODY  # how respond_chunked() frames the body

    # Input.

    def receive(self, data: Buffer, now: float) -> bytes:
        """Takes bytes from the socket (b"": the peer closed its side); returns bytes to send
        at once: b"", or CONTINUE when a request with "Expect: 100-continue" has its head here
        and none of its body."""
        self._now = now
        if self._closed or self._failure is not None:
            return b""
        if not data:
            self._eof = True
            return b""
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            if pos:
                buf.clear()
                self._pos = self._scan = 0
            if self._cycle == _READING and not self._head:
                self._start = now  # a request's first byte
        elif pos > 65536:
            del buf[:pos]  # CPython moves the start of a bytearray without copying
            self._pos = 0
            self._scan = max(0, self._scan - pos)
        buf += data
        if self._cycle != _READING or self._head:
            return b""
        self._parse_head()
        return self._continue_once() if self._head else b""

    def next_event(self) -> Event:
        """The next Request, NEED_DATA, CLOSED, or a ProtocolFailure (once; CLOSED after it).
        NEED_DATA also while a request is with the handler, until it has been answered."""
        if self._closed:
            return CLOSED
        failure = self._failure
        if failure is not None:
            self._fail_over()
            return failure
        if self._cycle != _READING:
            return NEED_DATA
        if not self._head:
            self._parse_head()
            if not self._head:
                return self._starved()
        length = self._length
        if length == 0:
            body = b""
        elif length > 0:
            buf = self._buf
            pos = self._pos
            end = pos + length
            if len(buf) < end:
                return self._starved()
            body = bytes(buf[pos:end])
            self._pos = end
        else:
            chunked = self._read_chunked()
            if chunked is None:
                return self._starved()
            body = chunked
        headers = Headers.lowercased(self._fields)
        request = Request(self._method, self._target, headers, body, self._version)
        self._cycle = _HANDLER
        self._head = False
        self._req_head = self._method == "HEAD"
        self._req_old = self._version == "1.0"
        return request

    def _starved(self) -> Event:
        failure = self._failure
        if failure is not None:
            self._fail_over()
            return failure
        if self._eof:  # nothing more will come: a partial request goes unanswered
            self._close()
            return CLOSED
        return NEED_DATA

    # Output.

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the current (or the last) response."""
        if self._closed:
            return False
        if self._cycle == _READING:
            return self._keep
        return self._persistent and not (self._eof and self._pos >= len(self._buf))

    def respond(
        self,
        response: Response,
        wall: float,
        *,
        close: bool = False,
        now: float | None = None,
    ) -> list[bytes | memoryview]:
        """The bytes of the response to the request next_event() gave last. `close` (or the
        handler's "Connection: close") closes the connection after it. `now` (monotonic) is
        when it is sent, for the idle deadline; the latest `now` given when None.

        With close=True, a connection with no request to answer may be sent a response all
        the same (a 503 to a client refused at once); it is then over."""
        if self._cycle != _HANDLER:
            if not close or self._cycle != _READING or self._closed:
                raise RuntimeError("no request is waiting for a response")
            self._req_head = self._req_old = False
        status = response.status
        if status < 200:
            raise ValueError(f"{status} is not a final status")
        body = response.body
        keep = self.keep_alive and not close
        fields, close, given_length = self._handler_fields(response.headers, wall)
        if close:
            keep = False
        no_body = self._req_head or status == 204 or status == 304
        if status == 204:
            length = ""
        elif no_body and given_length is not None:
            length = f"Content-Length: {given_length}\r\n"
        elif status == 304 and not len(body):
            length = ""  # a 304's length is the 200's; Content-Length: 0 would be wrong
        else:
            length = f"Content-Length: {len(body)}\r\n"
        head = self._head_for(status, fields, length, keep)
        after = self._finish(keep, now)
        out: list[bytes | memoryview]
        if no_body or not len(body):
            out = [head]
        elif len(body) <= _JOIN_MAX:
            out = [head + body]
        else:
            out = [head, body if isinstance(body, bytes | memoryview) else bytes(body)]
        if after:
            out.append(after)
        return out

    def respond_chunked(
        self, status: int, headers: Iterable[tuple[str, str]], wall: float
    ) -> bytes:
        """The head of a response whose body follows in chunk() calls and ends with
        end_chunks(): chunked for HTTP/1.1, delimited by the connection's close for HTTP/1.0;
        no body at all for HEAD, 204 and 304."""
        if self._cycle != _HANDLER:
            raise RuntimeError("no request is waiting for a response")
        if status < 200:
            raise ValueError(f"{status} is not a final status")
        keep = self.keep_alive
        fields, close, _ = self._handler_fields(headers, wall)
        if close:
            keep = False
        framing = ""
        if status == 204 or status == 304:
            self._stream = _NO_BODY
        elif self._req_old:
            if self._req_head:
                self._stream = _NO_BODY
            else:
                self._stream = _RAW
                keep = False
        else:
            framing = "Transfer-Encoding: chunked\r\n"  # for HEAD too: the GET's fields
            self._stream = _NO_BODY if self._req_head else _CHUNKED
        self._persistent = keep
        self._cycle = _STREAMING
        return self._head_for(status, fields, framing, keep)

    def chunk(self, data: Buffer) -> list[bytes | memoryview]:
        """The bytes that carry `data` as part of the streamed body (nothing for b"")."""
        if self._cycle != _STREAMING:
            raise RuntimeError("respond_chunked() has not been called")
        size = len(data)
        if not size or self._stream == _NO_BODY:
            return []
        if self._stream == _RAW:
            return [data if isinstance(data, bytes | memoryview) else bytes(data)]
        if size <= _JOIN_MAX:
            return [b"".join((b"%x\r\n" % size, data, b"\r\n"))]
        return [
            b"%x\r\n" % size,
            data if isinstance(data, bytes | memoryview) else bytes(data),
            b"\r\n",
        ]

    def end_chunks(self, *, now: float | None = None) -> bytes:
        """The end of the streamed body; the response is then complete, as after respond()."""
        if self._cycle != _STREAMING:
            raise RuntimeError("respond_chunked() has not been called")
        tail = b"0\r\n\r\n" if self._stream == _CHUNKED else b""
        keep = self._persistent and self._stream != _RAW
        if self._eof and self._pos >= len(self._buf):
            keep = False
        return tail + self._finish(keep, now)

    def _handler_fields(
        self, headers: Iterable[tuple[str, str]], wall: float
    ) -> tuple[str, bool, str | None]:
        """The handler's fields as lines, then Date and Server unless it gave them; whether
        they ask for close; the Content-Length they give."""
        lines = []
        close = False
        given_length = None
        date = True
        server = True
        for name, value in headers:
            lname = name.lower()
            if lname in _RESPONSE_FIELDS:
                if lname == "connection":
                    close = close or "close" in _tokens(value)
                    continue  # the engine writes its own
                if lname == "content-length":
                    if not (value.isascii() and value.isdigit()):
                        raise ValueError(f"bad Content-Length: {value!r}")
                    given_length = value
                    continue
                if lname == "transfer-encoding":
                    continue
                if lname == "date":
                    date = False
                else:
                    server = False
            lines.append(f"{name}: {value}\r\n")
        if date:
            lines.append(date_field(wall))
        if server and self._server:
            lines.append(self._server)
        fields = "".join(lines)
        if fields.count("\n") != len(lines) or fields.count("\r") != len(lines):
            raise ValueError("CR or LF in a response header field")
        return fields, close, given_length

    def _head_for(self, status: int, fields: str, framing: str, keep: bool) -> bytes:
        if keep:
            connection = "Connection: keep-alive\r\n" if self._req_old else ""
        else:
            connection = "Connection: close\r\n"
        return (_status_line(status) + fields + framing + connection + "\r\n").encode("latin-1")

    def _finish(self, keep: bool, now: float | None) -> bytes:
        """Ends the cycle of the request just answered; returns CONTINUE when the next request,
        already here, asks for it."""
        t = self._now if now is None else now
        self._cycle = _READING
        self._keep = keep
        self._idle_since = t
        if not keep:
            self._close()
            return b""
        if self._pos >= len(self._buf):
            return b""
        self._start = t  # a pipelined request: it is being read from now on
        self._parse_head()
        return self._continue_once() if self._head else b""

    def _close(self) -> None:
        self._closed = True
        self._head = False
        self._buf = bytearray()
        self._body = bytearray()
        self._pos = 0

    def _fail_over(self) -> None:
        self._failure = None
        self._close()

    # Timeouts.

    def deadline(self) -> float | None:
        """When timed_out() is to be called: the request being read started plus
        request_timeout; or, idle, the last response's end (or the connection's start) plus
        idle_timeout. None while a request is with the handler, at end of file or once closed."""
        if self._closed or self._failure is not None or self._eof or self._cycle != _READING:
            return None
        if self._head or self._pos < len(self._buf):
            return self._start + self._limits.request_timeout
        return self._idle_since + self._limits.idle_timeout

    def timed_out(self, now: float) -> bytes | None:
        """None if `now` is before deadline(); else closes the connection and returns what to
        send before closing it: a 408 response for a partly received request, b"" when idle."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        partial = self._head or self._pos < len(self._buf)
        self._close()
        if partial:
            return self._error_response(408, "the request took too long to arrive")
        return b""

    # Parsing.

    def _fail(self, status: int, reason: str) -> None:
        self._failure = ProtocolFailure(status, reason, self._error_response(status, reason))
        self._head = False

    def _error_response(self, status: int, reason: str) -> bytes:
        body = reason.encode("latin-1", "replace") + b"\n"
        return (
            f"{_status_line(status)}Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n{self._server}Connection: close\r\n\r\n"
        ).encode("latin-1") + body

    def _continue_once(self) -> bytes:
        """CONTINUE if the request just parsed asked for it and none of its body is here."""
        if self._expect:
            self._expect = False
            if self._failure is None and self._length and self._pos == len(self._buf):
                return CONTINUE
        return b""

    def _parse_head(self) -> None:
        """Parses the next request's head if it is all here: sets `_head`, or `_failure`."""
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if pos >= size:
            return
        first = buf[pos]
        if first == 13 or first == 10:  # empty lines before the request line
            while pos < size:
                if buf[pos] == 10:
                    pos += 1
                elif buf[pos] == 13 and pos + 1 < size and buf[pos + 1] == 10:
                    pos += 2
                else:
                    break
                self._blanks += 1
                if self._blanks > _MAX_BLANK_LINES:
                    self._fail(400, "too many empty lines before the request line")
                    return
            self._pos = pos
            if pos >= size:
                return
        scan = self._scan if self._scan > pos else pos
        # The head ends with an empty line: CRLF, or a bare LF (RFC 9112 2.2).
        end = buf.find(b"\n\r\n", scan)
        bare = buf.find(b"\n\n", scan, end + 1 if end >= 0 else size)
        if bare >= 0:
            stop = bare + 1
            after = bare + 2
        elif end >= 0:
            stop = end + 1
            after = end + 3
        else:
            self._scan = max(pos, size - 2)
            self._check_partial_head(pos, size)
            return
        self._scan = 0
        limits = self._limits
        text = buf[pos:stop].decode("latin-1")
        self._pos = after
        lines = text.split("\r\n")
        if len(lines) != text.count("\n") + 1:  # some lines end with a bare LF
            lines = [line[:-1] if line[-1:] == "\r" else line for line in text.split("\n")]
        lines.pop()  # what follows the last line's end: ""

        line = lines[0]
        if len(line) > limits.request_line:
            self._line_too_long(line, True)
            return
        parts = line.split(" ")
        if len(parts) != 3:
            self._fail(400, "malformed request line")
            return
        method, target, version = parts
        if method not in _METHODS and not _TOKEN.fullmatch(method):
            self._fail(400, "malformed method")
            return
        if version == "HTTP/1.1":
            version = "1.1"
        elif version == "HTTP/1.0":
            version = "1.0"
        else:
            match = _VERSION.fullmatch(version)
            if match is None:
                self._fail(400, "malformed HTTP version")
                return
            if match[1] != "1":
                self._fail(505, f"HTTP/{match[1]}.{match[2]} is not served")
                return
            version = "1.1"  # a later HTTP/1.x: served as the highest minor version we know
        if not target or not (target.isascii() and target.isprintable()):
            self._fail(400, "malformed request target")
            return
        if target[0] != "/":
            if target == "*":
                if method != "OPTIONS":
                    self._fail(400, "the target * is for OPTIONS only")
                    return
            elif not _ABSOLUTE.match(target):
                self._fail(400, "malformed request target")
                return

        count = len(lines) - 1
        head_bytes = len(text) - len(line) - (2 if text[len(line)] == "\r" else 1)
        if count > limits.header_count:
            self._fail(431, f"more than {limits.header_count} header fields")
            return
        if head_bytes > limits.header_bytes:
            self._fail(431, f"more than {limits.header_bytes} bytes of header fields")
            return
        fields = []
        names = _NAMES
        hosts = 0
        lengths: list[str] | None = None
        codings: list[str] | None = None
        connection: list[str] | None = None
        expect: list[str] | None = None
        for index in range(1, count + 1):
            name, colon, value = lines[index].partition(":")
            lname = names.get(name)
            if lname is None or not colon:
                if not colon or not _TOKEN.fullmatch(name):
                    self._fail(400, _field_problem(lines[index]))
                    return
                lname = name.lower()
                if len(names) < _NAMES_MAX:
                    names[name] = lname
            value = value.strip(" \t")
            if not value.isprintable() and _CTL.search(value):
                self._fail(400, "a control character in a header field value")
                return
            fields.append((lname, value))
            if lname in _REQUEST_FIELDS:
                if lname == "host":
                    hosts += 1
                elif lname == "content-length":
                    lengths = [*lengths, value] if lengths else [value]
                elif lname == "transfer-encoding":
                    codings = [*codings, value] if codings else [value]
                elif lname == "connection":
                    connection = [*connection, value] if connection else [value]
                else:
                    expect = [*expect, value] if expect else [value]

        if hosts != 1 and (hosts or version == "1.1"):
            self._fail(400, "no Host field" if not hosts else "more than one Host field")
            return
        length = 0
        if codings is not None:
            if version == "1.0":
                self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
                return
            if lengths is not None:
                self._fail(400, "both Transfer-Encoding and Content-Length")
                return
            chunked = 0
            for item in ",".join(codings).split(","):
                coding = item.partition(";")[0].strip(" \t").lower()
                if coding == "chunked":
                    chunked += 1
                elif coding or item.strip(" \t"):
                    self._fail(501, f"transfer coding {coding!r} is not implemented")
                    return
            if chunked != 1:
                self._fail(400, "malformed Transfer-Encoding")
                return
            length = -1
        elif lengths is not None:
            values = [item.strip(" \t") for item in ",".join(lengths).split(",")]
            for item in values:
                if not (item.isascii() and item.isdigit()):
                    self._fail(400, "malformed Content-Length")
                    return
            digits = values[0].lstrip("0")
            if len(values) > 1 and any(item.lstrip("0") != digits for item in values):
                self._fail(400, "Content-Length values that differ")
                return
            if len(digits) > 18 or int(digits or "0") > limits.body_bytes:
                self._fail(413, f"a body of more than {limits.body_bytes} bytes")
                return
            length = int(digits or "0")

        persistent = version == "1.1"
        if connection is not None:
            tokens = _tokens(",".join(connection))
            if "close" in tokens:
                persistent = False
            elif "keep-alive" in tokens:
                persistent = True
        self._expect = (
            expect is not None and version == "1.1" and "100-continue" in _tokens(",".join(expect))
        )
        self._method = method
        self._target = target
        self._version = version
        self._fields = fields
        self._length = length
        self._persistent = persistent
        self._head_bytes = head_bytes
        self._blanks = 0
        if length < 0:
            self._chunk_state = _SIZE
            self._body_len = self._trailer_bytes = self._trailer_count = 0
        self._head = True

    def _check_partial_head(self, pos: int, size: int) -> None:
        """Refuses a head not yet whole that is already over a limit."""
        limits = self._limits
        lf = self._buf.find(b"\n", pos, pos + limits.request_line + 2)
        if lf < 0:
            if size - pos > limits.request_line + 1:
                line = self._buf[pos : pos + limits.request_line + 2].decode("latin-1")
                self._line_too_long(line, False)
            return
        line_length = lf - pos - (1 if lf > pos and self._buf[lf - 1] == 13 else 0)
        if line_length > limits.request_line:
            self._line_too_long(self._buf[pos:lf].decode("latin-1"), True)
        elif size - lf - 1 >= limits.header_bytes + 2:
            self._fail(431, f"more than {limits.header_bytes} bytes of header fields")
        elif self._buf.count(b"\n", lf + 1, size) > limits.header_count:
            self._fail(431, f"more than {limits.header_count} header fields")

    def _line_too_long(self, line: str, complete: bool) -> None:
        """414 if the target is what makes the request line too long, else 400."""
        method, space, rest = line.partition(" ")
        if complete:
            rest, space, version = rest.rstrip("\r").rpartition(" ")
            sane_end = bool(space) and len(version) <= 8
        else:  # the version may have begun: it is not as long as that
            _, space_after, version = rest.partition(" ")
            sane_end = not space_after or len(version.rstrip("\r")) <= 8
        if (
            space
            and sane_end
            and len(method) <= 32
            and _TOKEN.fullmatch(method)
            and (rest[:1] == "/" or _ABSOLUTE.match(rest))
        ):
            self._fail(414, f"a request target of more than {self._limits.request_line} bytes")
        else:
            self._fail(400, f"a request line of more than {self._limits.request_line} bytes")

    def _read_chunked(self) -> bytes | None:
        """Reads on in a chunked body: the whole body, or None (more is needed, or a failure
        was set)."""
        buf = self._buf
        pos = self._pos
        size = len(buf)
        state = self._chunk_state
        limits = self._limits
        done = False
        while not done:
            if state == _SIZE:
                lf = buf.find(b"\n", pos, pos + _MAX_CHUNK_LINE + 1)
                if lf < 0:
                    if size - pos > _MAX_CHUNK_LINE:
                        self._fail(400, "a chunk size line too long")
                    break
                line = bytes(buf[pos : lf - 1 if lf > pos and buf[lf - 1] == 13 else lf])
                size_text, semicolon, extensions = line.partition(b";")
                if semicolon:
                    size_text = size_text.rstrip(b" \t")
                    if _CTL_BYTES.search(extensions):
                        self._fail(400, "a control character in a chunk extension")
                        break
                if not _HEX.fullmatch(size_text):
                    self._fail(400, "malformed chunk size")
                    break
                chunk_size = int(size_text, 16)
                pos = lf + 1
                if not chunk_size:
                    state = _TRAILER
                elif self._body_len + chunk_size > limits.body_bytes:
                    self._fail(413, f"a body of more than {limits.body_bytes} bytes")
                    break
                else:
                    self._body_len += chunk_size
                    self._chunk_left = chunk_size
                    state = _DATA
            elif state == _DATA:
                take = min(self._chunk_left, size - pos)
                if take <= 0:
                    break
                self._body += buf[pos : pos + take]
                pos += take
                self._chunk_left -= take
                if self._chunk_left:
                    break
                state = _DATA_END
            elif state == _DATA_END:
                if buf.startswith(b"\r\n", pos):
                    pos += 2
                elif buf.startswith(b"\n", pos):
                    pos += 1
                elif pos == size or (pos + 1 == size and buf[pos] == 13):
                    break
                else:
                    self._fail(400, "chunk data not followed by CRLF")
                    break
                state = _SIZE
            else:  # trailer fields, up to an empty line
                room = limits.header_bytes - self._head_bytes - self._trailer_bytes
                lf = buf.find(b"\n", pos, pos + max(room, 0) + 2)
                if lf < 0:
                    if size - pos > room + 1:
                        self._fail(431, f"more than {limits.header_bytes} bytes of header fields")
                    break
                line = bytes(buf[pos : lf - 1 if lf > pos and buf[lf - 1] == 13 else lf])
                if not line:
                    pos = lf + 1
                    done = True
                    break
                self._trailer_bytes += lf + 1 - pos
                self._trailer_count += 1
                pos = lf + 1
                if self._head_bytes + self._trailer_bytes > limits.header_bytes:
                    self._fail(431, f"more than {limits.header_bytes} bytes of header fields")
                    break
                if len(self._fields) + self._trailer_count > limits.header_count:
                    self._fail(431, f"more than {limits.header_count} header fields")
                    break
                text = line.decode("latin-1")
                name, colon, value = text.partition(":")
                if not colon or not _TOKEN.fullmatch(name):
                    self._fail(400, _field_problem(text))
                    break
                if _CTL.search(value.strip(" \t")):
                    self._fail(400, "a control character in a trailer field value")
                    break
        self._pos = pos
        self._chunk_state = state
        if not done:
            return None
        body = bytes(self._body)
        self._body = bytearray()
        return body


def _field_problem(line: str) -> str:
    """Why a header field line is malformed (for a refusal's reason)."""
    if line[:1] in (" ", "\t"):
        return "obs-fold: a field line continued on the next"
    name, colon, _ = line.partition(":")
    if not colon:
        return "a header field line without a colon"
    if name != name.rstrip(" \t"):
        return "whitespace before a header field's colon"
    return "malformed header field name"
