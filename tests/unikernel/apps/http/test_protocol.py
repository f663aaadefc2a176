"""protocol.py: the HTTP/1.1 server connection engine, fed bytes as a client would send them."""

from __future__ import annotations

import http.client
import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unikernel.apps.http.messages import Request, Response, text_response
from unikernel.apps.http.protocol import (
    CLOSED,
    CONTINUE,
    NEED_DATA,
    Limits,
    ProtocolFailure,
    ServerConnection,
    date_field,
)

WALL = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
GET = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n\r\n"
BROWSER_GET = (
    b"GET /static/css/site.css?v=3 HTTP/1.1\r\n"
    b"Host: bench.example.test\r\n"
    b"Connection: keep-alive\r\n"
    b'sec-ch-ua: "Chromium";v="124", "Not-A.Brand";v="99"\r\n'
    b"sec-ch-ua-mobile: ?0\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0.0.0 Safari/537.36\r\n"
    b'sec-ch-ua-platform: "Linux"\r\n'
    b"Accept: text/css,*/*;q=0.1\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-Mode: no-cors\r\n"
    b"Sec-Fetch-Dest: style\r\n"
    b"Referer: http://bench.example.test/\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-GB,en;q=0.9\r\n"
    b'If-None-Match: "5f2b-17a"\r\n'
    b"\r\n"
)


def events(conn: ServerConnection) -> list[object]:
    """Events up to the first NEED_DATA or CLOSED (included), answering nothing."""
    out: list[object] = []
    while True:
        event = conn.next_event()
        out.append(event)
        if event is NEED_DATA or event is CLOSED or isinstance(event, ProtocolFailure):
            return out
        if isinstance(event, Request):
            return out


def serve(
    pieces: list[bytes],
    response: Response | None = None,
    limits: Limits | None = None,
    eof: bool = True,
) -> tuple[list[Request], list[ProtocolFailure], bytes]:
    """Feeds `pieces` one after the other, answering each request with `response`; then end
    of file. Returns the requests, the failures, and all the bytes sent."""
    conn = ServerConnection(limits)
    requests: list[Request] = []
    failures: list[ProtocolFailure] = []
    sent = bytearray()
    for piece in [*pieces, b""] if eof else pieces:
        sent += conn.receive(piece, 0.0)
        while True:
            event = conn.next_event()
            if isinstance(event, Request):
                requests.append(event)
                answer = response or text_response(200, "ok")
                for part in conn.respond(answer, WALL):
                    sent += part
            elif isinstance(event, ProtocolFailure):
                failures.append(event)
                sent += event.response
            else:
                break
        if event is CLOSED:
            break
    return requests, failures, bytes(sent)


def one_failure(data: bytes, limits: Limits | None = None) -> ProtocolFailure:
    conn = ServerConnection(limits)
    conn.receive(data, 0.0)
    event = conn.next_event()
    assert isinstance(event, ProtocolFailure), event
    assert conn.next_event() is CLOSED
    assert conn.next_event() is CLOSED
    assert conn.receive(b"more", 1.0) == b""
    assert conn.next_event() is CLOSED
    return event


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


class Unclosable(io.BytesIO):
    def close(self) -> None:  # each response "closes" the socket's file when read
        pass


class FakeSocket:
    def __init__(self, data: bytes) -> None:
        self._file = Unclosable(data)

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BytesIO:
        return self._file


def parse_responses(data: bytes, methods: list[str]) -> list[http.client.HTTPResponse]:
    """The responses in `data`, read by the standard library's client, bodies read."""
    sock = FakeSocket(data)
    out = []
    for method in methods:
        response = http.client.HTTPResponse(sock, method=method)  # type: ignore[arg-type]
        response.begin()
        response.body = response.read()  # type: ignore[attr-defined]
        out.append(response)
    return out


def single(pieces: list[bytes | memoryview]) -> bytes:
    """The one piece of a response sent joined."""
    (piece,) = pieces
    assert isinstance(piece, bytes)
    return piece


