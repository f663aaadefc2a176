"""The iperf3 control protocol (iperf 3.x, TCP tests), as sans-IO state machines.

A test is one control connection plus `parallel` data connections ("streams"), all to the
server's port (5201). What goes over the control connection, as Debian's iperf3 3.12 does it:

    client                                        server
    cookie: 36 characters of a-z2-7, then NUL  ->
                                               <- PARAM_EXCHANGE (9)
    4-byte big-endian length, parameters JSON  ->
                                               <- CREATE_STREAMS (10)
    (each stream connects and sends the cookie)
                                               <- TEST_START (1), TEST_RUNNING (2)
    (data flows on the streams: client to server, or server to client with "reverse")
    TEST_END (4)                               ->
                                               <- EXCHANGE_RESULTS (13)
    length, the client's results JSON          ->
                                               <- length, the server's results JSON,
                                                  DISPLAY_RESULTS (14)
    IPERF_DONE (16)                            ->

A state is one signed byte. The server answers a second client while busy with ACCESS_DENIED
(-1, 0xff), and refuses a test with SERVER_ERROR (-2, 0xfe) followed by two 4-byte big-endian
numbers: iperf's error code (i_errno) and an errno. Either side may give up with
CLIENT_TERMINATE (12) or SERVER_TERMINATE (11). Streams are numbered 1, 3, 4, 5... in the
order they connect (iperf3's own numbering skips 2), and results name streams by number.

ServerProtocol and ClientProtocol are fed the bytes of the control connection (`feed`, with b""
at end of file) and return events; what to send waits in `data_to_send()`. They do no I/O and
read no clock, so tests drive them byte by byte; server.py and client.py are the drivers. Any
input they cannot accept raises ProtocolError (PeerError when the peer reported an error), and
nothing else; the server then leaves a SERVER_ERROR in data_to_send() for the client.
"""

from __future__ import annotations

import json

from unikernel.core.entropy import random_below

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

COOKIE_SIZE = 37  # 36 characters and a NUL
COOKIE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
DEFAULT_PORT = 5201
DEFAULT_BLOCK_SIZE = 128 * 1024  # iperf3's default "len" for TCP
MAX_BLOCK_SIZE = 1024 * 1024  # iperf3's MAX_BLOCKSIZE
MAX_STREAMS = 128  # iperf3's MAX_STREAMS
MAX_TIME = 86400  # iperf3's MAX_TIME, seconds
MAX_OMIT = 600  # iperf3's MAX_OMIT_TIME, seconds
MAX_MESSAGE = 256 * 1024  # largest JSON message we take; results of 128 streams fit in 20 KB

# States (iperf_api.h); one signed byte on the wire.
TEST_START = 1
TEST_RUNNING = 2
TEST_END = 4
PARAM_EXCHANGE = 9
CREATE_STREAMS = 10
SERVER_TERMINATE = 11
CLIENT_TERMINATE = 12
EXCHANGE_RESULTS = 13
DISPLAY_RESULTS = 14
IPERF_DONE = 16
ACCESS_DENIED = -1
SERVER_ERROR = -2

# iperf's error codes (i_errno, iperf_api.h) that we send or read, and iperf_error.c's texts.
IEDURATION = 5
IENUMSTREAMS = 6
IEBLOCKSIZE = 7
IEOMIT = 12
IEUNIMP = 13
IEMESSAGE = 110
IERECVPARAMS = 114
IERECVRESULTS = 117
IECLIENTTERM = 119
IESERVERTERM = 120
IEACCESSDENIED = 121
IEPROTOCOL = 131
IESTREAMACCEPT = 204
ERROR_TEXTS = {
    IEDURATION: f"test duration too long (maximum = {MAX_TIME} seconds)",
    IENUMSTREAMS: f"number of parallel streams too large (maximum = {MAX_STREAMS})",
    IEBLOCKSIZE: f"block size too large (maximum = {MAX_BLOCK_SIZE} bytes)",
    IEOMIT: f"bogus value for --omit (maximum = {MAX_OMIT} seconds)",
    IEUNIMP: "an option you are trying to set is not implemented yet",
    IEMESSAGE: "received an unknown control message",
    IERECVPARAMS: "unable to receive parameters from client",
    IERECVRESULTS: "unable to receive results",
    IECLIENTTERM: "the client has terminated",
    IESERVERTERM: "the server has terminated",
    IEACCESSDENIED: "the server is busy running a test. try again later",
    IEPROTOCOL: "protocol does not exist",
    IESTREAMACCEPT: "unable to accept stream connection",
}

