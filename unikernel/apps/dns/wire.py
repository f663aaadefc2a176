"""DNS messages (RFC 1035) with EDNS(0) (RFC 6891), and DNS over TCP's framing (RFC 7766).

Sans-IO: bytes in, objects or bytes out.

Names are tuples of labels (bytes), without the root's empty label: ("www", "example", "test")
as bytes. Case is kept as received; `name_key` gives the lowercase form that names are compared
by (ASCII only, RFC 4343).

Rdata of the types we know is parsed into plain values, the same values zone files compile to:

    A, AAAA          the address as text: "192.0.2.1", "2001:db8::1"
    NS, CNAME, PTR   a name
    MX               (preference, exchange)
    SOA              (mname, rname, serial, refresh, retry, expire, minimum)
    TXT              a tuple of character-strings, each bytes
    SRV              (priority, weight, port, target)

Any other type's rdata stays bytes. The OPT pseudo-record is not a record here but
`Message.edns`.

What the parser refuses, always with FormatError (which carries the header's id and flags when
the 12 bytes were there, so a server can still answer FORMERR):
- a compression pointer that does not point before every byte of the name read so far (that
  rules out loops and forward pointers), or a name with more than MAX_POINTERS of them;
- a label longer than 63, the extended label types 0x40 and 0x80, a name over 255 octets;
- counts or lengths that run past the end of the message; rdata of a known type whose length
  disagrees with its contents; more than one OPT, an OPT outside the additional section or
  with an owner other than the root;
- bytes after the last record, unless the caller passes allow_trailing=True (servers often
  ignore them, NSD among them; a parser of whole messages should not).

Building compresses the owner names, and the names in NS, CNAME, PTR, MX and SOA rdata, never
those in SRV or unknown rdata (RFC 3597 section 4, RFC 2782).
"""

from __future__ import annotations

import socket
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

    Name = tuple[bytes, ...]
    # A name ready to be written: (lowercase suffix, wire label) for each label, leftmost first.
    Pairs = tuple[tuple[Name, bytes], ...]
    # A record's rdata ready to be written: fixed type/class/TTL bytes, then either the
    # rdlength and rdata as bytes, or parts where names (Pairs) are to be compressed.
    Body = bytes | tuple[bytes | Pairs, ...]
    Encoded = tuple[bytes, Body]

# Record types.
A = 1
NS = 2
CNAME = 5
SOA = 6
PTR = 12
HINFO = 13
MX = 15
TXT = 16
AAAA = 28
SRV = 33
DNAME = 39
OPT = 41
DS = 43
RRSIG = 46
NSEC = 47
DNSKEY = 48
NSEC3 = 50
IXFR = 251
AXFR = 252
ANY = 255

TYPE_NAMES = {
    A: "A",
    NS: "NS",
    CNAME: "CNAME",
    SOA: "SOA",
    PTR: "PTR",
    HINFO: "HINFO",
    MX: "MX",
    TXT: "TXT",
    AAAA: "AAAA",
    SRV: "SRV",
    DNAME: "DNAME",
    OPT: "OPT",
    DS: "DS",
    RRSIG: "RRSIG",
    NSEC: "NSEC",
    DNSKEY: "DNSKEY",
    NSEC3: "NSEC3",
    IXFR: "IXFR",
    AXFR: "AXFR",
    ANY: "ANY",
}
TYPES = {text: number for number, text in TYPE_NAMES.items()}

# Classes.
IN = 1
CH = 3
HS = 4
CLASS_ANY = 255
CLASS_NAMES = {IN: "IN", CH: "CH", HS: "HS", CLASS_ANY: "ANY"}

# Response codes; BADVERS needs the extended bits EDNS carries.
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
NOTAUTH = 9
BADVERS = 16
RCODE_NAMES = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
    NOTAUTH: "NOTAUTH",
    BADVERS: "BADVERS",
}

# Opcodes.
QUERY = 0
IQUERY = 1
STATUS = 2
NOTIFY = 4
UPDATE = 5

# Header flags, as bits of the header's second 16-bit word.
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
Z = 0x0040
AD = 0x0020
CD = 0x0010

# EDNS: the DO flag and the options we name.
DO = 0x8000
OPTION_NSID = 3
OPTION_COOKIE = 10
OPTION_EDE = 15  # extended DNS errors, RFC 8914

