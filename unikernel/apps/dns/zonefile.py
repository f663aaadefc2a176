"""Zone files (RFC 1035 section 5, master format) compiled into a literal the image loads.

This runs on the build host, when an image is built; the image imports zone.py and reads the
compiled zone, never this module. `compile_zone` reads a zone file and checks it as a zone
server does when it loads one, and returns a CompiledZone: nested tuples of bytes, str and int
only, so that `repr()` of it is Python source that `ast.literal_eval` (or marshal) loads back:

    (origin, rrsets)
    origin  the apex: a name, a tuple of bytes labels
    rrsets  a tuple of (owner, type, class, ttl, rdatas), in the order each RRset first
            appears in the file; rdatas a tuple of rdata values as wire.py parses them (names
            as tuples of labels, A and AAAA as text, ...)

What is read: $ORIGIN and $TTL; @; relative and absolute names; an owner left out (the previous
one); TTL and class left out or in either order; TTLs with units (1h30m, 2d); parentheses over
several lines; ; comments; "quoted strings" with \\" and \\DDD escapes; escapes in names (\\.
is a dot inside a label). Types A, AAAA, NS, SOA, CNAME, MX, TXT, PTR, SRV, class IN.
$INCLUDE and $GENERATE are refused.

What is checked: exactly one SOA, at the apex; NS records at the apex; every owner at or below
the apex; no CNAME beside other data or a second CNAME at a name; one TTL per RRset (RFC 2181
section 5.2). An RR given twice is kept once, as NSD does. Each error is a ZoneFileError naming
the line.

Names keep the case they are written in (the server answers in lowercase, as NSD does, but
that is its business).
"""

from __future__ import annotations

import socket

from unikernel.apps.dns import wire
from unikernel.apps.dns.zone import lowercase_rdata

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from unikernel.apps.dns.wire import Name

    RRsetLiteral = tuple[Name, int, int, int, tuple[Any, ...]]
    CompiledZone = tuple[Name, tuple[RRsetLiteral, ...]]
    Token = tuple[str, bool]  # text as written (escapes kept), whether it was quoted

MAX_TTL = 2**31 - 1  # RFC 2181 section 8
_DIGITS = "0123456789"
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TYPES = {
    "A": wire.A,
    "NS": wire.NS,
    "CNAME": wire.CNAME,
    "SOA": wire.SOA,
    "PTR": wire.PTR,
    "MX": wire.MX,
    "TXT": wire.TXT,
    "AAAA": wire.AAAA,
    "SRV": wire.SRV,
}
_CLASSES = {"IN": wire.IN, "CH": wire.CH, "HS": wire.HS, "CS": 2}


