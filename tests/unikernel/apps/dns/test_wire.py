"""wire.py: parsing and building DNS messages, and TCP framing."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unikernel.apps.dns import wire
from unikernel.apps.dns.wire import (
    Edns,
    FormatError,
    FramingError,
    Message,
    Question,
    Record,
    TcpFraming,
    parse_message,
)

WWW = (b"www", b"example", b"test")
EXAMPLE = (b"example", b"test")


def header(ident: int = 0x1234, flags: int = 0, counts: tuple[int, ...] = (1, 0, 0, 0)) -> bytes:
    return struct.pack(">HHHHHH", ident, flags, *counts)


def question(name: bytes = b"\x03www\x07example\x04test\x00", qtype: int = 1) -> bytes:
    return name + struct.pack(">HH", qtype, 1)


# Names


def test_name_key_lowercases_ascii_only() -> None:
    assert wire.name_key((b"WwW", b"\xc9x")) == (b"www", b"\xc9x")


def test_names_to_and_from_text() -> None:
    assert wire.name_from_text("www.example.test.") == WWW
    assert wire.name_from_text(".") == ()
    assert wire.name_to_text(WWW) == "www.example.test."
    assert wire.name_to_text(()) == "."
    assert wire.name_to_text((b"a.b", b"x y", b"\x00")) == "a\\.b.x\\032y.\\000."


def test_name_pairs_carry_lowercase_suffixes_and_wire_labels() -> None:
    assert wire.name_pairs((b"WWW", b"Test")) == (
        ((b"www", b"test"), b"\x03WWW"),
        ((b"test",), b"\x04Test"),
    )


# Parsing


def test_parses_a_query_with_edns() -> None:
    opt = b"\x00" + struct.pack(">HHIH", wire.OPT, 4096, 0x00008000, 0)
    data = header(flags=wire.RD, counts=(1, 0, 0, 1)) + question() + opt
    message = parse_message(data)
    assert message.id == 0x1234
    assert message.flags == wire.RD
    assert message.question == [Question(WWW, wire.A, wire.IN)]
    assert message.edns == Edns(4096, 0, 0, wire.DO, ())
    assert message.edns.do
    assert message.additional == []


def test_follows_compression_pointers_backwards() -> None:
    data = (
        header(counts=(1, 1, 0, 0))
        + question()
        + b"\xc0\x0c"
        + struct.pack(">HHIH", wire.CNAME, 1, 60, 6)
        + b"\x03web\xc0\x10"
    )
    record = parse_message(data).answer[0]
    assert record.name == WWW
    assert record.rdata == (b"web", b"example", b"test")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(b"\xc0\x0c", id="pointer to itself"),
        pytest.param(b"\xc0\x20", id="pointer forwards"),
        pytest.param(b"\x01a\xc0\x0c", id="pointer back into its own name"),
        pytest.param(b"\xc0", id="pointer cut off"),
        pytest.param(b"\x05ab", id="label cut off"),
        pytest.param(b"\x01a", id="no terminating zero"),
        pytest.param(b"\x40abc\x00", id="extended label type"),
        pytest.param(b"\x80abc\x00", id="label type 0x80"),
        pytest.param((b"\x3f" + b"a" * 63) * 4 + b"\x00", id="name over 255 octets"),
    ],
)
def test_refuses_bad_names(name: bytes) -> None:
    with pytest.raises(FormatError) as caught:
        parse_message(header() + name + b"\x00\x01\x00\x01" + bytes(40))
    assert caught.value.id == 0x1234
    assert caught.value.flags == 0


def test_refuses_a_compression_loop_between_two_names() -> None:
    # Two records whose owners point at each other: the second pointer is not backwards.
    data = (
        header(counts=(0, 2, 0, 0))
        + b"\xc0\x19"  # at 12: points at 25, ahead
        + struct.pack(">HHIH", wire.A, 1, 0, 0)  # to 24
        + b"\x00"
        + b"\xc0\x0c"
    )
    with pytest.raises(FormatError, match="backwards"):
        parse_message(data)


def test_names_of_255_octets_are_fine() -> None:
    name = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(name) == 255
    parsed = parse_message(header() + name + b"\x00\x01\x00\x01")
    assert sum(len(label) + 1 for label in parsed.question[0].name) + 1 == 255


def test_too_many_pointers_are_refused() -> None:
    # Each pointer goes back two bytes to the previous one: 100 hops down to a real name.
    body = bytearray(b"\x00")  # the root, at 12
    for index in range(100):  # the pointer at 13 + 2i points at the one before, or the root
        body += struct.pack(">H", 0xC000 | (12 if index == 0 else 11 + 2 * index))
    data = header(counts=(0, 0, 0, 0)) + bytes(body)
    name, after = wire.read_name(data, 13 + 2 * 10)
    assert (name, after) == ((), 13 + 2 * 10 + 2)
    with pytest.raises(FormatError, match="too many"):
        wire.read_name(data, len(data) - 2)


@pytest.mark.parametrize(
    ("counts", "body"),
    [
        pytest.param((2, 0, 0, 0), question(), id="QDCOUNT over"),
        pytest.param((1, 1, 0, 0), question(), id="ANCOUNT over"),
        pytest.param((1, 0, 0, 1), question() + b"\x00\x00", id="record cut off"),
        pytest.param(
            (1, 1, 0, 0),
            question() + b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 9) + bytes(4),
            id="rdlength over",
        ),
        pytest.param((1, 0, 0, 0), question()[:-1], id="question cut off"),
    ],
)
def test_refuses_counts_and_lengths_past_the_end(
    counts: tuple[int, int, int, int], body: bytes
) -> None:
    with pytest.raises(FormatError):
        parse_message(header(counts=counts) + body)


def test_trailing_bytes_are_refused_unless_allowed() -> None:
    data = header() + question() + b"junk"
    with pytest.raises(FormatError, match="4 bytes after"):
        parse_message(data)
    assert parse_message(data, allow_trailing=True).question[0].name == WWW


def test_short_messages_carry_no_header() -> None:
    with pytest.raises(FormatError) as caught:
        parse_message(b"\x12\x34\x00")
    assert caught.value.id is None
    assert caught.value.opcode is None


def test_format_errors_carry_the_opcode() -> None:
    with pytest.raises(FormatError) as caught:
        parse_message(header(flags=wire.NOTIFY << 11 | wire.RD) + b"\x03ww")
    assert caught.value.opcode == wire.NOTIFY
    assert caught.value.flags == wire.NOTIFY << 11 | wire.RD


@pytest.mark.parametrize(
    ("rtype", "rdata"),
    [
        (wire.A, b"\x01\x02\x03"),
        (wire.AAAA, bytes(4)),
        (wire.MX, b"\x00"),
        (wire.SRV, bytes(6)),
        (wire.TXT, b"\x05abc"),
        (wire.NS, b"\x01a\x00\x00"),
        (wire.SOA, b"\x00\x00" + bytes(19)),
    ],
)
def test_refuses_rdata_whose_length_disagrees(rtype: int, rdata: bytes) -> None:
    record = b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, 0, len(rdata)) + rdata
    with pytest.raises(FormatError):
        parse_message(header(counts=(1, 1, 0, 0)) + question() + record)


def test_unknown_types_keep_raw_rdata() -> None:
    record = b"\xc0\x0c" + struct.pack(">HHIH", 99, 1, 5, 3) + b"xyz"
    parsed = parse_message(header(counts=(1, 1, 0, 0)) + question() + record)
    assert parsed.answer == [Record(WWW, 99, 1, 5, b"xyz")]


@pytest.mark.parametrize(
    ("counts", "records"),
    [
        pytest.param((0, 1, 0, 0), b"\x00" + struct.pack(">HHIH", 41, 512, 0, 0), id="in answer"),
        pytest.param((0, 0, 0, 2), (b"\x00" + struct.pack(">HHIH", 41, 512, 0, 0)) * 2, id="twice"),
        pytest.param(
            (0, 0, 0, 1), b"\x01a\x00" + struct.pack(">HHIH", 41, 512, 0, 0), id="owner not root"
        ),
        pytest.param(
            (0, 0, 0, 1),
            b"\x00" + struct.pack(">HHIH", 41, 512, 0, 5) + b"\x00\x0a\x00\x09\x00",
            id="option over",
        ),
    ],
)
def test_refuses_misplaced_or_bad_opt(counts: tuple[int, int, int, int], records: bytes) -> None:
    with pytest.raises(FormatError):
        parse_message(header(counts=counts) + records)


def test_parse_query_reads_header_and_first_question_only() -> None:
    data = header(counts=(1, 0, 0, 1)) + question(b"\x03WwW\x07example\x04test\x00", 28)
    query = wire.parse_query(data + b"anything")
    assert (query.id, query.qdcount, query.arcount) == (0x1234, 1, 1)
    assert query.qname == (b"WwW", b"example", b"test")
    assert (query.qtype, query.qclass, query.end) == (28, 1, len(data))


@pytest.mark.parametrize(
    "body",
    [b"", b"\x03www", b"\xc0\x0c\x00\x01\x00\x01", b"\x00\x00\x01", b"\x50" + bytes(90)],
)
def test_parse_query_refuses_unreadable_questions(body: bytes) -> None:
    with pytest.raises(FormatError) as caught:
        wire.parse_query(header(flags=wire.RD) + body)
    assert caught.value.flags in (None, wire.RD)


def test_parse_opt_at_reads_only_opt() -> None:
    opt = b"\x00" + struct.pack(">HHIH", 41, 1400, 0x00018000, 4) + b"\x00\x0a\x00\x00"
    edns = wire.parse_opt_at(b"xx" + opt, 2)
    assert edns == Edns(1400, 0, 1, 0x8000, ())  # version 1: options left unread
    assert wire.parse_opt_at(b"\x01a\x00" + bytes(10), 0) is None
    with pytest.raises(FormatError):
        wire.parse_opt_at(opt[:8], 0)


# Building


def test_builds_with_compression() -> None:
    message = Message(
        7,
        wire.QR | wire.AA,
        [Question(WWW, wire.A)],
        [
            Record(WWW, wire.CNAME, wire.IN, 60, (b"web", b"example", b"test")),
            Record((b"web", b"example", b"test"), wire.A, wire.IN, 60, "192.0.2.80"),
        ],
    )
    data = message.to_wire()
    # The CNAME's owner points at the question; its target's suffix too; the A's owner at it.
    assert data.count(b"\x07example") == 1
    assert b"\x03web\xc0\x10" in data
    assert parse_message(data) == message


def test_srv_targets_are_not_compressed() -> None:
    srv = Record((b"_sip", b"_tcp", *EXAMPLE), wire.SRV, wire.IN, 60, (1, 2, 3, WWW))
    data = Message(1, 0, [Question(WWW, wire.A)], [srv]).to_wire()
    assert data.endswith(b"\x00\x01\x00\x02\x00\x03" + wire.name_to_wire(WWW))


def test_names_are_compressed_case_insensitively_keeping_the_first_spelling() -> None:
    message = Message(1, 0, [Question((b"WWW", b"Example", b"TEST"), wire.A)])
    message.answer.append(Record(WWW, wire.A, wire.IN, 1, "192.0.2.1"))
    parsed = parse_message(message.to_wire())
    assert parsed.answer[0].name == (b"WWW", b"Example", b"TEST")


def txt_records(count: int, owner: tuple[bytes, ...] = WWW) -> list[Record]:
    return [Record(owner, wire.TXT, wire.IN, 1, (bytes([65 + i]) * 200,)) for i in range(count)]


def test_truncation_drops_whole_rrsets_from_the_answer_and_sets_tc() -> None:
    message = Message(1, wire.QR, [Question(WWW, wire.TXT)], txt_records(3))
    data = message.to_wire(512)
    parsed = parse_message(data)
    assert parsed.flags & wire.TC
    assert parsed.answer == []  # the three are one RRset: all or nothing
    assert len(data) <= 512


def test_truncation_in_additional_alone_does_not_set_tc() -> None:
    other = (b"other", *EXAMPLE)
    message = Message(
        1,
        wire.QR,
        [Question(WWW, wire.A)],
        [Record(WWW, wire.A, wire.IN, 1, "192.0.2.1")],
        additional=txt_records(1) + txt_records(2, other),
        edns=Edns(1232),
    )
    parsed = parse_message(message.to_wire(512))
    assert not parsed.flags & wire.TC
    assert len(parsed.answer) == 1
    assert parsed.additional == txt_records(1)  # the first fits, the second RRset does not
    assert parsed.edns == Edns(1232)  # the OPT survives


def test_truncation_keeps_room_for_the_opt() -> None:
    message = Message(1, wire.QR, [Question(WWW, wire.TXT)], txt_records(2), edns=Edns(512))
    exact = len(message.to_wire())
    assert not parse_message(message.to_wire(exact)).flags & wire.TC
    truncated = message.to_wire(exact - 1)
    parsed = parse_message(truncated)
    assert parsed.flags & wire.TC
    assert parsed.edns == Edns(512)


def test_edns_extended_rcode() -> None:
    message = Message(1, wire.QR, edns=Edns(1232, ext_rcode=1))
    parsed = parse_message(message.to_wire())
    assert parsed.rcode == wire.BADVERS
    assert parsed.opcode == wire.QUERY


# Round trips and robustness

labels = st.binary(min_size=1, max_size=12)
names = st.lists(labels, max_size=5).map(tuple)
addresses4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
addresses6 = st.sampled_from(["2001:db8::1", "::", "fe80::1:2", "2001:db8:0:1:2:3:4:5"])
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
rdatas = st.one_of(
    st.tuples(st.just(wire.A), addresses4),
    st.tuples(st.just(wire.AAAA), addresses6),
    st.tuples(st.sampled_from([wire.NS, wire.CNAME, wire.PTR]), names),
    st.tuples(st.just(wire.MX), st.tuples(u16, names)),
    st.tuples(st.just(wire.SOA), st.tuples(names, names, u32, u32, u32, u32, u32)),
    st.tuples(st.just(wire.TXT), st.lists(st.binary(max_size=40), max_size=3).map(tuple)),
    st.tuples(st.just(wire.SRV), st.tuples(u16, u16, u16, names)),
    st.tuples(st.integers(100, 200), st.binary(max_size=20)),
)
records = st.builds(
    lambda name, typed, ttl: Record(name, typed[0], wire.IN, ttl, typed[1]), names, rdatas, u32
)
messages = st.builds(
    Message,
    u16,
    u16.map(lambda flags: flags & ~wire.TC),
    st.lists(st.builds(Question, names, u16, u16), max_size=2),
    st.lists(records, max_size=4),
    st.lists(records, max_size=3),
    st.lists(records, max_size=3),
    st.one_of(
        st.none(),
        st.builds(
            Edns,
            u16,
            st.integers(0, 255),
            st.integers(0, 255),
            u16,
            st.lists(st.tuples(u16, st.binary(max_size=8)), max_size=2),
        ),
    ),
)


@settings(max_examples=300)
@given(messages)
def test_build_then_parse_is_the_identity(message: Message) -> None:
    assert parse_message(message.to_wire()) == message


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_parsing_arbitrary_bytes_raises_only_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_message(data)
    with contextlib.suppress(FormatError):
        wire.parse_query(data)


@settings(max_examples=300)
@given(messages, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1))
def test_parsing_mutated_messages_raises_only_format_error(
    message: Message, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(message.to_wire())
    for position, value in mutations:
        data[position % len(data)] = value
    with contextlib.suppress(FormatError):
        parse_message(bytes(data))


@settings(max_examples=200)
@given(messages, st.integers(12, 700))
def test_truncated_messages_fit_and_parse(message: Message, limit: int) -> None:
    data = message.to_wire(limit)
    parsed = parse_message(data)
    question_size = 12 + sum(len(wire.name_to_wire(q.name)) + 4 for q in message.question)
    assert len(data) <= max(
        limit, question_size + (len(message.edns.to_wire()) if message.edns else 0)
    )
    assert parsed.edns == message.edns
    if not parsed.flags & wire.TC:
        assert parsed.answer == message.answer
        assert parsed.authority == message.authority


# TCP framing


def test_framing_splits_and_joins() -> None:
    framing = TcpFraming()
    stream = wire.frame(b"first") + wire.frame(b"") + wire.frame(b"second message")
    assert framing.feed(stream[:1]) == []
    assert framing.feed(stream[1:4]) == []
    assert framing.feed(stream[4:12]) == [b"first", b""]
    assert framing.buffered == 3
    assert framing.feed(stream[12:]) == [b"second message"]
    assert framing.buffered == 0


@given(st.lists(st.binary(max_size=600), max_size=6), st.lists(st.integers(1, 50), min_size=1))
def test_framing_any_chunking_gives_the_messages_back(
    messages: list[bytes], chunks: list[int]
) -> None:
    stream = b"".join(wire.frame(message) for message in messages)
    framing = TcpFraming()
    out: list[bytes] = []
    position = 0
    index = 0
    while position < len(stream):
        size = chunks[index % len(chunks)]
        out += framing.feed(memoryview(stream)[position : position + size])
        position += size
        index += 1
    assert out == messages
    assert framing.buffered == 0


def test_framing_bounds_what_it_buffers() -> None:
    framing = TcpFraming(max_message=512)
    assert framing.feed(wire.frame(bytes(512))) == [bytes(512)]
    with pytest.raises(FramingError):
        framing.feed(b"\x02\x01")
    assert issubclass(FramingError, ValueError)


def test_frame_refuses_oversized_messages() -> None:
    with pytest.raises(ValueError):
        wire.frame(bytes(65536))
    assert TcpFraming.frame(b"ab") == b"\x00\x02ab"