HEADER_SIZE = 12
MAX_NAME = 255
MAX_LABEL = 63
MAX_POINTERS = 64  # a name of 127 labels could use as many; real ones use one or two
MAX_MESSAGE = 65535
MIN_UDP_PAYLOAD = 512

_HEADER = struct.Struct(">HHHHHH")
_U16 = struct.Struct(">H")
_U16_PAIR = struct.Struct(">HH")
_RR_FIXED = struct.Struct(">HHIH")
_TYPE_CLASS_TTL = struct.Struct(">HHI")
_SOA_NUMBERS = struct.Struct(">IIIII")
_SRV_NUMBERS = struct.Struct(">HHH")


class FormatError(ValueError):
    """A message that cannot be parsed. `id` and `flags` are the header's, or None when the
    message was shorter than a header."""

    def __init__(self, reason: str, id: int | None = None, flags: int | None = None) -> None:
        super().__init__(reason)
        self.id = id
        self.flags = flags

    @property
    def opcode(self) -> int | None:
        return None if self.flags is None else (self.flags >> 11) & 0xF


# Names


def name_key(name: Name) -> Name:
    """The form two names are compared by."""
    return tuple(label.lower() for label in name)


def name_pairs(name: Name) -> Pairs:
    """A name as Writer.name takes it."""
    key = name_key(name)
    return tuple((key[i:], bytes((len(label),)) + label) for i, label in enumerate(name))


def name_to_wire(name: Name) -> bytes:
    """A name uncompressed."""
    return b"".join(bytes((len(label),)) + label for label in name) + b"\0"


def name_from_text(text: str) -> Name:
    """A name from dotted text, relative names taken as absolute; no escapes (zonefile.py
    reads those)."""
    text = text.rstrip(".")
    return tuple(label.encode("ascii") for label in text.split(".")) if text else ()


_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*/")


def name_to_text(name: Name) -> str:
    """Dotted text with a final dot, bytes other than letters, digits, '-', '_', '*' and '/'
    escaped as in zone files."""
    if not name:
        return "."
    return "".join(_label_to_text(label) + "." for label in name)


def _label_to_text(label: bytes) -> str:
    return "".join(
        chr(byte)
        if byte in _PLAIN
        else "\\" + chr(byte)
        if 0x21 <= byte <= 0x7E
        else f"\\{byte:03d}"
        for byte in label
    )


# Messages


class Question:
    __slots__ = ("name", "qclass", "qtype")

    def __init__(self, name: Name, qtype: int, qclass: int = IN) -> None:
        self.name = name
        self.qtype = qtype
        self.qclass = qclass

    def _fields(self) -> tuple[object, ...]:
        return (self.name, self.qtype, self.qclass)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Question) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Question({name_to_text(self.name)} {self.qtype} {self.qclass})"


class Record:
    __slots__ = ("name", "rclass", "rdata", "rtype", "ttl")

    def __init__(self, name: Name, rtype: int, rclass: int, ttl: int, rdata: Any) -> None:
        self.name = name
        self.rtype = rtype
        self.rclass = rclass
        self.ttl = ttl
        self.rdata = rdata

    def _fields(self) -> tuple[object, ...]:
        return (self.name, self.rtype, self.rclass, self.ttl, self.rdata)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        name = name_to_text(self.name)
        return f"Record({name} {self.ttl} {self.rclass} {self.rtype} {self.rdata!r})"


class Edns:
    """The OPT pseudo-record: `ext_rcode` is the upper 8 bits of a 12-bit rcode, `flags` the
    16 flag bits (DO is 0x8000), options (code, data) pairs kept raw."""

    __slots__ = ("ext_rcode", "flags", "options", "payload", "version")

    def __init__(
        self,
        payload: int = 1232,
        ext_rcode: int = 0,
        version: int = 0,
        flags: int = 0,
        options: Sequence[tuple[int, bytes]] = (),
    ) -> None:
        self.payload = payload
        self.ext_rcode = ext_rcode
        self.version = version
        self.flags = flags
        self.options = tuple(options)

    @property
    def do(self) -> bool:
        return bool(self.flags & DO)

    def _fields(self) -> tuple[object, ...]:
        return (self.payload, self.ext_rcode, self.version, self.flags, self.options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Edns) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Edns(payload={self.payload}, ext_rcode={self.ext_rcode}, version={self.version}, "
            f"flags={self.flags:#x}, options={self.options!r})"
        )

    def to_wire(self) -> bytes:
        rdata = b"".join(_U16_PAIR.pack(code, len(data)) + data for code, data in self.options)
        ttl = (self.ext_rcode << 24) | (self.version << 16) | self.flags
        return b"\0" + _RR_FIXED.pack(OPT, self.payload, ttl, len(rdata)) + rdata


