"""The xenstore wire protocol, sans-IO: requests built, byte streams decoded."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.drivers.xen.xenstore import (
    HEADER_SIZE,
    MAX_MESSAGE,
    ErrorReply,
    Reply,
    WatchEvent,
    XenstoreError,
    XenstoreEvent,
    XenstoreProtocol,
    XsType,
    decode_directory,
    decode_domain_path,
    decode_perms,
    decode_transaction_id,
    decode_value,
)

HEADER = struct.Struct("<IIII")  # spelled out independently of the module's


def message(kind: int, req_id: int, payload: bytes, tx: int = 0) -> bytes:
    return HEADER.pack(kind, req_id, tx, len(payload)) + payload


def test_message_type_numbers_are_xs_wire_h() -> None:
    expected = {
        "DIRECTORY": 1,
        "READ": 2,
        "GET_PERMS": 3,
        "WATCH": 4,
        "UNWATCH": 5,
        "TRANSACTION_START": 6,
        "TRANSACTION_END": 7,
        "GET_DOMAIN_PATH": 10,
        "WRITE": 11,
        "MKDIR": 12,
        "RM": 13,
        "SET_PERMS": 14,
        "WATCH_EVENT": 15,
        "ERROR": 16,
    }
    assert {name: getattr(XsType, name) for name in expected} == expected
    assert HEADER_SIZE == 16


@pytest.mark.parametrize(
    ("build", "kind", "tx", "payload"),
    [
        (lambda p: p.read("device/vif", 0), 2, 0, b"device/vif\0"),
        (lambda p: p.read("/local/domain/0", 9), 2, 9, b"/local/domain/0\0"),
        (lambda p: p.directory("device"), 1, 0, b"device\0"),
        (lambda p: p.write("device/vif/0/state", "4", 3), 11, 3, b"device/vif/0/state\x004"),
        (lambda p: p.write("k", b"\xff\x00v"), 11, 0, b"k\0\xff\x00v"),
        (lambda p: p.mkdir("data"), 12, 0, b"data\0"),
        (lambda p: p.rm("data", 5), 13, 5, b"data\0"),
        (lambda p: p.watch("backend/vif", "tok"), 4, 0, b"backend/vif\0tok\0"),
        (lambda p: p.unwatch("backend/vif", "tok"), 5, 0, b"backend/vif\0tok\0"),
        (lambda p: p.transaction_start(), 6, 0, b"\0"),
        (lambda p: p.transaction_end(17, True), 7, 17, b"T\0"),
        (lambda p: p.transaction_end(17, False), 7, 17, b"F\0"),
        (lambda p: p.set_perms("data", ["n7", "r0"]), 14, 0, b"data\0n7\0r0\0"),
        (lambda p: p.get_perms("data"), 3, 0, b"data\0"),
        (lambda p: p.get_domain_path(7), 10, 0, b"7\0"),
    ],
)
def test_requests_on_the_wire(build: Any, kind: int, tx: int, payload: bytes) -> None:
    protocol = XenstoreProtocol()
    req_id, data = build(protocol)
    assert data == message(kind, req_id, payload, tx)
    assert protocol.pending == 1


def test_request_ids_are_distinct_and_never_zero() -> None:
    protocol = XenstoreProtocol()
    ids = [protocol.read("x")[0] for _ in range(100)]
    assert len(set(ids)) == 100 and 0 not in ids


def test_request_ids_wrap_past_those_still_pending() -> None:
    protocol = XenstoreProtocol()
    first, _ = protocol.read("x")
    protocol._next_id = 0xFFFFFFFF
    assert protocol.read("x")[0] == 0xFFFFFFFF
    assert protocol.read("x")[0] == first + 1  # 0 skipped, `first` still awaits its reply


def test_transaction_end_of_no_transaction_is_refused() -> None:
    with pytest.raises(ValueError, match="no transaction"):
        XenstoreProtocol().transaction_end(0, True)


@pytest.mark.parametrize("path", ["", "a\0b"])
def test_paths_must_be_non_empty_and_nul_free(path: str) -> None:
    with pytest.raises(ValueError, match="NUL-free"):
        XenstoreProtocol().read(path)


def test_a_request_of_exactly_the_device_limit_is_taken_and_one_byte_more_refused() -> None:
    protocol = XenstoreProtocol()
    value = "v" * (MAX_MESSAGE - HEADER_SIZE - len("k\0"))
    assert len(protocol.write("k", value)[1]) == MAX_MESSAGE
    with pytest.raises(XenstoreError, match="4097 bytes is over the 4096"):
        protocol.write("k", value + "v")
    assert protocol.pending == 1  # the refused one never became a request


def test_round_trips_of_each_reply() -> None:
    protocol = XenstoreProtocol()
    read_id, _ = protocol.read("device/vif/0/mac")
    dir_id, _ = protocol.directory("device/vif")
    empty_id, _ = protocol.directory("device/vif/0/mac")
    tx_id, _ = protocol.transaction_start()
    perms_id, _ = protocol.get_perms("data")
    home_id, _ = protocol.get_domain_path(7)
    missing_id, _ = protocol.read("nope")
    watch_id, _ = protocol.watch("backend", "be")
    stream = b"".join(
        [
            message(2, read_id, b"00:16:3e:00:00:01"),
            message(1, dir_id, b"0\x001\0"),
            message(1, empty_id, b""),
            message(6, tx_id, b"42\0"),
            message(3, perms_id, b"n7\0r0\0"),
            message(10, home_id, b"/local/domain/7\0"),
            message(16, missing_id, b"ENOENT\0"),
            message(15, 0, b"backend\0be\0"),
            message(4, watch_id, b"OK\0"),
        ]
    )
    events = protocol.receive(stream)
    assert events == [
        Reply(read_id, 2, b"00:16:3e:00:00:01"),
        Reply(dir_id, 1, b"0\x001\0"),
        Reply(empty_id, 1, b""),
        Reply(tx_id, 6, b"42\0"),
        Reply(perms_id, 3, b"n7\0r0\0"),
        Reply(home_id, 10, b"/local/domain/7\0"),
        ErrorReply(missing_id, "ENOENT"),
        WatchEvent("backend", "be"),
        Reply(watch_id, 4, b"OK\0"),
    ]
    assert protocol.pending == 0
    value, listing, empty, tx, perms, home = (e.payload for e in events[:6] if isinstance(e, Reply))
    assert decode_value(value) == "00:16:3e:00:00:01"
    assert decode_directory(listing) == ["0", "1"]
    assert decode_directory(empty) == []
    assert decode_transaction_id(tx) == 42
    assert decode_perms(perms) == ["n7", "r0"]
    assert decode_domain_path(home) == "/local/domain/7"


@pytest.mark.parametrize("payload", [b"0\0", b"42", b"-1\0", b"x\0", b"4294967296\0", b""])
def test_bad_transaction_ids_are_refused(payload: bytes) -> None:
    with pytest.raises(XenstoreError):
        decode_transaction_id(payload)


def test_bad_directory_and_value_payloads_are_refused() -> None:
    with pytest.raises(XenstoreError, match="not NUL-terminated"):
        decode_directory(b"a\0b")
    with pytest.raises(XenstoreError, match="not UTF-8"):
        decode_value(b"\xff")


# A conversation: requests, then their replies in any order, with watch events and errors
# between them.

names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[XenstoreProtocol, bytes, list[XenstoreEvent]]:
    protocol = XenstoreProtocol()
    stream: list[bytes] = []
    expected: list[XenstoreEvent] = []
    requests = []
    for path in draw(st.lists(names, max_size=8)):
        kind = draw(st.sampled_from([1, 2, 11, 12, 13]))
        req_id, _ = protocol.request(kind, path.encode() + b"\0")
        requests.append((req_id, kind))
    for req_id, kind in draw(st.permutations(requests)):
        for path, token in draw(st.lists(st.tuples(names, names), max_size=2)):
            stream.append(message(15, 0, f"{path}\0{token}\0".encode()))
            expected.append(WatchEvent(path, token))
        if draw(st.booleans()):
            name = draw(st.sampled_from(["ENOENT", "EACCES", "EAGAIN", "EINVAL"]))
            stream.append(message(16, req_id, name.encode() + b"\0"))
            expected.append(ErrorReply(req_id, name))
        else:
            payload = draw(st.binary(max_size=64))
            stream.append(message(kind, req_id, payload))
            expected.append(Reply(req_id, kind, payload))
    return protocol, b"".join(stream), expected


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(conversations(), st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_of_a_stream_decodes_to_the_same_events(
    conversation: tuple[XenstoreProtocol, bytes, list[XenstoreEvent]], cuts: list[int]
) -> None:
    protocol, stream, expected = conversation
    events: list[XenstoreEvent] = []
    for chunk in split(stream, cuts):
        events += protocol.receive(chunk)
    assert events == expected
    assert protocol.pending == 0


@given(conversations())
def test_a_stream_fed_a_byte_at_a_time_decodes_the_same(
    conversation: tuple[XenstoreProtocol, bytes, list[XenstoreEvent]],
) -> None:
    protocol, stream, expected = conversation
    events: list[XenstoreEvent] = []
    for i in range(len(stream)):
        events += protocol.receive(stream[i : i + 1])
    assert events == expected


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (message(99, 1, b""), "unknown type 99"),
        (HEADER.pack(2, 1, 0, 4097), "claims 4097 bytes"),
        (HEADER.pack(2, 1, 0, 0xFFFFFFFF), "claims 4294967295 bytes"),
        (message(16, 1, b"ENOENT"), "ERROR payload is not NUL-terminated"),
        (message(16, 1, b"\0"), "names no error"),
        (message(15, 0, b"path\0"), "without a token"),
        (message(15, 0, b"path\0token"), "not NUL-terminated"),
        (message(15, 0, b"\xff\0token\0"), "not UTF-8"),
        (message(2, 2, b"v"), "reply to request 2, which awaits none"),
        (message(1, 1, b"v"), "DIRECTORY reply to request 1, which was a READ"),
    ],
)
def test_malformed_streams_are_refused(stream: bytes, error: str) -> None:
    protocol = XenstoreProtocol()
    assert protocol.read("x")[0] == 1
    with pytest.raises(XenstoreError, match=error):
        protocol.receive(stream)
    with pytest.raises(XenstoreError, match="broke earlier"):
        protocol.receive(message(2, 1, b"v"))


def test_a_bad_header_is_refused_before_its_payload_comes() -> None:
    with pytest.raises(XenstoreError, match="claims 65536"):
        XenstoreProtocol().receive(HEADER.pack(2, 1, 0, 65536))


@given(
    st.lists(st.binary(max_size=40), max_size=20),
    st.lists(st.sampled_from([1, 2, 4, 6, 11, 15, 16]), max_size=4),
)
def test_arbitrary_bytes_raise_only_xenstore_errors(chunks: list[bytes], kinds: list[int]) -> None:
    protocol = XenstoreProtocol()
    for kind in kinds:
        if kind not in (XsType.WATCH_EVENT, XsType.ERROR):
            protocol.request(kind, b"p\0")  # replies to these are well-formed
    try:
        for chunk in chunks:
            protocol.receive(chunk)
    except XenstoreError:
        pass


@given(conversations(), st.data())
def test_corrupted_streams_raise_only_xenstore_errors(
    conversation: tuple[XenstoreProtocol, bytes, list[XenstoreEvent]], data: st.DataObject
) -> None:
    protocol, stream, _ = conversation
    corrupt = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 4))):
        if corrupt:
            at = data.draw(st.integers(0, len(corrupt) - 1))
            corrupt[at] = data.draw(st.integers(0, 255))
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=10))
    try:
        for chunk in split(bytes(corrupt), cuts):
            protocol.receive(chunk)
    except XenstoreError:
        pass