_STATE_NAMES = {
    TEST_START: "TEST_START",
    TEST_RUNNING: "TEST_RUNNING",
    TEST_END: "TEST_END",
    PARAM_EXCHANGE: "PARAM_EXCHANGE",
    CREATE_STREAMS: "CREATE_STREAMS",
    SERVER_TERMINATE: "SERVER_TERMINATE",
    CLIENT_TERMINATE: "CLIENT_TERMINATE",
    EXCHANGE_RESULTS: "EXCHANGE_RESULTS",
    DISPLAY_RESULTS: "DISPLAY_RESULTS",
    IPERF_DONE: "IPERF_DONE",
    ACCESS_DENIED: "ACCESS_DENIED",
    SERVER_ERROR: "SERVER_ERROR",
}
_UINT64 = 1 << 64


class ProtocolError(Exception):
    """The control connection carried what the protocol does not allow, or ended early.

    `code` is the iperf error code (i_errno) that best describes it.
    """

    def __init__(self, message: str, code: int = IEMESSAGE) -> None:
        super().__init__(message)
        self.code = code


class PeerError(ProtocolError):
    """The peer reported an error: SERVER_ERROR with its code, ACCESS_DENIED, or a terminate."""

    def __init__(self, message: str, code: int, errno: int = 0) -> None:
        super().__init__(message, code)
        self.errno = errno


def state_name(state: int) -> str:
    return _STATE_NAMES.get(state, f"unknown state {state}")


def error_text(code: int) -> str:
    return ERROR_TEXTS.get(code, f"iperf error {code}")


def state_byte(state: int) -> bytes:
    """A state as it goes on the wire: one signed byte."""
    return bytes((state & 0xFF,))


def deny() -> bytes:
    """What a busy server answers a second client's cookie with."""
    return state_byte(ACCESS_DENIED)


def server_error(code: int, errno: int = 0) -> bytes:
    """SERVER_ERROR and its two numbers, as iperf_set_send_state + two Nwrite()s send them."""
    return (
        state_byte(SERVER_ERROR)
        + (code & 0xFFFFFFFF).to_bytes(4, "big")
        + (errno & 0xFFFFFFFF).to_bytes(4, "big")
    )


def frame(message: Mapping[str, object]) -> bytes:
    """A JSON message as iperf3's JSON_write frames it: 4-byte big-endian length, then JSON."""
    body = json.dumps(message, separators=(",", ":")).encode("ascii")  # ASCII, as cJSON writes
    return len(body).to_bytes(4, "big") + body


def make_cookie() -> bytes:
    """A fresh cookie: 36 random characters of iperf3's alphabet, then NUL."""
    chars = "".join(COOKIE_ALPHABET[random_below(len(COOKIE_ALPHABET))] for _ in range(36))
    return chars.encode("ascii") + b"\0"


def parse_cookie(data: bytes) -> str:
    """The cookie's 36 characters; ProtocolError unless `data` is 36 printable ASCII characters
    and a NUL. (Debian's iperf3 uses a-z2-7; other implementations may not, so any printable
    character is taken.)"""
    if len(data) != COOKIE_SIZE:
        raise ProtocolError(f"a cookie is {COOKIE_SIZE} bytes, not {len(data)}")
    if data[-1] != 0:
        raise ProtocolError("the cookie does not end with NUL")
    body = data[:-1]
    if any(byte < 0x21 or byte > 0x7E for byte in body):
        raise ProtocolError(f"the cookie {body!r} holds bytes that are not printable ASCII")
    return body.decode("ascii")


# Checking the JSON values a peer sends: cJSON numbers are doubles, and iperf3 3.12 prints a
# count of -1 ("unknown") as the unsigned 18446744073709551615.