class ZoneFileError(ValueError):
    """What is wrong with a zone file, and at which line (`line`, counting from 1)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class _Record:
    __slots__ = ("line", "owner", "rdata", "rtype", "ttl")

    def __init__(self, line: int, owner: Name, rtype: int, ttl: int, rdata: Any) -> None:
        self.line = line
        self.owner = owner
        self.rtype = rtype
        self.ttl = ttl
        self.rdata = rdata


def compile_zone(text: str, origin: str | None = None) -> CompiledZone:
    """The zone in `text`, whose apex is `origin` (dotted, the final dot optional) or, without
    one, the owner of its SOA record. Relative names before any $ORIGIN are relative to
    `origin`. Raises ZoneFileError."""
    apex = (
        _parse_name(origin if origin.endswith(".") else origin + ".", None, 0) if origin else None
    )
    records = list(_Reader(apex).records(text))
    last_line = text.count("\n") + 1
    soas = [record for record in records if record.rtype == wire.SOA]
    if not soas:
        raise ZoneFileError(last_line, "the zone has no SOA record")
    if apex is None:
        apex = soas[0].owner
    apex_key = wire.name_key(apex)
    return apex, _check(records, apex, apex_key, last_line)


def _check(
    records: list[_Record], apex: Name, apex_key: Name, last_line: int
) -> tuple[RRsetLiteral, ...]:
    depth = len(apex_key)
    rrsets: dict[tuple[Name, int], list[_Record]] = {}
    seen: dict[tuple[Name, int], set[object]] = {}
    soa_count = 0
    for record in records:
        key = wire.name_key(record.owner)
        if key[len(key) - depth :] != apex_key or len(key) < depth:
            raise ZoneFileError(
                record.line, f"{wire.name_to_text(record.owner)} is outside the zone"
            )
        if record.rtype == wire.SOA:
            if key != apex_key:
                raise ZoneFileError(record.line, "an SOA record below the apex")
            soa_count += 1
            if soa_count > 1:
                raise ZoneFileError(record.line, "a second SOA record")
        identity = lowercase_rdata(record.rtype, record.rdata)  # duplicates differ in case only
        slot = (key, record.rtype)
        if identity in seen.setdefault(slot, set()):
            continue
        seen[slot].add(identity)
        present = rrsets.setdefault(slot, [])
        if present and present[0].ttl != record.ttl:
            raise ZoneFileError(
                record.line,
                f"TTL {record.ttl} differs from the {present[0].ttl} of the RRset's other records",
            )
        present.append(record)
    _check_cnames(rrsets)
    if (apex_key, wire.NS) not in rrsets:
        raise ZoneFileError(last_line, "no NS records at the apex")
    return tuple(
        (
            members[0].owner,
            members[0].rtype,
            wire.IN,
            members[0].ttl,
            tuple(r.rdata for r in members),
        )
        for members in rrsets.values()
    )


def _check_cnames(rrsets: dict[tuple[Name, int], list[_Record]]) -> None:
    types: dict[Name, list[int]] = {}
    for key, rtype in rrsets:
        types.setdefault(key, []).append(rtype)
    for key, present in types.items():
        if wire.CNAME not in present:
            continue
        cnames = rrsets[(key, wire.CNAME)]
        if len(cnames) > 1:
            raise ZoneFileError(cnames[1].line, "a second CNAME at one name")
        others = [rrsets[(key, rtype)][0] for rtype in present if rtype != wire.CNAME]
        if others:
            line = max(cnames[0].line, others[0].line)
            raise ZoneFileError(line, "a CNAME and other data at one name")


# Reading


class _Reader:
    """Turns a zone file's entries into records, keeping $ORIGIN, $TTL and the last owner."""

    __slots__ = ("default_ttl", "last_owner", "last_ttl", "origin")

    def __init__(self, origin: Name | None) -> None:
        self.origin = origin
        self.default_ttl: int | None = None
        self.last_ttl: int | None = None
        self.last_owner: Name | None = None

    def records(self, text: str) -> Iterator[_Record]:
        for line, indented, tokens in _entries(text):
            first = tokens[0][0]
            if not indented and first.startswith("$") and not tokens[0][1]:
                self._directive(line, first.upper(), tokens[1:])
                continue
            yield self._record(line, indented, tokens)

    def _directive(self, line: int, directive: str, arguments: list[Token]) -> None:
        if directive == "$ORIGIN":
            if len(arguments) != 1:
                raise ZoneFileError(line, "$ORIGIN takes one name")
            self.origin = _parse_name(arguments[0][0], self.origin, line)
        elif directive == "$TTL":
            if len(arguments) != 1:
                raise ZoneFileError(line, "$TTL takes one TTL")
            ttl = _parse_ttl(arguments[0][0], line)
            if ttl is None:
                raise ZoneFileError(line, f"$TTL {arguments[0][0]!r} is not a TTL")
            self.default_ttl = ttl
        elif directive in ("$INCLUDE", "$GENERATE"):
            raise ZoneFileError(line, f"{directive} is not supported: give the zone as one file")
        else:
            raise ZoneFileError(line, f"unknown directive {directive}")

    def _record(self, line: int, indented: bool, tokens: list[Token]) -> _Record:
        position = 0
        if indented:
            if self.last_owner is None:
                raise ZoneFileError(line, "no owner name, and no previous record to take it from")
            owner = self.last_owner
        else:
            owner = _parse_name(_unquoted(tokens[0], line), self.origin, line)
            position = 1
        ttl: int | None = None
        rclass: int | None = None
        while position < len(tokens):
            text = _unquoted(tokens[position], line)
            if ttl is None and text[:1] in _DIGITS and text:
                ttl = _parse_ttl(text, line)
                if ttl is None:
                    raise ZoneFileError(line, f"{text!r} is not a TTL")
            elif rclass is None and text.upper() in _CLASSES:
                rclass = _CLASSES[text.upper()]
            else:
                break
            position += 1
        if position >= len(tokens):
            raise ZoneFileError(line, "no record type")
        type_text = _unquoted(tokens[position], line).upper()
        if type_text not in _TYPES:
            raise ZoneFileError(line, f"type {type_text} is unknown or not supported")
        if rclass is not None and rclass != wire.IN:
            raise ZoneFileError(line, "only class IN is supported")
        rtype = _TYPES[type_text]
        rdata = _parse_rdata(rtype, type_text, tokens[position + 1 :], self.origin, line)
        if ttl is None:
            ttl = self.default_ttl if self.default_ttl is not None else self.last_ttl
            if ttl is None:
                raise ZoneFileError(line, "no TTL, and no $TTL or earlier TTL to take it from")
        else:
            self.last_ttl = ttl
        self.last_owner = owner
        return _Record(line, owner, rtype, ttl, rdata)