class Message:
    """A whole message. `flags` is the header's second word as is: QR, opcode, AA, TC, RD, RA,
    Z, AD, CD and the low 4 bits of the rcode; `rcode` adds the EDNS extended bits."""

    __slots__ = ("additional", "answer", "authority", "edns", "flags", "id", "question")

    def __init__(
        self,
        id: int = 0,
        flags: int = 0,
        question: Iterable[Question] = (),
        answer: Iterable[Record] = (),
        authority: Iterable[Record] = (),
        additional: Iterable[Record] = (),
        edns: Edns | None = None,
    ) -> None:
        self.id = id
        self.flags = flags
        self.question = list(question)
        self.answer = list(answer)
        self.authority = list(authority)
        self.additional = list(additional)
        self.edns = edns

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rcode(self) -> int:
        high = self.edns.ext_rcode << 4 if self.edns is not None else 0
        return high | (self.flags & 0xF)

    def _fields(self) -> tuple[object, ...]:
        return (
            self.id,
            self.flags,
            self.question,
            self.answer,
            self.authority,
            self.additional,
            self.edns,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Message(id={self.id}, flags={self.flags:#06x}, question={self.question!r}, "
            f"answer={self.answer!r}, authority={self.authority!r}, "
            f"additional={self.additional!r}, edns={self.edns!r})"
        )

    def to_wire(self, limit: int | None = None) -> bytes:
        """The message as bytes, at most `limit` long (65535 without one).

        What does not fit goes as whole RRsets (runs of records of one name, type and class),
        the way NSD 4 truncates: sections are written in order; the first answer or authority
        RRset that does not fit is dropped with everything after it, and TC is set; the first
        additional RRset that does not fit is dropped with the rest of the additional section,
        and TC is not set (the answer is complete without it). The OPT record's room is kept
        aside first, so it always goes out. The question is never dropped."""
        limit = MAX_MESSAGE if limit is None else min(limit, MAX_MESSAGE)
        writer = Writer()
        for question in self.question:
            writer.name(name_pairs(question.name))
            writer.buf += _U16_PAIR.pack(question.qtype, question.qclass)
        opt = self.edns.to_wire() if self.edns is not None else b""
        room = limit - len(opt)
        counts = [0, 0, 0]
        truncated = len(writer.buf) > room
        for index, section in enumerate((self.answer, self.authority, self.additional)):
            if truncated:
                break
            for rrset in _runs(section):
                mark = len(writer.buf)
                for record in rrset:
                    encoded = encode_record(record.rtype, record.rclass, record.ttl, record.rdata)
                    writer.record(name_pairs(record.name), encoded)
                if len(writer.buf) > room:
                    writer.rollback(mark)
                    if index < 2:
                        truncated = True
                    break
                counts[index] += len(rrset)
        flags = self.flags | (TC if truncated else 0)
        writer.buf += opt
        extra = 1 if opt else 0
        _HEADER.pack_into(
            writer.buf,
            0,
            self.id,
            flags,
            len(self.question),
            counts[0],
            counts[1],
            counts[2] + extra,
        )
        return bytes(writer.buf)


def _runs(records: Sequence[Record]) -> Iterator[list[Record]]:
    """Consecutive records of one name, type and class."""
    run: list[Record] = []
    for record in records:
        if run and (
            record.rtype != run[0].rtype
            or record.rclass != run[0].rclass
            or name_key(record.name) != name_key(run[0].name)
        ):
            yield run
            run = []
        run.append(record)
    if run:
        yield run


# Building


class Writer:
    """A message being written, with the offsets of the names written so far for compression.
    Offsets past 0x3FFF cannot be pointed at and are not kept."""

    __slots__ = ("buf", "offsets", "registered")

    def __init__(self, header: bytes = bytes(HEADER_SIZE)) -> None:
        self.buf = bytearray(header)
        self.offsets: dict[Name, int] = {}
        self.registered: list[Name] = []

    def name(self, pairs: Pairs) -> None:
        buf = self.buf
        offsets = self.offsets
        for suffix, label in pairs:
            target = offsets.get(suffix)
            if target is not None:
                buf += _U16.pack(0xC000 | target)
                return
            here = len(buf)
            if here < 0x4000:
                offsets[suffix] = here
                self.registered.append(suffix)
            buf += label
        buf.append(0)

    def known(self, suffix: Name, offset: int) -> None:
        """Record that the name `suffix` is at `offset` (the question's name, written as is)."""
        if suffix not in self.offsets and offset < 0x4000:
            self.offsets[suffix] = offset
            self.registered.append(suffix)

    def record(self, owner: Pairs, encoded: Encoded) -> None:
        self.name(owner)
        buf = self.buf
        fixed, body = encoded
        buf += fixed
        if body.__class__ is bytes:
            buf += body
            return
        at = len(buf)
        buf += b"\0\0"
        for part in body:
            if part.__class__ is bytes:
                buf += part
            else:
                self.name(part)  # type: ignore[arg-type]
        _U16.pack_into(buf, at, len(buf) - at - 2)

    def rollback(self, mark: int) -> None:
        """Forget everything from `mark` on, names included, as if never written."""
        del self.buf[mark:]
        registered = self.registered
        offsets = self.offsets
        while registered and offsets[registered[-1]] >= mark:
            del offsets[registered.pop()]


def encode_record(rtype: int, rclass: int, ttl: int, rdata: Any) -> Encoded:
    """A record's type, class, TTL and rdata as Writer.record takes them."""
    fixed = _TYPE_CLASS_TTL.pack(rtype, rclass, ttl)
    parts = _rdata_parts(rtype, rdata)
    if all(part.__class__ is bytes for part in parts):
        rdata_bytes = b"".join(parts)  # type: ignore[arg-type]
        return fixed, _U16.pack(len(rdata_bytes)) + rdata_bytes
    return fixed, tuple(parts)


def encode_rdata(rtype: int, rdata: Any) -> bytes:
    """Rdata uncompressed, as DNSSEC and RFC 3597's generic form would have it."""
    out = []
    for part in _rdata_parts(rtype, rdata):
        if isinstance(part, bytes):
            out.append(part)
        else:
            out.append(name_to_wire(tuple(label[1:] for _, label in part)))
    return b"".join(out)


def _rdata_parts(rtype: int, rdata: Any) -> list[bytes | Pairs]:
    if rtype == A:
        return [socket.inet_pton(socket.AF_INET, rdata)]
    if rtype == AAAA:
        return [socket.inet_pton(socket.AF_INET6, rdata)]
    if rtype in (NS, CNAME, PTR):
        return [name_pairs(rdata)]
    if rtype == MX:
        return [_U16.pack(rdata[0]), name_pairs(rdata[1])]
    if rtype == SOA:
        return [name_pairs(rdata[0]), name_pairs(rdata[1]), _SOA_NUMBERS.pack(*rdata[2:])]
    if rtype == TXT:
        return [b"".join(bytes((len(string),)) + string for string in rdata)]
    if rtype == SRV:
        return [_SRV_NUMBERS.pack(*rdata[:3]) + name_to_wire(rdata[3])]
    return [bytes(rdata)]


# Parsing


def read_name(data: bytes, pos: int) -> tuple[Name, int]:
    """The name at `pos`, and where what follows it starts."""
    labels: list[bytes] = []
    size = len(data)
    end = -1
    floor = pos  # a pointer must go below every byte read so far
    octets = 1
    pointers = 0
    while True:
        if pos >= size:
            raise FormatError("a name runs past the end of the message")
        length = data[pos]
        if length == 0:
            break
        if length >= 0xC0:
            if pos + 1 >= size:
                raise FormatError("a compression pointer is cut off")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= floor:
                raise FormatError("a compression pointer does not point backwards")
            pointers += 1
            if pointers > MAX_POINTERS:
                raise FormatError("a name has too many compression pointers")
            if end < 0:
                end = pos + 2
            pos = floor = target
            continue
        if length > MAX_LABEL:
            raise FormatError(f"label type {length & 0xC0:#x} is not supported")
        octets += length + 1
        if octets > MAX_NAME:
            raise FormatError("a name is longer than 255 octets")
        following = pos + 1 + length
        if following > size:
            raise FormatError("a label runs past the end of the message")
        labels.append(data[pos + 1 : following])
        pos = following
    return tuple(labels), pos + 1 if end < 0 else end


def parse_message(data: bytes | bytearray | memoryview, *, allow_trailing: bool = False) -> Message:
    """A whole message; FormatError if malformed (see the module's docstring)."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise FormatError("shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    try:
        return _parse_body(data, ident, flags, (qdcount, ancount, nscount, arcount), allow_trailing)
    except FormatError as error:
        error.id = ident
        error.flags = flags
        raise
    except (struct.error, ValueError, OSError) as error:  # a slip in the checks above
        raise FormatError(f"malformed: {error}", ident, flags) from error


def _parse_body(
    data: bytes, ident: int, flags: int, counts: tuple[int, int, int, int], allow_trailing: bool
) -> Message:
    size = len(data)
    pos = HEADER_SIZE
    message = Message(ident, flags)
    for _ in range(counts[0]):
        name, pos = read_name(data, pos)
        if pos + 4 > size:
            raise FormatError("a question is cut off")
        qtype, qclass = _U16_PAIR.unpack_from(data, pos)
        pos += 4
        message.question.append(Question(name, qtype, qclass))
    for index, section in enumerate((message.answer, message.authority, message.additional)):
        for _ in range(counts[index + 1]):
            name, pos = read_name(data, pos)
            if pos + 10 > size:
                raise FormatError("a record is cut off")
            rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
            pos += 10
            end = pos + rdlength
            if end > size:
                raise FormatError("rdata runs past the end of the message")
            if rtype == OPT:
                if index != 2 or name or message.edns is not None:
                    raise FormatError("an OPT record out of place")
                message.edns = parse_opt_rdata(data, pos, end, rclass, ttl)
            else:
                section.append(Record(name, rtype, rclass, ttl, parse_rdata(data, pos, end, rtype)))
            pos = end
    if pos != size and not allow_trailing:
        raise FormatError(f"{size - pos} bytes after the last record")
    return message


def parse_rdata(data: bytes, pos: int, end: int, rtype: int) -> Any:
    """The rdata from `pos` to `end` of a record of type `rtype`."""
    length = end - pos
    if rtype == A:
        if length != 4:
            raise FormatError("A rdata is not 4 bytes")
        return socket.inet_ntop(socket.AF_INET, data[pos:end])
    if rtype == AAAA:
        if length != 16:
            raise FormatError("AAAA rdata is not 16 bytes")
        return socket.inet_ntop(socket.AF_INET6, data[pos:end])
    if rtype in (NS, CNAME, PTR):
        name, after = read_name(data, pos)
        _check_end(after, end)
        return name
    if rtype == MX:
        if length < 3:
            raise FormatError("MX rdata too short")
        exchange, after = read_name(data, pos + 2)
        _check_end(after, end)
        return (_U16.unpack_from(data, pos)[0], exchange)
    if rtype == SOA:
        mname, after = read_name(data, pos)
        rname, after = read_name(data, after)
        _check_end(after + 20, end)
        return (mname, rname, *_SOA_NUMBERS.unpack_from(data, after))
    if rtype == TXT:
        strings = []
        while pos < end:
            following = pos + 1 + data[pos]
            if following > end:
                raise FormatError("a TXT string runs past its rdata")
            strings.append(data[pos + 1 : following])
            pos = following
        return tuple(strings)
    if rtype == SRV:
        if length < 7:
            raise FormatError("SRV rdata too short")
        target, after = read_name(data, pos + 6)
        _check_end(after, end)
        return (*_SRV_NUMBERS.unpack_from(data, pos), target)
    return data[pos:end]


def _check_end(after: int, end: int) -> None:
    if after != end:
        raise FormatError("rdata length disagrees with its contents")


def parse_opt_rdata(data: bytes, pos: int, end: int, rclass: int, ttl: int) -> Edns:
    """An OPT record's fields; the options are only checked to tile the rdata exactly."""
    options = []
    while pos < end:
        if pos + 4 > end:
            raise FormatError("an EDNS option header is cut off")
        code, length = _U16_PAIR.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise FormatError("an EDNS option runs past its record")
        options.append((code, data[pos : pos + length]))
        pos += length
    return Edns(rclass, ttl >> 24, (ttl >> 16) & 0xFF, ttl & 0xFFFF, options)


class Query:
    """What a server needs of a query, read without building a Message: the header, the first
    question (its name `qname` as sent, ending at `end`), nothing more."""

    __slots__ = (
        "ancount",
        "arcount",
        "end",
        "flags",
        "id",
        "nscount",
        "qclass",
        "qdcount",
        "qname",
        "qtype",
    )

    def __init__(
        self,
        id: int,
        flags: int,
        counts: tuple[int, int, int, int],
        qname: Name,
        qtype: int,
        qclass: int,
        end: int,
    ) -> None:
        self.id = id
        self.flags = flags
        self.qdcount, self.ancount, self.nscount, self.arcount = counts
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass
        self.end = end


def parse_query(data: bytes) -> Query:
    """The header and the first question, whatever QDCOUNT says; FormatError if there is no
    readable question. A compressed name in the question is refused, as NSD does: nothing
    precedes it to point at."""
    size = len(data)
    if size < HEADER_SIZE:
        raise FormatError("shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    labels = []
    pos = HEADER_SIZE
    while True:
        if pos >= size:
            raise FormatError("the question's name is cut off", ident, flags)
        length = data[pos]
        if length == 0:
            break
        if length > MAX_LABEL:
            raise FormatError("the question's name is compressed or bad", ident, flags)
        following = pos + 1 + length
        labels.append(data[pos + 1 : following])
        pos = following
    if pos - HEADER_SIZE + 1 > MAX_NAME:
        raise FormatError("the question's name is longer than 255 octets", ident, flags)
    if pos + 5 > size:
        raise FormatError("the question is cut off", ident, flags)
    qtype, qclass = _U16_PAIR.unpack_from(data, pos + 1)
    return Query(
        ident,
        flags,
        (qdcount, ancount, nscount, arcount),
        tuple(labels),
        qtype,
        qclass,
        pos + 5,
    )


def parse_opt_at(data: bytes, pos: int) -> Edns | None:
    """The record at `pos` if it is an OPT record (root owner, type 41) that ends the message,
    None if it is some other record; FormatError if cut off or malformed. An OPT of a version
    other than 0 is returned with its options unread: their format is that version's."""
    size = len(data)
    if pos + 11 > size:
        raise FormatError("an additional record is cut off")
    if data[pos] != 0 or _U16.unpack_from(data, pos + 1)[0] != OPT:
        return None
    _, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos + 1)
    if (ttl >> 16) & 0xFF:
        return Edns(rclass, ttl >> 24, (ttl >> 16) & 0xFF, ttl & 0xFFFF)
    end = pos + 11 + rdlength
    if end > size:
        raise FormatError("an OPT record runs past the end of the message")
    return parse_opt_rdata(data, pos + 11, end, rclass, ttl)


# TCP


class FramingError(ValueError):
    """A TCP stream that cannot be DNS: a message longer than the framer takes."""


def frame(message: bytes) -> bytes:
    """A message with its two-byte length, for TCP."""
    if len(message) > MAX_MESSAGE:
        raise ValueError("a DNS message is at most 65535 bytes")
    return _U16.pack(len(message)) + message


class TcpFraming:
    """Splits a TCP stream into messages (RFC 1035 4.2.2): each is preceded by its length in
    two bytes. Keeps at most one partial message, of at most `max_message` bytes."""

    __slots__ = ("_buffer", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self.max_message = max_message

    frame = staticmethod(frame)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The messages `data` completes, in order; FramingError if a length prefix announces
        more than max_message (the stream cannot be resynchronised after that)."""
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= 2:
            length = (buffer[start] << 8) | buffer[start + 1]
            if length > self.max_message:
                raise FramingError(f"a {length}-byte message is over the {self.max_message} limit")
            if len(buffer) - start - 2 < length:
                break
            messages.append(bytes(buffer[start + 2 : start + 2 + length]))
            start += 2 + length
        del buffer[:start]
        return messages