def _int(message: Mapping[str, object], key: str, default: int | None = None) -> int:
    value = message.get(key, default)
    if value is None:
        raise ProtocolError(f"{key!r} is missing")
    if isinstance(value, bool):
        raise ProtocolError(f"{key!r} is {value!r}, not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ProtocolError(f"{key!r} is {value!r}, not a whole number")
        value = int(value)
    if not isinstance(value, int):
        raise ProtocolError(f"{key!r} is {value!r}, not a number")
    if value >= 1 << 63:
        value -= _UINT64  # uint64 as printed by iperf3 3.12: 2**64 - 1 is -1
    if not -(1 << 63) <= value < 1 << 63:
        raise ProtocolError(f"{key!r} is {value!r}, out of range")
    return value


def _count(message: Mapping[str, object], key: str, default: int | None = None) -> int:
    value = _int(message, key, default)
    if value < 0:
        raise ProtocolError(f"{key!r} is {value}, not a count")
    return value


def _float(message: Mapping[str, object], key: str, default: float | None = None) -> float:
    value = message.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key!r} is {value!r}, not a number")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ProtocolError(f"{key!r} is {value!r}, not a finite number")
    return number


def _flag(message: Mapping[str, object], key: str) -> bool:
    value = message.get(key, False)
    if not isinstance(value, bool | int):  # cJSON's true, or a number as older clients sent
        raise ProtocolError(f"{key!r} is {value!r}, not a boolean")
    return bool(value)


def _text(message: Mapping[str, object], key: str) -> str | None:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{key!r} is {value!r}, not a string")
    return value


class TestParams:
    """A test's parameters, as the client's parameters JSON carries them (JSON keys in
    brackets where they differ): protocol ("tcp"/"udp"/"sctp" true), time, bytes ("num"),
    blocks ("blockcount"), parallel, reverse, bidirectional, length ("len"), omit, rate
    ("bandwidth", bits/s), nodelay, mss ("MSS"), window, congestion, client_version; keys we
    do not model stay in `extra` and go back out as they came."""

    __test__ = False  # not a pytest test class, whatever its name says
    __slots__ = (
        "bidirectional",
        "blocks",
        "bytes",
        "client_version",
        "congestion",
        "extra",
        "length",
        "mss",
        "nodelay",
        "omit",
        "parallel",
        "protocol",
        "rate",
        "reverse",
        "time",
        "window",
    )

    def __init__(
        self,
        *,
        protocol: str = "tcp",
        time: int = 10,
        bytes: int = 0,
        blocks: int = 0,
        parallel: int = 1,
        reverse: bool = False,
        bidirectional: bool = False,
        length: int = DEFAULT_BLOCK_SIZE,
        omit: int = 0,
        rate: int = 0,
        nodelay: bool = False,
        mss: int = 0,
        window: int = 0,
        congestion: str | None = None,
        client_version: str | None = "3.12",
        extra: dict[str, object] | None = None,
    ) -> None:
        self.protocol = protocol
        self.time = time
        self.bytes = bytes
        self.blocks = blocks
        self.parallel = parallel
        self.reverse = reverse
        self.bidirectional = bidirectional
        self.length = length
        self.omit = omit
        self.rate = rate
        self.nodelay = nodelay
        self.mss = mss
        self.window = window
        self.congestion = congestion
        self.client_version = client_version
        self.extra: dict[str, object] = {"pacing_timer": 1000} if extra is None else extra

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"TestParams({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TestParams):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable

    @property
    def byte_limit(self) -> int:
        """Bytes after which the sender stops (0: it stops when told): -n, or -k blocks."""
        return self.bytes or self.blocks * self.length

    def to_json(self) -> dict[str, object]:
        """The parameters message, keys in the order iperf3's send_parameters() writes them."""
        message: dict[str, object] = {self.protocol: True, "omit": self.omit, "time": self.time}
        message["num"] = self.bytes
        message["blockcount"] = self.blocks
        if self.mss:
            message["MSS"] = self.mss
        if self.nodelay:
            message["nodelay"] = True
        message["parallel"] = self.parallel
        if self.reverse:
            message["reverse"] = True
        if self.bidirectional:
            message["bidirectional"] = True
        if self.window:
            message["window"] = self.window
        message["len"] = self.length
        if self.rate:
            message["bandwidth"] = self.rate
        for key, value in self.extra.items():
            message.setdefault(key, value)
        if self.congestion is not None:
            message["congestion"] = self.congestion
        if self.client_version is not None:
            message["client_version"] = self.client_version
        return message

    @classmethod
    def from_json(cls, message: object) -> TestParams:
        """Parameters from a client's message; ProtocolError if a value has the wrong type.
        (Whether we support them is ServerProtocol's business: see unsupported().)"""
        if not isinstance(message, dict):
            raise ProtocolError("the parameters are not a JSON object", IERECVPARAMS)
        try:
            protocols = [name for name in ("tcp", "udp", "sctp") if _flag(message, name)]
            if len(protocols) > 1:
                raise ProtocolError(f"the parameters name {' and '.join(protocols)}")
            known = {"tcp", "udp", "sctp", "omit", "time", "num", "blockcount", "MSS"}
            known |= {"nodelay", "parallel", "reverse", "bidirectional", "window", "len"}
            known |= {"bandwidth", "congestion", "client_version"}
            return cls(
                # iperf3 before 3.1 sent nothing for TCP, its default.
                protocol=protocols[0] if protocols else "tcp",
                time=_count(message, "time", 0),
                bytes=_count(message, "num", 0),
                blocks=_count(message, "blockcount", 0),
                parallel=_count(message, "parallel", 1),
                reverse=_flag(message, "reverse"),
                bidirectional=_flag(message, "bidirectional"),
                length=_count(message, "len", DEFAULT_BLOCK_SIZE),
                omit=_count(message, "omit", 0),
                rate=_count(message, "bandwidth", 0),
                nodelay=_flag(message, "nodelay"),
                mss=_count(message, "MSS", 0),
                window=_count(message, "window", 0),
                congestion=_text(message, "congestion"),
                client_version=_text(message, "client_version"),
                extra={key: value for key, value in message.items() if key not in known},
            )
        except ProtocolError as error:
            raise ProtocolError(f"bad parameters: {error}", IERECVPARAMS) from None

    def problem(self, max_streams: int = MAX_STREAMS) -> tuple[int, str] | None:
        """Why we cannot run this test, as (iperf error code, explanation), or None if we can:
        TCP only, one direction at a time, and no pacing of our own sending."""
        if self.protocol != "tcp":
            return IEUNIMP, f"{self.protocol.upper()} tests are not supported, TCP only"
        if self.bidirectional:
            return IEUNIMP, "bidirectional tests (--bidir) are not supported"
        if self.reverse and self.rate:
            return IEUNIMP, "a bandwidth limit (-b) on a reverse test is not supported"
        if not 1 <= self.parallel <= max_streams:
            return IENUMSTREAMS, f"{self.parallel} streams: 1 to {max_streams} are supported"
        if not 1 <= self.length <= MAX_BLOCK_SIZE:
            return IEBLOCKSIZE, f"block size {self.length}: 1 to {MAX_BLOCK_SIZE} bytes"
        if self.time > MAX_TIME:
            return IEDURATION, f"duration {self.time} s: at most {MAX_TIME} s"
        if self.omit > MAX_OMIT:
            return IEOMIT, f"omit {self.omit} s: at most {MAX_OMIT} s"
        return None