def split_head(data: bytes) -> tuple[list[str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), body


# A simple request, and keeping the connection.


def test_a_simple_get() -> None:
    conn = ServerConnection(now=0.0)
    assert conn.receive(GET, 1.0) == b""
    request = conn.next_event()
    assert isinstance(request, Request)
    assert (request.method, request.target, request.version) == ("GET", "/index.html", "1.1")
    assert request.path == "/index.html" and request.query == ""
    assert request.headers.items() == [("host", "example.test"), ("accept", "*/*")]
    assert request.body == b""
    assert conn.next_event() is NEED_DATA  # with the handler
    assert conn.deadline() is None
    assert conn.keep_alive
    sent = single(conn.respond(text_response(200, "hello"), WALL))
    assert isinstance(sent, bytes)
    lines, body = split_head(sent)
    assert lines == [
        "HTTP/1.1 200 OK",
        "Content-Type: text/plain; charset=utf-8",
        "Date: Sun, 06 Nov 1994 08:49:37 GMT",
        "Server: unibench",
        "Content-Length: 6",
    ]
    assert body == b"hello\n"
    assert conn.next_event() is NEED_DATA
    assert conn.keep_alive
    conn.receive(b"", 2.0)
    assert conn.next_event() is CLOSED


def test_date_is_an_imf_fixdate_cached_per_second() -> None:
    assert date_field(WALL) == "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
    assert date_field(WALL + 0.999) is date_field(WALL)
    assert date_field(0.0) == "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"


def test_keep_alive_several_requests_one_after_the_other() -> None:
    conn = ServerConnection()
    for number in range(5):
        conn.receive(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % number, float(number))
        request = conn.next_event()
        assert isinstance(request, Request) and request.target == f"/{number}"
        sent = single(conn.respond(text_response(200), WALL))
        assert b"Connection" not in sent
        assert conn.next_event() is NEED_DATA
    assert conn.keep_alive


def test_pipelined_requests_are_answered_in_order() -> None:
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % n for n in range(4))
    conn = ServerConnection()
    conn.receive(data, 0.0)
    first = conn.next_event()
    assert isinstance(first, Request) and first.target == "/0"
    # The others wait until the first is answered.
    assert conn.next_event() is NEED_DATA
    assert conn.next_event() is NEED_DATA
    conn.respond(text_response(200, "0"), WALL)
    targets = []
    for n in range(1, 4):
        request = conn.next_event()
        assert isinstance(request, Request)
        targets.append(request.target)
        conn.respond(text_response(200, str(n)), WALL)
    assert targets == ["/1", "/2", "/3"]
    assert conn.next_event() is NEED_DATA

    requests, failures, sent = serve([data])
    assert [r.target for r in requests] == ["/0", "/1", "/2", "/3"]
    assert not failures
    bodies = [r.body for r in parse_responses(sent, ["GET"] * 4)]  # type: ignore[attr-defined]
    assert bodies == [b"ok\n"] * 4


def test_pipelined_requests_then_end_of_file_are_all_answered() -> None:
    conn = ServerConnection()
    conn.receive(GET + GET, 0.0)
    conn.receive(b"", 0.0)
    sent = []
    while isinstance(request := conn.next_event(), Request):
        sent.append(b"".join(conn.respond(text_response(200), WALL)))
    assert request is CLOSED
    # Only the last response says close: nothing more can come after it.
    assert [b"Connection: close" in response for response in sent] == [False, True]


def request_summary(request: Request) -> tuple[str, str, str, list[tuple[str, str]], bytes]:
    return (
        request.method,
        request.target,
        request.version,
        request.headers.items(),
        request.body,
    )


def test_bytes_one_at_a_time_give_the_same_requests() -> None:
    data = (
        b"\r\n"
        + GET
        + b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
        + b"PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
        + BROWSER_GET
    )
    whole, _, sent_whole = serve([data])
    split, _, sent_split = serve(bytewise(data))
    assert len(whole) == 4
    assert [request_summary(r) for r in whole] == [request_summary(r) for r in split]
    assert sent_whole == sent_split
    assert whole[1].body == b"hello world"
    assert whole[2].body == b"hello world"


# Bodies.