def _entries(text: str) -> Iterator[tuple[int, bool, list[Token]]]:
    """Each entry: the line it starts on, whether that line starts with blanks (the owner left
    out), its tokens. Parentheses join lines into one entry; comments go."""
    tokens: list[Token] = []
    start = 0
    indented = False
    depth = 0
    open_line = 0
    line = 1
    at_line_start = True
    position = 0
    size = len(text)
    while position < size:
        char = text[position]
        if char == "\n":
            line += 1
            position += 1
            if depth == 0:
                if tokens:
                    yield start, indented, tokens
                tokens = []
                at_line_start = True
            continue
        if at_line_start:
            at_line_start = False
            if depth == 0 and not tokens:
                start = line
                indented = char in " \t"
        if char in " \t\r":
            position += 1
        elif char == ";":
            while position < size and text[position] != "\n":
                position += 1
        elif char == "(":
            if depth == 0:
                open_line = line
            depth += 1
            position += 1
        elif char == ")":
            if depth == 0:
                raise ZoneFileError(line, "')' without '('")
            depth -= 1
            position += 1
        elif char == '"':
            end = position + 1
            while end < size and text[end] != '"':
                if text[end] == "\n":
                    raise ZoneFileError(line, "a quoted string is not closed on its line")
                end += 2 if text[end] == "\\" else 1
            if end >= size:
                raise ZoneFileError(line, "a quoted string is not closed")
            tokens.append((text[position + 1 : end], True))
            position = end + 1
        else:
            end = position
            while end < size and text[end] not in ' \t\r\n;()"':
                end += 2 if text[end] == "\\" else 1
            tokens.append((text[position:end], False))
            position = end
    if depth:
        raise ZoneFileError(open_line, "'(' is never closed")
    if tokens:
        yield start, indented, tokens


def _unquoted(token: Token, line: int) -> str:
    if token[1]:
        raise ZoneFileError(line, f"a quoted string {token[0]!r} where a word was expected")
    return token[0]


def _unescape(text: str, line: int) -> bytes:
    """Text with \\X and \\DDD escapes as bytes."""
    out = bytearray()
    position = 0
    while position < len(text):
        char = text[position]
        if char != "\\":
            out += char.encode("utf-8")
            position += 1
            continue
        digits = text[position + 1 : position + 4]
        if len(digits) == 3 and all(digit in _DIGITS for digit in digits):
            value = int(digits)
            if value > 255:
                raise ZoneFileError(line, f"escape \\{digits} is over 255")
            out.append(value)
            position += 4
        elif position + 1 < len(text):
            out += text[position + 1].encode("utf-8")
            position += 2
        else:
            raise ZoneFileError(line, "a backslash at the end of a word")
    return bytes(out)