class StreamResult:
    """One stream's line of a results message. `bytes` counts what this side sent (if it was
    the sender) or received; `retransmits` is -1 where unknown (iperf3's receivers)."""

    __slots__ = (
        "bytes",
        "end_time",
        "errors",
        "id",
        "jitter",
        "packets",
        "retransmits",
        "start_time",
    )

    def __init__(
        self,
        id: int,
        bytes: int,
        *,
        retransmits: int = -1,
        jitter: float = 0.0,
        errors: int = 0,
        packets: int = 0,
        start_time: float = 0.0,
        end_time: float = 0.0,
    ) -> None:
        self.id = id
        self.bytes = bytes
        self.retransmits = retransmits
        self.jitter = jitter
        self.errors = errors
        self.packets = packets
        self.start_time = start_time
        self.end_time = end_time

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"StreamResult({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamResult):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "bytes": self.bytes,
            "retransmits": self.retransmits,
            "jitter": self.jitter,
            "errors": self.errors,
            "packets": self.packets,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }

    @classmethod
    def from_json(cls, message: object) -> StreamResult:
        if not isinstance(message, dict):
            raise ProtocolError("a stream's results are not a JSON object")
        return cls(
            _int(message, "id"),
            _count(message, "bytes"),
            retransmits=_int(message, "retransmits"),
            jitter=_float(message, "jitter"),
            errors=_int(message, "errors"),
            packets=_int(message, "packets"),
            start_time=_float(message, "start_time", 0.0),
            end_time=_float(message, "end_time", 0.0),
        )