def test_content_length_body() -> None:
    conn = ServerConnection()
    conn.receive(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234", 0.0)
    assert conn.next_event() is NEED_DATA
    assert conn.deadline() == 10.0  # a request partly here
    conn.receive(b"56789GET", 1.0)
    request = conn.next_event()
    assert isinstance(request, Request) and request.body == b"0123456789"
    conn.respond(text_response(200), WALL)
    assert conn.next_event() is NEED_DATA  # "GET" waits for more


def test_content_length_zero_and_repeated_equal_values() -> None:
    (request,), _, _ = serve([b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"])
    assert request.body == b""
    data = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 03\r\n\r\nabc"
    (request,), _, _ = serve([data])
    assert request.body == b"abc"
    (request,), _, _ = serve([b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc"])
    assert request.body == b"abc"


def test_chunked_body_with_extensions_and_trailers() -> None:
    refused = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip-not, chunked\r\n\r\n"
    assert one_failure(refused).status == 501
    data = (
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"4 ; ext=1;other\r\nWiki\r\n"
        b"5\r\npedia\r\n"
        b'E;quoted="a b"\r\n in\r\n\r\nchunks.\r\n'
        b"0;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    requests, failures, _ = serve([data])
    assert not failures
    assert requests[0].body == b"Wikipedia in\r\n\r\nchunks."
    assert "expires" not in requests[0].headers  # trailers are dropped
    assert requests[1].target == "/after"


def test_chunked_body_with_bare_lf_line_ends() -> None:
    data = b"POST / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n"
    (request,), failures, _ = serve([data])
    assert not failures and request.body == b"abc"


# Responses without bodies, and the Content-Length of HEAD.


def test_head_has_the_gets_length_and_no_body() -> None:
    conn = ServerConnection()
    conn.receive(b"HEAD /f HTTP/1.1\r\nHost: h\r\n\r\n" + GET, 0.0)
    assert isinstance(conn.next_event(), Request)
    sent = single(conn.respond(Response(200, [("Content-Type", "text/html")], b"x" * 1234), WALL))
    lines, body = split_head(sent)
    assert "Content-Length: 1234" in lines and body == b""
    # The next request is parsed right after: no body bytes were taken for the HEAD.
    request = conn.next_event()
    assert isinstance(request, Request) and request.method == "GET"
    # A handler giving the length itself for HEAD, and no body.
    conn = ServerConnection()
    conn.receive(b"HEAD /f HTTP/1.1\r\nHost: h\r\n\r\n", 0.0)
    conn.next_event()
    sent = single(conn.respond(Response(200, [("Content-Length", "99")]), WALL))
    assert sent.count(b"Content-Length") == 1 and b"Content-Length: 99\r\n" in sent
    (response,) = parse_responses(sent, ["HEAD"])
    assert response.getheader("Content-Length") == "99"
    assert response.body == b""  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "length"), [(204, None), (304, None), (304, "5")], ids=["204", "304", "304-body"]
)
def test_204_and_304_have_no_body(status: int, length: str | None) -> None:
    conn = ServerConnection()
    conn.receive(GET + GET, 0.0)
    conn.next_event()
    body = b"hello" if length else b""
    sent = b"".join(conn.respond(Response(status, [("ETag", '"1"')], body), WALL))
    lines, rest = split_head(sent)
    assert rest == b""
    got = [line.split(": ")[1] for line in lines if line.startswith("Content-Length")]
    assert got == ([length] if length else [])
    assert isinstance(conn.next_event(), Request)


def test_handler_fields_for_framing_are_the_engines() -> None:
    conn = ServerConnection(server="")
    conn.receive(GET, 0.0)
    conn.next_event()
    response = Response(
        200,
        [
            ("Content-Length", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Date", "Mon, 07 Nov 1994 08:49:37 GMT"),
            ("X-Other", "1"),
        ],
        b"body",
    )
    sent = single(conn.respond(response, WALL))
    lines, body = split_head(sent)
    assert lines == [
        "HTTP/1.1 200 OK",
        "Date: Mon, 07 Nov 1994 08:49:37 GMT",
        "X-Other: 1",
        "Content-Length: 4",
    ]
    assert body == b"body"


def test_response_fields_with_cr_or_lf_are_refused() -> None:
    conn = ServerConnection()
    conn.receive(GET, 0.0)
    conn.next_event()
    with pytest.raises(ValueError):
        conn.respond(Response(200, [("Location", "/a\r\nSet-Cookie: x=1")]), WALL)
    with pytest.raises(ValueError):
        conn.respond(Response(101), WALL)
    # Still waiting for a proper response.
    sent = single(conn.respond(Response(302, [("Location", "/a")]), WALL))
    assert sent.startswith(b"HTTP/1.1 302 Found\r\n")


def test_unknown_status_reason() -> None:
    conn = ServerConnection()
    conn.receive(GET, 0.0)
    conn.next_event()
    sent = single(conn.respond(Response(299), WALL))
    assert sent.startswith(b"HTTP/1.1 299 Unknown\r\n")


def test_respond_without_a_request_is_an_error_unless_a_refusal() -> None:
    conn = ServerConnection()
    with pytest.raises(RuntimeError):
        conn.respond(text_response(200), WALL)
    sent = single(conn.respond(text_response(503, "busy"), WALL, close=True))
    (response,) = parse_responses(sent, ["GET"])
    assert response.status == 503 and response.getheader("Connection") == "close"
    assert conn.next_event() is CLOSED
    with pytest.raises(RuntimeError):
        conn.respond(text_response(503), WALL, close=True)


def test_a_large_body_is_not_copied() -> None:
    body = memoryview(bytearray(10 * 1024 * 1024))
    conn = ServerConnection()
    conn.receive(GET, 0.0)
    conn.next_event()
    head, sent_body = conn.respond(Response(200, [("Content-Type", "x/y")], body), WALL)
    assert sent_body is body
    assert b"Content-Length: 10485760\r\n" in bytes(head)
    # A small one goes out joined to the head, in one piece.
    conn.next_event()
    conn.receive(GET, 0.0)
    conn.next_event()
    sent = single(conn.respond(Response(200, [], memoryview(b"small")), WALL))
    assert isinstance(sent, bytes) and sent.endswith(b"\r\n\r\nsmall")


# Persistence.


def test_http_10_closes_unless_keep_alive() -> None:
    conn = ServerConnection()
    conn.receive(b"GET / HTTP/1.0\r\n\r\n" + GET, 0.0)
    request = conn.next_event()
    assert isinstance(request, Request) and request.version == "1.0"
    assert not conn.keep_alive
    sent = single(conn.respond(text_response(200), WALL))
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in sent
    assert conn.next_event() is CLOSED  # what followed is dropped

    conn = ServerConnection()
    conn.receive(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0.0)
    assert isinstance(conn.next_event(), Request)
    assert conn.keep_alive
    sent = single(conn.respond(text_response(200), WALL))
    assert b"Connection: keep-alive\r\n" in sent
    assert conn.next_event() is NEED_DATA
    (response,) = parse_responses(sent, ["GET"])
    assert response.version == 11 and response.body == b"OK\n"  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close", "foo,CLOSE ,bar"])
def test_connection_close(value: str) -> None:
    conn = ServerConnection()
    conn.receive(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: %s\r\n\r\n" % value.encode(), 0.0)
    assert isinstance(conn.next_event(), Request)
    assert not conn.keep_alive
    sent = single(conn.respond(text_response(200), WALL))
    assert sent.count(b"Connection") == 1 and b"Connection: close\r\n" in sent
    assert conn.next_event() is CLOSED
    assert conn.deadline() is None


def test_the_handler_may_ask_for_close() -> None:
    conn = ServerConnection()
    conn.receive(GET + GET, 0.0)
    conn.next_event()
    sent = single(conn.respond(Response(200, [("Connection", "close")], b"x"), WALL))
    assert sent.count(b"Connection") == 1 and b"Connection: close\r\n" in sent
    assert not conn.keep_alive
    assert conn.next_event() is CLOSED


def test_end_of_file_in_a_request_closes_without_a_response() -> None:
    conn = ServerConnection()
    conn.receive(b"GET / HTTP/1.1\r\nHo", 0.0)
    assert conn.next_event() is NEED_DATA
    assert conn.receive(b"", 1.0) == b""
    assert conn.next_event() is CLOSED
    requests, failures, sent = serve([b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab"])
    assert (requests, failures, sent) == ([], [], b"")


def test_end_of_file_while_the_handler_works() -> None:
    conn = ServerConnection()
    conn.receive(GET, 0.0)
    assert isinstance(conn.next_event(), Request)
    conn.receive(b"", 0.5)
    assert conn.next_event() is NEED_DATA  # the response can still be sent
    assert not conn.keep_alive
    sent = single(conn.respond(text_response(200), WALL))
    assert b"Connection: close\r\n" in sent
    assert conn.next_event() is CLOSED


# Refusals.

H = b"Host: h\r\n"
REFUSALS = {
    "method not a token": (400, b"G(T / HTTP/1.1\r\n" + H + b"\r\n"),
    "two spaces": (400, b"GET  / HTTP/1.1\r\n" + H + b"\r\n"),
    "no version": (400, b"GET /\r\n" + H + b"\r\n"),
    "malformed version": (400, b"GET / HTTP/1.x\r\n" + H + b"\r\n"),
    "lower-case version": (400, b"GET / http/1.1\r\n" + H + b"\r\n"),
    "relative target": (400, b"GET index.html HTTP/1.1\r\n" + H + b"\r\n"),
    "asterisk not options": (400, b"GET * HTTP/1.1\r\n" + H + b"\r\n"),
    "control in target": (400, b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n"),
    "tab in target": (400, b"GET /a\tb HTTP/1.1\r\n" + H + b"\r\n"),
    "non-ascii target": (400, b"GET /\xe9 HTTP/1.1\r\n" + H + b"\r\n"),
    "no host": (400, b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
    "two hosts": (400, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    "two hosts 1.0": (400, b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
    "obs-fold": (400, b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n  2\r\n\r\n"),
    "space before colon": (400, b"GET / HTTP/1.1\r\n" + H + b"X-A : 1\r\n\r\n"),
    "no colon": (400, b"GET / HTTP/1.1\r\n" + H + b"X-A\r\n\r\n"),
    "empty name": (400, b"GET / HTTP/1.1\r\n" + H + b": 1\r\n\r\n"),
    "control in value": (400, b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n"),
    "del in value": (400, b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n"),
    "bare cr in value": (400, b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n"),
    "bare cr line end": (400, b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\r\n\r\n"),
    "bare cr after version": (400, b"GET / HTTP/1.1\r\r\n" + H + b"\r\n"),
    "content-length not digits": (400, b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1a\r\n\r\n"),
    "content-length signed": (400, b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +1\r\n\r\n"),
    "content-length empty": (400, b"POST / HTTP/1.1\r\n" + H + b"Content-Length:\r\n\r\n"),
    "content-length superscript": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \xb2\r\n\r\n",
    ),
    "content-lengths differ": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ),
    "content-length list differs": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1, 2\r\n\r\nab",
    ),
    "te and cl": (
        400,
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    "te in 1.0": (400, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "chunked twice": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n",
    ),
    "te empty": (400, b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \r\n\r\n"),
    "chunk size not hex": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nxyz\r\n",
    ),
    "chunk size 0x": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n",
    ),
    "chunk size empty": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n\r\n",
    ),
    "chunk without crlf": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n",
    ),
    "chunk size line too long": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3;" + b"x" * 2000,
    ),
    "bad trailer": (
        400,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
    ),
    "many empty lines": (400, b"\r\n" * 9 + GET),
    "content-length too large": (
        413,
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1048577\r\n\r\n",
    ),
    "content-length enormous": (
        413,
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n",
    ),
    "chunked too large": (
        413,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n100001\r\n",
    ),
    "target too long": (414, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    "method too long": (400, b"G" * 9000 + b" / HTTP/1.1\r\n" + H + b"\r\n"),
    "too many fields": (431, b"GET / HTTP/1.1\r\n" + H + b"X: y\r\n" * 100 + b"\r\n"),
    "too many field bytes": (431, b"GET / HTTP/1.1\r\n" + H + b"X: " + b"y" * 16384 + b"\r\n\r\n"),
    "gzip": (501, b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n"),
    "gzip then chunked": (
        501,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
    ),
    "chunked then gzip": (
        501,
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
    ),
    "http 2": (505, b"GET / HTTP/2.0\r\n" + H + b"\r\n"),
    "http 0.9": (505, b"GET / HTTP/0.9\r\n\r\n"),
}


@pytest.mark.parametrize(("status", "data"), REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals(status: int, data: bytes) -> None:
    failure = one_failure(data)
    assert failure.status == status, failure
    (response,) = parse_responses(failure.response, ["GET"])
    assert response.status == status
    assert response.getheader("Connection") == "close"
    assert response.getheader("Date") is None
    assert response.body.decode() == failure.reason + "\n"  # type: ignore[attr-defined]
    # The same, fed a byte at a time (the partial-head checks agree with the whole ones).
    requests, failures, sent = serve(bytewise(data), eof=False)
    assert not requests
    assert [f.status for f in failures] == [status]
    assert sent == failures[0].response


def test_later_http_1_minor_versions_are_served_as_1_1() -> None:
    (request,), _, sent = serve([b"GET / HTTP/1.2\r\nHost: h\r\n\r\n"])
    assert request.version == "1.1"
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n")


def test_accepted_forms() -> None:
    data = (
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET http://h/a?b HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET / HTTP/1.1\nHost: h\nX-Tab:\tv\t \n\n"  # bare LFs, OWS with tabs
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Obs: caf\xe9\r\nX-Empty:\r\n\r\n"
        b"\r\n\nGET / HTTP/1.0\r\n\r\n"  # empty lines first
    )
    requests, failures, _ = serve([data])
    assert not failures
    assert [r.target for r in requests] == ["*", "http://h/a?b", "/", "/", "/"]
    assert requests[1].path == "http://h/a" and requests[1].query == "b"
    assert requests[2].headers.get("x-tab") == "v"
    assert requests[3].headers.get("x-obs") == "caf\xe9"
    assert requests[3].headers.get("x-empty") == ""


# Expect: 100-continue.


def test_expect_100_continue() -> None:
    head = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"
    conn = ServerConnection()
    assert conn.receive(head[:20], 0.0) == b""
    assert conn.receive(head[20:], 0.1) == CONTINUE
    assert conn.next_event() is NEED_DATA
    assert conn.receive(b"a", 0.2) == b""  # once only
    assert conn.receive(b"bc", 0.3) == b""
    request = conn.next_event()
    assert isinstance(request, Request) and request.body == b"abc"
    # Not when the body came with the head, has no length, or the request is HTTP/1.0.
    assert ServerConnection().receive(head + b"abc", 0.0) == b""
    zero = head.replace(b"Length: 3", b"Length: 0")
    assert ServerConnection().receive(zero, 0.0) == b""
    old = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    assert ServerConnection().receive(old, 0.0) == b""
    # Nor when the body is refused: 413 at once instead.
    conn = ServerConnection(Limits(body_bytes=2))
    assert conn.receive(head, 0.0) == b""
    event = conn.next_event()
    assert isinstance(event, ProtocolFailure) and event.status == 413
    # Chunked.
    chunked = head.replace(b"Content-Length: 3", b"Transfer-Encoding: chunked")
    assert ServerConnection().receive(chunked, 0.0) == CONTINUE


def test_expect_100_continue_of_a_pipelined_request_follows_the_response() -> None:
    head = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    conn = ServerConnection()
    assert conn.receive(GET + head, 0.0) == b""  # not before the GET's response
    conn.next_event()
    sent = conn.respond(text_response(200), WALL)
    assert len(sent) == 2 and sent[1] == CONTINUE
    conn.receive(b"abc", 1.0)
    request = conn.next_event()
    assert isinstance(request, Request) and request.body == b"abc"


# Limits, at and one past each bound.


def request_with_line(length: int) -> bytes:
    target = b"/" + b"a" * (length - len(b"GET / HTTP/1.1"))
    line = b"GET " + target + b" HTTP/1.1"
    assert len(line) == length
    return line + b"\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_request_line_limit(split: bool) -> None:
    limits = Limits(request_line=64)

    def statuses(data: bytes) -> list[int]:
        requests, failures, _ = serve(bytewise(data) if split else [data], limits=limits)
        return [200] * len(requests) + [f.status for f in failures]

    assert statuses(request_with_line(64)) == [200]
    assert statuses(request_with_line(65)) == [414]
    assert statuses(request_with_line(65).replace(b"\r\n", b"\n")) == [414]
    assert statuses(b"GET / HTTP/1.1" + b"1" * 60 + b"\r\nHost: h\r\n\r\n") == [400]
    # Over the limit before the line's end has come.
    conn = ServerConnection(limits)
    conn.receive(b"GET /" + b"a" * 60, 0.0)
    assert conn.next_event() is NEED_DATA  # 65 bytes could still be a 64-byte line and CR
    conn.receive(b"a", 0.0)
    event = conn.next_event()
    assert isinstance(event, ProtocolFailure) and event.status == 414


def request_with_fields(count: int, total: int) -> bytes:
    """A request whose header fields, Host included, are `count` and `total` bytes."""
    fields = [b"Host: h\r\n"] + [b"X: y\r\n"] * (count - 2)
    used = sum(map(len, fields))
    last = b"Z: " + b"z" * (total - used - len(b"Z: \r\n")) + b"\r\n"
    data = b"".join([*fields, last])
    assert len(data) == total and data.count(b"\n") == count
    return b"GET / HTTP/1.1\r\n" + data + b"\r\n"


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_header_limits(split: bool) -> None:
    limits = Limits(header_bytes=200, header_count=10)

    def statuses(data: bytes) -> list[int]:
        requests, failures, _ = serve(bytewise(data) if split else [data], limits=limits)
        return [200] * len(requests) + [f.status for f in failures]

    assert statuses(request_with_fields(10, 200)) == [200]
    assert statuses(request_with_fields(11, 200)) == [431]
    assert statuses(request_with_fields(10, 201)) == [431]
    assert statuses(request_with_fields(3, 200).replace(b"\r\n", b"\n")) == [200]
    # The head never ends.
    conn = ServerConnection(limits)
    conn.receive(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 300, 0.0)
    event = conn.next_event()
    assert isinstance(event, ProtocolFailure) and event.status == 431
    conn = ServerConnection(limits)
    conn.receive(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 11, 0.0)
    event = conn.next_event()
    assert isinstance(event, ProtocolFailure) and event.status == 431


def test_trailers_count_toward_the_header_limits() -> None:
    limits = Limits(header_bytes=100, header_count=4)
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    used = len(b"Host: h\r\nTransfer-Encoding: chunked\r\n")
    fits = b"T: " + b"t" * (100 - used - 5) + b"\r\n"
    requests, _, _ = serve([head + fits + b"\r\n"], limits=limits)
    assert len(requests) == 1
    _, failures, _ = serve([head + fits[:-2] + b"t\r\n\r\n"], limits=limits)
    assert [f.status for f in failures] == [431]
    requests, _, _ = serve([head + b"A: 1\r\nB: 2\r\n\r\n"], limits=limits)
    assert len(requests) == 1
    _, failures, _ = serve([head + b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n"], limits=limits)
    assert [f.status for f in failures] == [431]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_body_limits(split: bool) -> None:
    limits = Limits(body_bytes=10)

    def statuses(data: bytes) -> list[int]:
        requests, failures, _ = serve(bytewise(data) if split else [data], limits=limits)
        return [200] * len(requests) + [f.status for f in failures]

    def sized(n: int) -> bytes:
        return b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % n + b"b" * n

    def chunked(*sizes: int) -> bytes:
        chunks = b"".join(b"%x\r\n" % n + b"c" * n + b"\r\n" for n in sizes)
        return (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunks
            + (b"0\r\n\r\n")
        )

    assert statuses(sized(10)) == [200]
    assert statuses(sized(11)) == [413]
    assert statuses(chunked(4, 6)) == [200]
    assert statuses(chunked(4, 7)) == [413]
    assert statuses(chunked(11)) == [413]
    # 413 at once: the body need not arrive.
    conn = ServerConnection(limits)
    conn.receive(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", 0.0)
    event = conn.next_event()
    assert isinstance(event, ProtocolFailure) and event.status == 413


# Deadlines.


def test_idle_deadline_closes_quietly() -> None:
    limits = Limits(request_timeout=10.0, idle_timeout=15.0)
    conn = ServerConnection(limits, now=100.0)
    assert conn.deadline() == 115.0
    assert conn.timed_out(114.9) is None
    assert conn.next_event() is NEED_DATA
    assert conn.timed_out(115.0) == b""
    assert conn.next_event() is CLOSED
    assert conn.deadline() is None
    assert conn.timed_out(200.0) is None


def test_request_deadline_gives_408() -> None:
    conn = ServerConnection(now=0.0)
    conn.receive(b"GET / HTTP/1.1\r\n", 3.0)
    assert conn.deadline() == 13.0
    conn.receive(b"Host: h\r\n", 12.0)
    assert conn.deadline() == 13.0  # from the first byte
    assert conn.timed_out(12.5) is None
    reply = conn.timed_out(13.5)
    assert reply is not None
    (response,) = parse_responses(reply, ["GET"])
    assert response.status == 408 and response.getheader("Connection") == "close"
    assert conn.next_event() is CLOSED
    assert conn.receive(b"\r\n", 14.0) == b""
    assert conn.next_event() is CLOSED


def test_deadlines_through_a_keep_alive_cycle() -> None:
    conn = ServerConnection(now=0.0)
    conn.receive(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n", 5.0)
    assert conn.deadline() == 15.0  # the head is parsed, the body is awaited
    conn.receive(b"ab", 6.0)
    assert isinstance(conn.next_event(), Request)
    assert conn.deadline() is None  # with the handler
    assert conn.timed_out(1000.0) is None
    conn.respond(text_response(200), WALL, now=30.0)
    assert conn.deadline() == 45.0  # idle from the response's end
    conn.receive(b"\r\n", 31.0)  # an empty line is not a request
    assert conn.deadline() == 45.0
    conn.receive(b"GET", 40.0)
    assert conn.deadline() == 50.0
    conn.receive(b" / HTTP/1.1\r\nHost: h\r\n\r\n" + b"GET / HT", 41.0)
    assert isinstance(conn.next_event(), Request)
    conn.respond(text_response(200), WALL)  # now: the latest given, 41
    assert conn.deadline() == 51.0  # the pipelined request is being read since then
    conn.receive(b"", 42.0)
    assert conn.deadline() is None
    assert conn.next_event() is CLOSED


# Streamed responses.


def streamed(request: bytes, status: int = 200) -> tuple[ServerConnection, bytes]:
    conn = ServerConnection()
    conn.receive(request, 0.0)
    assert isinstance(conn.next_event(), Request)
    sent = bytearray(conn.respond_chunked(status, [("Content-Type", "text/plain")], WALL))
    assert conn.next_event() is NEED_DATA
    for piece in (b"hello ", b"", memoryview(b"world"), b"!" * 20000):
        for part in conn.chunk(piece):
            sent += part
    sent += conn.end_chunks()
    return conn, bytes(sent)


def test_respond_chunked_for_http_11() -> None:
    conn, sent = streamed(GET + GET)
    lines, _ = split_head(sent)
    assert "Transfer-Encoding: chunked" in lines and not any("Length" in x for x in lines)
    assert sent.endswith(b"\r\n0\r\n\r\n")
    (response,) = parse_responses(sent, ["GET"])
    assert response.body == b"hello world" + b"!" * 20000  # type: ignore[attr-defined]
    assert conn.keep_alive
    assert isinstance(conn.next_event(), Request)  # the next one


def test_respond_chunked_for_http_10_runs_to_the_close() -> None:
    conn, sent = streamed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    lines, body = split_head(sent)
    assert "Connection: close" in lines and not any("Transfer" in x for x in lines)
    assert body == b"hello world" + b"!" * 20000
    assert conn.next_event() is CLOSED
    (response,) = parse_responses(sent, ["GET"])
    assert response.body == body  # type: ignore[attr-defined]


def test_respond_chunked_for_head_and_304_is_the_head_only() -> None:
    conn, sent = streamed(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    lines, body = split_head(sent)
    assert "Transfer-Encoding: chunked" in lines and body == b""
    assert conn.next_event() is NEED_DATA
    conn, sent = streamed(GET, status=304)
    lines, body = split_head(sent)
    assert not any("Transfer" in x for x in lines) and body == b""


def test_chunk_calls_out_of_order_are_errors() -> None:
    conn = ServerConnection()
    with pytest.raises(RuntimeError):
        conn.chunk(b"x")
    with pytest.raises(RuntimeError):
        conn.end_chunks()
    conn.receive(GET, 0.0)
    conn.next_event()
    conn.respond_chunked(200, [], WALL)
    with pytest.raises(RuntimeError):
        conn.respond(text_response(200), WALL)


# Interoperability: the standard library's client reads our responses.


def test_http_client_reads_a_keep_alive_exchange() -> None:
    data = (
        GET + b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n" + GET.replace(b"\r\n\r\n", b"\r\nA: b\r\n\r\n")
    )
    conn = ServerConnection()
    conn.receive(data, 0.0)
    sent = bytearray()
    bodies = [b"first", b"x" * 100000, b""]
    for body in bodies:
        assert isinstance(conn.next_event(), Request)
        for part in conn.respond(Response(200, [("Content-Type", "a/b")], body), WALL):
            sent += part
    responses = parse_responses(bytes(sent), ["GET", "HEAD", "GET"])
    assert [r.body for r in responses] == [b"first", b"", b""]  # type: ignore[attr-defined]
    assert responses[1].getheader("Content-Length") == "100000"
    assert all(not r.will_close for r in responses)


# Properties.

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TARGET_CHARS = "".join(chr(c) for c in range(0x21, 0x7F))
VALUE_CHARS = st.characters(
    codec="latin-1", exclude_categories=["Cc"], exclude_characters="\x7f"
) | st.sampled_from(" \t")
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "expect"}

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
field_values = st.text(VALUE_CHARS, max_size=30).map(lambda v: v.strip(" \t"))


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, tuple[str, str, str, list[tuple[str, str]], bytes]]:
    """A valid request's bytes, and what the engine is to make of it."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]) | tokens)
    target = "/" + draw(st.text(TARGET_CHARS, max_size=40))
    version = draw(st.sampled_from(["1.0", "1.1"]))
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    fields = draw(
        st.lists(
            st.tuples(tokens.filter(lambda n: n.lower() not in SPECIAL), field_values),
            max_size=8,
        )
    )
    body = draw(st.binary(max_size=300))
    framing = "chunked" if version == "1.1" and draw(st.booleans()) else "length"
    if not body and draw(st.booleans()):
        framing = "none"
    expected = [("host", "example.test")] if version == "1.1" else []
    lines = [f"{method} {target} HTTP/{version}"]
    if version == "1.1":
        lines.append("Host: example.test")
    for name, value in fields:
        ows = draw(st.sampled_from(["", " ", "\t ", "  "]))
        lines.append(f"{name}:{ows}{value}{ows}")
        expected.append((name.lower(), value))
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        expected.append(("content-length", str(len(body))))
        wire_body = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        expected.append(("transfer-encoding", "chunked"))
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        chunks = []
        for piece in pieces:
            if piece:
                ext = draw(st.sampled_from(["", ";a", ";a=b", ' ; q="x y"']))
                chunks.append(b"%x%s\r\n%s\r\n" % (len(piece), ext.encode(), piece))
        trailer = draw(st.sampled_from(["", "T: 1\r\n", "A: b\r\nC: d\r\n"]))
        wire_body = b"".join(chunks) + b"0\r\n" + trailer.encode() + b"\r\n"
    else:
        wire_body = b""
    head = eol.join(lines) + eol + eol
    return head.encode("latin-1") + wire_body, (method, target, version, expected, body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=4), st.data())
def test_valid_requests_cut_anywhere_parse_exactly(
    generated: list[tuple[bytes, tuple[str, str, str, list[tuple[str, str]], bytes]]],
    data: st.DataObject,
) -> None:
    # HTTP/1.0 requests close the connection: keep them last, and keep one.
    first_old = next((i for i, (_, e) in enumerate(generated) if e[2] == "1.0"), None)
    if first_old is not None:
        generated = generated[: first_old + 1]
    wire = b"".join(w for w, _ in generated)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    got, failures, _ = serve([piece for piece in pieces if piece])  # b"" is end of file
    assert not failures
    assert [request_summary(r) for r in got] == [e for _, e in generated]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_only_give_events(pieces: list[bytes]) -> None:
    conn = ServerConnection(Limits(request_line=40, header_bytes=100, body_bytes=50))
    for piece in [*pieces, b""]:
        assert conn.receive(piece, 0.0) in (b"", CONTINUE)
        for _ in range(100):
            event = conn.next_event()
            assert isinstance(event, Request | ProtocolFailure) or event in (NEED_DATA, CLOSED)
            if isinstance(event, Request):
                conn.respond(text_response(200), WALL)
            elif event is NEED_DATA or event is CLOSED:
                break
        else:
            raise AssertionError("next_event() keeps giving requests")
    assert conn.next_event() is CLOSED


GARBAGE = st.binary(max_size=200) | st.sampled_from(
    [b"\r\n\r\n", b"GET / HTTP/1.1\r\n", b"0\r\n\r\n", b"\x00" * 50, b"\n" * 20, b"a: b\r\n"]
)


@settings(max_examples=200, deadline=None)
@given(requests(), GARBAGE, st.integers(1, 64))
def test_garbage_after_a_request_never_hangs(
    generated: tuple[bytes, Any], garbage: bytes, step: int
) -> None:
    wire = generated[0] + garbage
    conn = ServerConnection(Limits(body_bytes=1000))
    pieces = [wire[i : i + step] for i in range(0, len(wire), step)]
    served = 0
    for steps in range(10000):
        event = conn.next_event()
        if event is CLOSED:
            break
        if isinstance(event, Request):
            served += 1
            conn.respond(text_response(200), WALL)
        elif event is NEED_DATA:
            conn.receive(pieces.pop(0) if pieces else b"", float(steps))
    else:
        raise AssertionError("the engine never closed")
    assert served >= 1  # the valid request always is


# The cost of one request: parse and respond (run with --benchmark-enable to measure).


def test_benchmark_browser_get(benchmark: Any) -> None:
    conn = ServerConnection(now=0.0)
    body = b"x" * 1500
    fields = [
        ("Content-Type", "text/css; charset=utf-8"),
        ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("ETag", '"5f2b-17a"'),
        ("Cache-Control", "max-age=60"),
    ]

    def one() -> list[bytes | memoryview]:
        conn.receive(BROWSER_GET, 1.0)
        request = conn.next_event()
        assert isinstance(request, Request)
        return conn.respond(Response(200, fields, body), WALL)

    (sent,) = benchmark(one)
    assert sent.endswith(body)
    assert conn.next_event() is NEED_DATA