def _parse_name(text: str, origin: Name | None, line: int) -> Name:
    if text == "@":
        if origin is None:
            raise ZoneFileError(line, "@ with no origin")
        return origin
    if text == ".":
        return ()
    labels: list[bytes] = []
    current: list[str] = []
    absolute = False
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            step = 4 if text[position + 1 : position + 4].isdigit() else 2
            current.append(text[position : position + step])
            position += step
            continue
        position += 1
        if char != ".":
            current.append(char)
            continue
        if not current:
            raise ZoneFileError(line, f"an empty label in {text!r}")
        labels.append(_unescape("".join(current), line))
        current = []
        absolute = position == len(text)
    if current:
        labels.append(_unescape("".join(current), line))
    for label in labels:
        if len(label) > wire.MAX_LABEL:
            raise ZoneFileError(line, f"a label longer than 63 octets in {text!r}")
    if not absolute:
        if origin is None:
            raise ZoneFileError(line, f"relative name {text!r} with no $ORIGIN")
        labels.extend(origin)
    if sum(len(label) + 1 for label in labels) + 1 > wire.MAX_NAME:
        raise ZoneFileError(line, f"{text!r} is longer than 255 octets")
    return tuple(labels)


def _parse_ttl(text: str, line: int) -> int | None:
    """Seconds, from digits or units (1h30m); None if `text` is not a TTL at all."""
    total = 0
    number = ""
    for char in text.lower():
        if char in _DIGITS:
            number += char
        elif char in _TTL_UNITS and number:
            total += int(number) * _TTL_UNITS[char]
            number = ""
        else:
            return None
    if not text:
        return None
    if number:
        total += int(number)
    if total > MAX_TTL:
        raise ZoneFileError(line, f"TTL {text} is over 2^31 - 1")
    return total


def _parse_number(text: str, bits: int, what: str, line: int) -> int:
    if not text or any(char not in _DIGITS for char in text):
        raise ZoneFileError(line, f"{what} {text!r} is not a number")
    value = int(text)
    if value >= 1 << bits:
        raise ZoneFileError(line, f"{what} {value} does not fit in {bits} bits")
    return value


_FIELDS = {wire.A: 1, wire.AAAA: 1, wire.NS: 1, wire.CNAME: 1, wire.PTR: 1, wire.MX: 2}
_FIELDS.update({wire.SOA: 7, wire.SRV: 4})


def _parse_rdata(
    rtype: int, type_text: str, tokens: list[Token], origin: Name | None, line: int
) -> Any:
    if rtype == wire.TXT:
        if not tokens:
            raise ZoneFileError(line, "TXT needs at least one string")
        strings = tuple(_unescape(text, line) for text, _ in tokens)
        for string in strings:
            if len(string) > 255:
                raise ZoneFileError(line, "a TXT string longer than 255 octets")
        return strings
    if len(tokens) != _FIELDS[rtype]:
        raise ZoneFileError(line, f"{type_text} takes {_FIELDS[rtype]} fields, not {len(tokens)}")
    words = [_unquoted(token, line) for token in tokens]
    if rtype in (wire.A, wire.AAAA):
        family = socket.AF_INET if rtype == wire.A else socket.AF_INET6
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, words[0]))
        except (OSError, ValueError):
            raise ZoneFileError(line, f"{words[0]!r} is not an {type_text} address") from None
    if rtype in (wire.NS, wire.CNAME, wire.PTR):
        return _parse_name(words[0], origin, line)
    if rtype == wire.MX:
        return (
            _parse_number(words[0], 16, "MX preference", line),
            _parse_name(words[1], origin, line),
        )
    if rtype == wire.SRV:
        return (
            _parse_number(words[0], 16, "SRV priority", line),
            _parse_number(words[1], 16, "SRV weight", line),
            _parse_number(words[2], 16, "SRV port", line),
            _parse_name(words[3], origin, line),
        )
    timers = []
    for word, what in zip(words[3:], ("refresh", "retry", "expire", "minimum"), strict=True):
        value = _parse_ttl(word, line)
        if value is None:
            raise ZoneFileError(line, f"SOA {what} {word!r} is not a time")
        timers.append(value)
    return (
        _parse_name(words[0], origin, line),
        _parse_name(words[1], origin, line),
        _parse_number(words[2], 32, "SOA serial", line),
        *timers,
    )


def compile_data(name: str, content: bytes) -> CompiledZone:
    """The image build's compiler for a Data folder of zone files (unikernel.devices.Data):
    each file becomes its compiled zone, its apex the owner of its SOA record."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ZoneFileError(1, f"{name} is not UTF-8 text: {error}") from None
    return compile_zone(text)