class TestResults:
    """One side's results message: CPU use in percent, whether `retransmits` are known, and
    a StreamResult per stream."""

    __test__ = False
    __slots__ = (
        "congestion_used",
        "cpu_util_system",
        "cpu_util_total",
        "cpu_util_user",
        "sender_has_retransmits",
        "streams",
    )

    def __init__(
        self,
        streams: list[StreamResult],
        *,
        cpu_util_total: float = 0.0,
        cpu_util_user: float = 0.0,
        cpu_util_system: float = 0.0,
        sender_has_retransmits: int = -1,
        congestion_used: str | None = None,
    ) -> None:
        self.streams = streams
        self.cpu_util_total = cpu_util_total
        self.cpu_util_user = cpu_util_user
        self.cpu_util_system = cpu_util_system
        self.sender_has_retransmits = sender_has_retransmits
        self.congestion_used = congestion_used

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"TestResults({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TestResults):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    @property
    def bytes(self) -> int:
        return sum(stream.bytes for stream in self.streams)

    def by_id(self) -> dict[int, StreamResult]:
        return {stream.id: stream for stream in self.streams}

    def to_json(self) -> dict[str, object]:
        message: dict[str, object] = {
            "cpu_util_total": self.cpu_util_total,
            "cpu_util_user": self.cpu_util_user,
            "cpu_util_system": self.cpu_util_system,
            "sender_has_retransmits": self.sender_has_retransmits,
        }
        if self.congestion_used is not None:
            message["congestion_used"] = self.congestion_used
        message["streams"] = [stream.to_json() for stream in self.streams]
        return message

    @classmethod
    def from_json(cls, message: object) -> TestResults:
        """Results as iperf3's get_results() requires them; ProtocolError otherwise."""
        try:
            if not isinstance(message, dict):
                raise ProtocolError("the results are not a JSON object")
            streams = message.get("streams")
            if not isinstance(streams, list):
                raise ProtocolError("'streams' is missing or not a list")
            parsed = [StreamResult.from_json(stream) for stream in streams]
            ids = [stream.id for stream in parsed]
            if len(set(ids)) != len(ids):
                raise ProtocolError(f"stream ids repeat: {ids}")
            return cls(
                parsed,
                cpu_util_total=_float(message, "cpu_util_total"),
                cpu_util_user=_float(message, "cpu_util_user"),
                cpu_util_system=_float(message, "cpu_util_system"),
                sender_has_retransmits=_int(message, "sender_has_retransmits"),
                congestion_used=_text(message, "congestion_used"),
            )
        except ProtocolError as error:
            raise ProtocolError(f"bad results: {error}", IERECVRESULTS) from None


def stream_id(index: int) -> int:
    """The number iperf3 gives the index-th stream (from 0) of a test: 1, 3, 4, 5..."""
    return 1 if index == 0 else index + 2


# Events, what feed() returns.


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields())

    __hash__ = None  # type: ignore[assignment]

    def _fields(self) -> tuple[str, ...]:
        return tuple(
            name for klass in type(self).__mro__ for name in getattr(klass, "__slots__", ())
        )


class ParamsReceived(Event):
    """Server: the client's parameters, accepted; CREATE_STREAMS is queued. Accept
    `params.parallel` stream connections that carry `cookie`, then call start_test()."""

    __slots__ = ("cookie", "params")

    def __init__(self, params: TestParams, cookie: str) -> None:
        self.params = params
        self.cookie = cookie


class TestRejected(Event):
    """Server: a test we do not run (UDP, say); SERVER_ERROR with `code` is queued, and the
    protocol is over."""

    __test__ = False
    __slots__ = ("code", "params", "reason")

    def __init__(self, params: TestParams, code: int, reason: str) -> None:
        self.params = params
        self.code = code
        self.reason = reason


class TestEnded(Event):
    """Server: the client sent TEST_END. Stop the streams, then call request_results()."""

    __test__ = False
    __slots__ = ()


class ResultsReceived(Event):
    """The peer's results. Server: answer with send_results(). Client: DISPLAY_RESULTS
    follows."""

    __slots__ = ("results",)

    def __init__(self, results: TestResults) -> None:
        self.results = results


class Terminated(Event):
    """The peer gave up (CLIENT_TERMINATE, to a server); the protocol is over."""

    __slots__ = ("state",)

    def __init__(self, state: int) -> None:
        self.state = state


class Done(Event):
    """The test is over and both sides have the results: close everything."""

    __slots__ = ()


class CreateStreams(Event):
    """Client: connect `count` streams to the server, sending `cookie` first on each."""

    __slots__ = ("cookie", "count")

    def __init__(self, count: int, cookie: bytes) -> None:
        self.count = count
        self.cookie = cookie


class TestStarted(Event):
    """Client: TEST_START; TEST_RUNNING follows."""

    __test__ = False
    __slots__ = ()


class TestRunning(Event):
    """Client: TEST_RUNNING: send (or receive) now, then call end_test()."""

    __test__ = False
    __slots__ = ()


class ResultsRequested(Event):
    """Client: EXCHANGE_RESULTS: finish receiving, then call send_results()."""

    __slots__ = ()


# Where each side is. Strings, so that errors can say it plainly.
COOKIE = "cookie"
PARAMS = "parameters"
STREAMS = "creating streams"
STARTING = "starting"
RUNNING = "running"
ENDED = "ended"
RESULTS = "exchanging results"
OUR_RESULTS = "sending our results"
DISPLAY = "displaying results"
DONE = "done"
FAILED = "failed"


class _Side:
    """What both roles share: the input buffer, the output queue and the framing."""

    role = ""

    def __init__(self) -> None:
        self.state = COOKIE
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False

    @property
    def over(self) -> bool:
        """Whether the protocol has finished, well or not."""
        return self.state in (DONE, FAILED)

    def data_to_send(self) -> bytes:
        """What to write to the control connection now (b"" if nothing)."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def feed(self, data: bytes) -> list[Event]:
        """Bytes from the control connection (b"": end of file); the events they complete."""
        if self.state == FAILED:
            raise ProtocolError(f"{self.role}: the protocol failed already")
        if data:
            if self._eof:
                raise ProtocolError(f"{self.role}: data after end of file")
            self._in += data
        else:
            self._eof = True
        events: list[Event] = []
        try:
            while self.state not in (DONE, FAILED) and self._step(events):
                pass
            if self._in and self.over:
                raise ProtocolError(
                    f"{self.role}: {len(self._in)} bytes after the end of the test", IEMESSAGE
                )
            if self._eof and not self.over:
                self._closed_early()
                if not self.over:
                    raise ProtocolError(
                        f"{self.role}: the control connection closed while {self.state}",
                        IEMESSAGE,
                    )
        except ProtocolError as error:
            self._fail(error)
            raise
        return events

    def _step(self, events: list[Event]) -> bool:
        """Take one message from the input if it is complete; False if more bytes are needed
        (or the next move is the application's)."""
        raise NotImplementedError

    def _closed_early(self) -> None:
        """End of file in the current state; may end the protocol (DONE) gracefully."""

    def _fail(self, error: ProtocolError) -> None:
        self.state = FAILED

    def _take(self, size: int) -> bytes | None:
        if len(self._in) < size:
            return None
        data = bytes(self._in[:size])
        del self._in[:size]
        return data

    def _take_state(self) -> int | None:
        data = self._take(1)
        if data is None:
            return None
        return data[0] - 256 if data[0] >= 128 else data[0]

    def _take_message(self, code: int) -> object | None:
        """A length-framed JSON message, or None while incomplete."""
        if len(self._in) < 4:
            return None
        size = int.from_bytes(self._in[:4], "big")
        if size == 0 or size > MAX_MESSAGE:
            raise ProtocolError(
                f"{self.role}: a JSON message of {size} bytes while {self.state} "
                f"(1 to {MAX_MESSAGE} expected)",
                code,
            )
        if len(self._in) < 4 + size:
            return None
        body = bytes(self._in[4 : 4 + size])
        del self._in[: 4 + size]
        try:
            message: object = json.loads(body.decode("utf-8"))
            return message
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise ProtocolError(
                f"{self.role}: malformed JSON while {self.state}: {error}", code
            ) from None

    def _unexpected(self, state: int) -> ProtocolError:
        return ProtocolError(f"{self.role}: {state_name(state)} while {self.state}", IEMESSAGE)

    def _require(self, *states: str) -> None:
        if self.state not in states:
            raise RuntimeError(f"{self.role}: not allowed while {self.state}")


class ServerProtocol(_Side):
    """The server's side of one test: fed what the client sends on the control connection.

        server = ServerProtocol()
        events = server.feed(data)     # ParamsReceived, TestRejected, TestEnded,
                                       # ResultsReceived, Terminated, Done
        sock.send(server.data_to_send())
        server.start_test()            # once the streams are connected
        server.request_results()       # after TestEnded, once the streams are stopped
        server.send_results(results)   # after ResultsReceived

    On bad input feed() raises ProtocolError and queues SERVER_ERROR for the client.
    """

    role = "server"

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        super().__init__()
        self.max_streams = max_streams
        self.cookie: str | None = None
        self.params: TestParams | None = None
        self._error_sent = False

    def start_test(self) -> None:
        """Every stream is connected: TEST_START and TEST_RUNNING."""
        self._require(STREAMS)
        self._out += state_byte(TEST_START) + state_byte(TEST_RUNNING)
        self.state = RUNNING

    def request_results(self) -> None:
        """After TestEnded: EXCHANGE_RESULTS; the client's results come next."""
        self._require(ENDED)
        self._out += state_byte(EXCHANGE_RESULTS)
        self.state = RESULTS

    def send_results(self, results: TestResults) -> None:
        """After ResultsReceived: our results and DISPLAY_RESULTS; IPERF_DONE comes next."""
        self._require(OUR_RESULTS)
        self._out += frame(results.to_json()) + state_byte(DISPLAY_RESULTS)
        self.state = DISPLAY

    def fail(self, code: int, errno: int = 0) -> None:
        """Give up with SERVER_ERROR (a stream could not be accepted, say)."""
        if not self.over:
            self._send_error(code, errno)
            self.state = FAILED

    def terminate(self) -> None:
        """Give up with SERVER_TERMINATE (the server is going away)."""
        if not self.over:
            self._out += state_byte(SERVER_TERMINATE)
            self.state = FAILED

    def _send_error(self, code: int, errno: int = 0) -> None:
        if not self._error_sent:
            self._error_sent = True
            self._out += server_error(code, errno)

    def _fail(self, error: ProtocolError) -> None:
        if self.state not in (DONE, FAILED, DISPLAY):
            self._send_error(error.code)
        self.state = FAILED

    def _closed_early(self) -> None:
        if self.state == DISPLAY:
            self.state = DONE  # it has our results: IPERF_DONE is a formality

    def _step(self, events: list[Event]) -> bool:
        if self.state == COOKIE:
            data = self._take(COOKIE_SIZE)
            if data is None:
                return False
            self.cookie = parse_cookie(data)
            self._out += state_byte(PARAM_EXCHANGE)
            self.state = PARAMS
            return True
        if self.state == PARAMS:
            # A client that gives up early sends CLIENT_TERMINATE instead of parameters.
            if self._in[:1] == state_byte(CLIENT_TERMINATE):
                return self._terminated(events)
            message = self._take_message(IERECVPARAMS)
            if message is None:
                return False
            params = TestParams.from_json(message)
            self.params = params
            problem = params.problem(self.max_streams)
            if problem is None:
                self._out += state_byte(CREATE_STREAMS)
                self.state = STREAMS
                assert self.cookie is not None
                events.append(ParamsReceived(params, self.cookie))
            else:
                code, reason = problem
                self._send_error(code)
                self.state = FAILED
                events.append(TestRejected(params, code, reason))
            return True
        if self.state in (STREAMS, RUNNING, ENDED, DISPLAY):
            state = self._take_state()
            if state is None:
                return False
            if state == CLIENT_TERMINATE:
                return self._terminated(events, consumed=True)
            if state == TEST_END and self.state == RUNNING:
                self.state = ENDED
                events.append(TestEnded())
                return True
            if state == IPERF_DONE and self.state == DISPLAY:
                self.state = DONE
                events.append(Done())
                return True
            raise self._unexpected(state)
        if self.state == RESULTS:
            if self._in[:1] == state_byte(CLIENT_TERMINATE):
                return self._terminated(events)
            message = self._take_message(IERECVRESULTS)
            if message is None:
                return False
            self.state = OUR_RESULTS
            events.append(ResultsReceived(TestResults.from_json(message)))
            return True
        return False  # STARTING, OUR_RESULTS: the application's move

    def _terminated(self, events: list[Event], consumed: bool = False) -> bool:
        if not consumed:
            del self._in[:1]
        events.append(Terminated(CLIENT_TERMINATE))
        self.state = FAILED if self.state != DISPLAY else DONE
        return True


class ClientProtocol(_Side):
    """The client's side of one test: fed what the server sends on the control connection.

        client = ClientProtocol(TestParams(time=2, parallel=4))
        sock.send(client.data_to_send())        # the cookie
        events = client.feed(data)              # CreateStreams, TestStarted, TestRunning,
                                                # ResultsRequested, ResultsReceived, Done
        client.end_test()                       # when the time is up or the bytes are sent
        client.send_results(results)            # after ResultsRequested

    The server's errors (SERVER_ERROR, ACCESS_DENIED, SERVER_TERMINATE) raise PeerError.
    """

    role = "client"

    def __init__(self, params: TestParams, cookie: bytes | None = None) -> None:
        super().__init__()
        self.params = params
        self.cookie = make_cookie() if cookie is None else cookie
        parse_cookie(self.cookie)  # ours must be valid too
        self._out += self.cookie
        self._pending_error: int | None = None

    def end_test(self) -> None:
        """TEST_END: the sending is over (or, receiving, the time is up)."""
        self._require(RUNNING)
        self._out += state_byte(TEST_END)
        self.state = ENDED

    def send_results(self, results: TestResults) -> None:
        """After ResultsRequested: our results; the server's come next."""
        self._require(OUR_RESULTS)
        self._out += frame(results.to_json())
        self.state = RESULTS

    def terminate(self) -> None:
        """Give up with CLIENT_TERMINATE, so that the server does not wait for us."""
        if not self.over:
            self._out += state_byte(CLIENT_TERMINATE)
            self.state = FAILED

    def _step(self, events: list[Event]) -> bool:
        if self.state == RESULTS:
            message = self._take_message(IERECVRESULTS)
            if message is None:
                return False
            self.state = DISPLAY
            events.append(ResultsReceived(TestResults.from_json(message)))
            return True
        if self.state == OUR_RESULTS:
            return False  # the application's move
        if self._pending_error is None:
            state = self._take_state()
            if state is None:
                return False
        else:
            state = self._pending_error
        if state == SERVER_ERROR:
            numbers = self._take(8)
            if numbers is None:
                self._pending_error = SERVER_ERROR
                return False
            code = int.from_bytes(numbers[:4], "big", signed=True)
            errno = int.from_bytes(numbers[4:], "big", signed=True)
            raise PeerError(f"the server refused the test: {error_text(code)}", code, errno)
        if state == ACCESS_DENIED:
            raise PeerError(f"the server refused: {error_text(IEACCESSDENIED)}", IEACCESSDENIED)
        if state == SERVER_TERMINATE:
            raise PeerError(f"while {self.state}: {error_text(IESERVERTERM)}", IESERVERTERM)
        expected = {
            COOKIE: PARAM_EXCHANGE,
            PARAMS: CREATE_STREAMS,
            STREAMS: TEST_START,
            STARTING: TEST_RUNNING,
            ENDED: EXCHANGE_RESULTS,
            DISPLAY: DISPLAY_RESULTS,
        }.get(self.state)
        if state != expected:
            raise self._unexpected(state)
        if state == PARAM_EXCHANGE:
            self._out += frame(self.params.to_json())
            self.state = PARAMS
        elif state == CREATE_STREAMS:
            self.state = STREAMS
            events.append(CreateStreams(self.params.parallel, self.cookie))
        elif state == TEST_START:
            self.state = STARTING
            events.append(TestStarted())
        elif state == TEST_RUNNING:
            self.state = RUNNING
            events.append(TestRunning())
        elif state == EXCHANGE_RESULTS:
            self.state = OUR_RESULTS
            events.append(ResultsRequested())
        else:  # DISPLAY_RESULTS
            self._out += state_byte(IPERF_DONE)
            self.state = DONE
            events.append(Done())
        return True
