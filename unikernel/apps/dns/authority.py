"""The authoritative server: a query's bytes in, the response's bytes out (or None: no answer).

The answers are NSD 4.6's, byte for byte where we could make them so, because NSD is what the
project compares the server with (tests/unikernel/apps/dns/conformance.py). So, as NSD does:

- Responses are not minimal: a positive answer carries the zone's NS RRset in the authority
  section, and the additional section the addresses of the NS, MX and SRV targets in the zone
  (A before AAAA; glue only for NS). ANY answers one RRset (RFC 8482): the first of A, AAAA,
  SOA, MX, PTR at the name, else the last other one. ANY, DS and DNSKEY answers get no NS.
- NXDOMAIN and NODATA carry the SOA with TTL min(SOA TTL, SOA minimum) (RFC 2308).
- CNAMEs are followed within the zones we serve, until a name outside them or a CNAME met
  twice; the rcode is the last name's (NXDOMAIN after a CNAME to a missing name, RFC 6604).
- Below a delegation, a referral: AA clear (set if reached through a CNAME), the delegation's
  NS RRset in authority, glue in additional. DS at the delegation point is answered from the
  parent side: NODATA with AA.
- Wildcards as RFC 4592 has them: from the closest encloser, never for a name that exists
  (an empty non-terminal included), the query name as owner.
- Names outside every zone: REFUSED without AA. Class ANY: answers without AA, no SOA or NS
  in authority. Class CH: REFUSED (we hide id.server and version.bind, as NSD does with
  hide-identity and hide-version). Other classes: REFUSED without the question.
- Malformed queries (QDCOUNT other than 1, records in answer or authority, an additional
  record that is not one OPT, a nonzero rcode, an unreadable question): FORMERR, the header
  alone, RD and the opcode kept (both cleared when QDCOUNT is wrong, as NSD does). Opcodes
  other than QUERY: NOTIMP, the header alone, the query's flags kept (NOTIFY: REFUSED for a zone
  we serve, NXDOMAIN otherwise: we take no notifies). Bytes after the query are ignored.
- EDNS: an OPT in the response when the query had one, with our payload size and the query's
  DO bit, and an extended error (RFC 8914) where NSD gives one (REFUSED: 20 not authoritative,
  18 prohibited, 21 not supported). EDNS version above 0: BADVERS. A response to a UDP query is
  at most min(max(client's payload, 512), max_udp_payload) bytes, 512 without EDNS; over TCP
  65535.
- Truncation, NSD's encode_answer: an answer or authority RRset that does not fit is dropped
  with all after it and TC set; the optional NS RRset and the additional RRsets are dropped
  without TC (and nothing is tried after the section where that happened), except that a
  referral with no A glue left gets TC. Over UDP they go too if the response would pass 1232
  bytes.
- AXFR over UDP: NOTIMP. Zone transfers otherwise: REFUSED for a zone we serve (none is
  allowed), NOTAUTH for other names.

With memoise=True responses are cached, keyed by what they depend on, and a repeated query is
answered by the cached bytes with its own ID in (the MirageOS paper's memoised responses).
"""

from __future__ import annotations

import struct

from unikernel.apps.dns import wire
from unikernel.apps.dns.wire import (
    AA,
    AD,
    CLASS_ANY,
    CNAME,
    DO,
    DS,
    IN,
    NS,
    QR,
    RD,
    TC,
    FormatError,
    Writer,
)
from unikernel.apps.dns.zone import (
    ADDITIONAL_A,
    ADDITIONAL_AAAA,
    ANSWER,
    AUTHORITY,
    OPTIONAL_AUTHORITY,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from unikernel.apps.dns.wire import Edns, Name, Pairs, Query
    from unikernel.apps.dns.zone import Node, RRset, Zone

    Entry = list[Any]  # [section, owner Pairs, owner key, RRset], NSD's answer_type slot

# Extended DNS error codes (RFC 8914) NSD gives.
EDE_PROHIBITED = 18
EDE_NOT_AUTHORITATIVE = 20
EDE_NOT_SUPPORTED = 21

MINIMAL_RESPONSE_SIZE = 1232  # NSD's IPV4_MINIMAL_RESPONSE_SIZE: optional RRsets stop there
MAX_CNAMES = 64  # NSD has no bound but its answer's size; a chain this long is a broken zone
MAX_IXFR_AUTHORITY = 64  # records an IXFR query may carry, as NSD allows
DEFAULT_MEMO_ENTRIES = 16384

_HEADER = struct.Struct(">HHHHHH")
_OPT = struct.Struct(">BHHIH")
_EDE = struct.Struct(">HHH")
_CHAOS_NAMES = frozenset(
    {(b"id", b"server"), (b"hostname", b"bind"), (b"version", b"server"), (b"version", b"bind")}
)
_ANY_FIRST = frozenset({wire.A, wire.AAAA, wire.SOA, wire.MX, wire.PTR})
_ANY_LAST = frozenset({wire.DNSKEY, wire.RRSIG, wire.NSEC})
_NO_NS = frozenset({wire.DNSKEY, wire.DS, wire.ANY})


class _Answer:
    """One answer in the making: the RRsets chosen, by section, and the query's state."""

    __slots__ = ("aa", "cnames", "delegation", "ede", "entries", "qclass", "qtype", "rcode")

    def __init__(self, qtype: int, qclass: int) -> None:
        self.qtype = qtype
        self.qclass = qclass
        self.entries: list[Entry] = []
        self.rcode = wire.NOERROR
        self.ede = -1
        self.aa = False
        self.cnames = 0
        self.delegation = False


class Authority:
    """Answers for `zones`. See the module's docstring for what the answers are."""

    def __init__(
        self,
        zones: Sequence[Zone],
        memoise: bool = False,
        max_udp_payload: int = 1232,
        memo_entries: int = DEFAULT_MEMO_ENTRIES,
    ) -> None:
        if not wire.MIN_UDP_PAYLOAD <= max_udp_payload <= wire.MAX_MESSAGE:
            raise ValueError("max_udp_payload must be from 512 to 65535")
        self._zones = {zone.apex: zone for zone in zones}
        self.max_udp_payload = max_udp_payload
        self._memo: dict[tuple[object, ...], bytes] | None = {} if memoise else None
        self._memo_entries = memo_entries
        # In front of the memo, the queries themselves: a client repeating a query sends the
        # same bytes but the ID, and the answer depends on nothing else, so those bytes are the
        # cheapest key (no parsing at all); by transport, which changes the size limit.
        self._repeated: tuple[dict[bytes, bytes], dict[bytes, bytes]] | None = (
            ({}, {}) if memoise else None
        )

    @property
    def memoised(self) -> int:
        """How many responses are cached."""
        return len(self._memo) if self._memo is not None else 0

    def respond(self, query: bytes | bytearray | memoryview, transport: str) -> bytes | None:
        """The response to `query`, received over `transport` ("udp" or "tcp"), or None when
        there is none to send (a response, or fewer bytes than a header)."""
        if transport == "udp":
            tcp = False
        elif transport == "tcp":
            tcp = True
        else:
            raise ValueError(f"transport {transport!r} is neither 'udp' nor 'tcp'")
        data = query if query.__class__ is bytes else bytes(query)
        repeated = self._repeated
        if repeated is not None:
            known = repeated[tcp].get(data[2:])
            if known is not None:
                return data[:2] + known
        if len(data) < wire.HEADER_SIZE:
            return None
        flags = (data[2] << 8) | data[3]
        if flags & QR:
            return None
        opcode = (flags >> 11) & 0xF
        if opcode not in (wire.QUERY, wire.NOTIFY):
            return _error(data, flags, wire.NOTIMP)
        if flags & 0xF:
            return _formerr(data, flags)
        try:
            parsed = wire.parse_query(data)
        except FormatError:
            return _formerr(data, flags)
        if opcode == wire.NOTIFY:
            served = wire.name_key(parsed.qname) in self._zones
            return _error(data, flags, wire.REFUSED if served else wire.NXDOMAIN)
        if parsed.qdcount != 1:
            return _formerr(data, flags if _only_opt(data, parsed) else 0)
        if parsed.ancount or (parsed.nscount and parsed.qtype != wire.IXFR):
            return _formerr(data, flags)
        try:
            edns = _read_additional(data, parsed)
        except FormatError:
            return _formerr(data, flags)
        if edns is not None and edns.version:
            return self._badvers(data, parsed)
        if tcp:
            limit = wire.MAX_MESSAGE
        elif edns is None:
            limit = wire.MIN_UDP_PAYLOAD
        else:
            limit = max(wire.MIN_UDP_PAYLOAD, min(edns.payload, self.max_udp_payload))
        do = edns.flags & DO if edns is not None else -1
        memo = self._memo
        if memo is None:
            return self._respond(data, parsed, flags & RD, do, limit, tcp)
        # The response echoes the question as asked, so the key has it in its exact case.
        # CD is not in it: NSD clears CD in responses, so it changes nothing.
        key = (tcp, limit, do, flags & RD, data[wire.HEADER_SIZE : parsed.end])
        cached = memo.get(key)
        if cached is not None:
            response = data[:2] + cached[2:]
        else:
            response = self._respond(data, parsed, flags & RD, do, limit, tcp)
            if len(memo) >= self._memo_entries:
                del memo[next(iter(memo))]
            memo[key] = response
        assert repeated is not None
        queries = repeated[tcp]
        if len(queries) >= self._memo_entries:
            del queries[next(iter(queries))]
        queries[data[2:]] = response[2:]
        return response

    def _respond(self, data: bytes, query: Query, rd: int, do: int, limit: int, tcp: bool) -> bytes:
        """The response to a well-formed query; `do` is -1 without EDNS, else its DO bit."""
        question = data[wire.HEADER_SIZE : query.end]
        qclass = query.qclass
        qtype = query.qtype
        key = wire.name_key(query.qname)
        if qclass == wire.CH:
            hidden = key in _CHAOS_NAMES and qtype in (wire.TXT, wire.ANY)
            ede = EDE_PROHIBITED if hidden else EDE_NOT_SUPPORTED
            return _bare(query, QR | rd | wire.REFUSED, question, do, ede, self.max_udp_payload)
        if qclass not in (IN, CLASS_ANY):
            # NSD's query_error: the question goes too.
            return _bare(
                query, QR | rd | wire.REFUSED, b"", do, EDE_NOT_SUPPORTED, self.max_udp_payload
            )
        if qtype in (wire.AXFR, wire.IXFR):
            if qtype == wire.AXFR and not tcp:
                return _bare(query, QR | rd | wire.NOTIMP, question, do, -1, self.max_udp_payload)
            if key in self._zones:
                return _bare(
                    query,
                    QR | rd | wire.REFUSED,
                    question,
                    do,
                    EDE_PROHIBITED,
                    self.max_udp_payload,
                )
            return _bare(query, QR | rd | wire.NOTAUTH, question, do, -1, self.max_udp_payload)
        answer = _Answer(qtype, qclass)
        writer = Writer(bytes(wire.HEADER_SIZE) + question)
        # Names in the answer compress against the question, as NSD's do.
        offset = wire.HEADER_SIZE
        pairs = []
        for index, label in enumerate(query.qname):
            suffix = key[index:]
            writer.known(suffix, offset)
            following = offset + len(label) + 1
            pairs.append((suffix, data[offset:following]))
            offset = following
        self._lookup(answer, key, tuple(pairs))
        return self._encode(query, answer, writer, rd, do, limit, tcp)

    def _badvers(self, data: bytes, query: Query) -> bytes:
        """NSD keeps the query's flags (but AD) and question, and says BADVERS in the OPT."""
        flags = ((data[2] << 8) | data[3] | QR) & ~AD & ~0xF
        header = _HEADER.pack(query.id, flags, 1, 0, 0, 1)
        opt = _OPT.pack(0, wire.OPT, self.max_udp_payload, (wire.BADVERS >> 4) << 24, 0)
        return header + data[wire.HEADER_SIZE : query.end] + opt

    # Choosing the RRsets: NSD's answer_lookup_zone, answer_authoritative, answer_domain.

    def _zone_of(self, key: Name) -> Zone | None:
        zones = self._zones
        for index in range(len(key) + 1):
            zone = zones.get(key[index:])
            if zone is not None:
                return zone
        return None

    def _parent_of(self, zone: Zone) -> Zone | None:
        """The zone we serve that delegates to `zone`, if any."""
        apex = zone.apex
        for index in range(1, len(apex) + 1):
            parent = self._zones.get(apex[index:])
            if parent is not None:
                node = parent.nodes.get(apex)
                if node is not None and NS in node.rrsets:
                    return parent
        return None

    def _lookup(self, answer: _Answer, key: Name, owner: Pairs) -> None:
        zone = self._zone_of(key)
        if zone is None:
            if not answer.cnames:
                answer.rcode = wire.REFUSED
                answer.ede = EDE_NOT_AUTHORITATIVE
            return
        node = zone.nodes.get(key)
        encloser = node if node is not None else zone.closest_encloser(key)
        aa = answer.qclass != CLASS_ANY
        if node is zone.apex_node and answer.qtype == DS:
            parent = self._parent_of(zone)
            if parent is None:
                answer.aa = aa
                self._negative(answer, zone)
                return
            zone = parent
            node = encloser = parent.nodes[key]
        cut = encloser.cut
        answer.delegation = cut is not None
        if cut is None or (node is cut and answer.qtype == DS):
            answer.aa = aa
            if node is not None:
                self._domain(answer, zone, node, node.name, node.key)
            elif encloser.wildcard is not None:
                self._domain(answer, zone, encloser.wildcard, owner, key)
            else:
                answer.rcode = wire.NXDOMAIN
                self._negative(answer, zone)
        else:
            answer.aa = answer.cnames > 0
            self._add(answer, AUTHORITY, cut.name, cut.key, cut.rrsets[NS])

    def _domain(self, answer: _Answer, zone: Zone, node: Node, owner: Pairs, key: Name) -> None:
        qtype = answer.qtype
        rrsets = node.rrsets
        if qtype == wire.ANY:
            first = later = last = None
            for rrset in rrsets.values():
                if rrset.rtype in _ANY_FIRST:
                    first = rrset
                    break
                if rrset.rtype in _ANY_LAST:
                    last = rrset
                else:
                    later = rrset
            chosen = first or later or last
            if chosen is None:
                self._negative(answer, zone)
                return
            self._add(answer, ANSWER, owner, key, chosen)
        else:
            found = rrsets.get(qtype)
            if found is not None:
                self._add(answer, ANSWER, owner, key, found)
            else:
                cname = rrsets.get(CNAME)
                if cname is None:
                    self._negative(answer, zone)
                    return
                # Not added means met before: a loop, so stop.
                if self._add(answer, ANSWER, owner, key, cname) and answer.cnames < MAX_CNAMES:
                    answer.cnames += 1
                    assert cname.target is not None
                    self._lookup(answer, *cname.target)
                return
        if answer.qclass != CLASS_ANY and qtype not in _NO_NS:
            self._add(answer, OPTIONAL_AUTHORITY, zone.apex_node.name, zone.apex, zone.ns)

    def _negative(self, answer: _Answer, zone: Zone) -> None:
        if answer.qclass != CLASS_ANY:
            self._add(answer, AUTHORITY, zone.apex_node.name, zone.apex, zone.negative_soa)

    def _add(self, answer: _Answer, section: int, owner: Pairs, key: Name, rrset: RRset) -> bool:
        """NSD's add_rrset: an RRset goes in once, in the first section it is asked for; what
        it brings to the additional section goes in even when it was there already."""
        added = _place(answer.entries, section, owner, key, rrset)
        for extra in rrset.additional:
            _place(answer.entries, *extra)
        return added

    # Writing: NSD's encode_answer.

    def _encode(
        self,
        query: Query,
        answer: _Answer,
        writer: Writer,
        rd: int,
        do: int,
        limit: int,
        tcp: bool,
    ) -> bytes:
        buf = writer.buf
        room = limit - (11 if do >= 0 else 0)
        counts = [0, 0, 0, 0, 0, 0]
        truncated = False
        done = False
        entries = answer.entries
        for section in (ANSWER, AUTHORITY, OPTIONAL_AUTHORITY, ADDITIONAL_A, ADDITIONAL_AAAA):
            for entry in entries:
                if entry[0] != section:
                    continue
                owner: Pairs = entry[1]
                rrset: RRset = entry[3]
                mark = len(buf)
                added = 0
                for encoded in rrset.encoded:
                    record_mark = len(buf)
                    writer.record(owner, encoded)
                    if len(buf) > room:
                        writer.rollback(record_mark)
                        break
                    added += 1
                complete = added == len(rrset.encoded)
                if section >= OPTIONAL_AUTHORITY:
                    if not tcp and (not complete or len(buf) > MINIMAL_RESPONSE_SIZE):
                        writer.rollback(mark)
                        added = 0
                        done = True
                elif not complete:
                    writer.rollback(mark)
                    added = 0
                    truncated = True
                    break
                counts[section] += added
            if truncated:
                break
            if done:
                if section == ADDITIONAL_A and not counts[ADDITIONAL_A] and answer.delegation:
                    truncated = True
                break
        flags = QR | rd | answer.rcode
        if answer.aa:
            flags |= AA
        if truncated:
            flags |= TC
        additional = counts[ADDITIONAL_A] + counts[ADDITIONAL_AAAA]
        if do >= 0:
            buf += _opt(self.max_udp_payload, do, answer.ede)
            additional += 1
        _HEADER.pack_into(
            buf,
            0,
            query.id,
            flags,
            1,
            counts[ANSWER],
            counts[AUTHORITY] + counts[OPTIONAL_AUTHORITY],
            additional,
        )
        return bytes(buf)


def _place(entries: list[Entry], section: int, owner: Pairs, key: Name, rrset: RRset) -> bool:
    """NSD's answer_add_rrset: False if the RRset is in already (moved up if asked for in an
    earlier section)."""
    for entry in entries:
        if entry[3] is rrset and entry[2] == key:
            if section < entry[0]:
                entry[0] = section
                return True
            return False
    entries.append([section, owner, key, rrset])
    return True


def _read_additional(data: bytes, query: Query) -> Edns | None:
    """The query's OPT record; FormatError for anything else in the additional section (we do
    not do TSIG). An IXFR's authority records (the client's SOA) are stepped over."""
    position = query.end
    if query.nscount > MAX_IXFR_AUTHORITY:
        raise FormatError("too many authority records")
    for _ in range(query.nscount):
        _, position = wire.read_name(data, position)
        if position + 10 > len(data):
            raise FormatError("a record is cut off")
        position += 10 + ((data[position + 8] << 8) | data[position + 9])
        if position > len(data):
            raise FormatError("a record is cut off")
    if not query.arcount:
        return None
    if query.arcount > 1:
        raise FormatError("more than one additional record")
    edns = wire.parse_opt_at(data, position)
    if edns is None:
        raise FormatError("an additional record other than OPT")
    return edns


def _only_opt(data: bytes, query: Query) -> bool:
    """A query with no question and only an OPT record, which NSD answers FORMERR with the
    query's RD and opcode; other QDCOUNT errors it answers with both cleared."""
    if query.qdcount or query.ancount or query.nscount or query.arcount != 1:
        return False
    try:
        edns = wire.parse_opt_at(data, wire.HEADER_SIZE)
    except FormatError:
        return False
    return edns is not None and edns.version == 0


def _formerr(data: bytes, flags: int) -> bytes:
    """NSD's query_formerr: the header alone, keeping the ID, the opcode and RD."""
    kept = flags & (RD | 0x7800)
    return data[:2] + _HEADER.pack(0, QR | kept | wire.FORMERR, 0, 0, 0, 0)[2:]


def _error(data: bytes, flags: int, rcode: int) -> bytes:
    """NSD's query_error before a response is prepared: the header alone, with the query's
    flags but AD."""
    flags = ((flags | QR) & ~AD & ~0xF) | rcode
    return data[:2] + _HEADER.pack(0, flags, 0, 0, 0, 0)[2:]


def _bare(query: Query, flags: int, question: bytes, do: int, ede: int, payload: int) -> bytes:
    """A response with no records: the question if given, and the OPT if the query had one."""
    qdcount = 1 if question else 0
    opt = _opt(payload, do, ede) if do >= 0 else b""
    header = _HEADER.pack(query.id, flags, qdcount, 0, 0, 1 if opt else 0)
    return header + question + opt


def _opt(payload: int, do: int, ede: int) -> bytes:
    option = _EDE.pack(wire.OPTION_EDE, 2, ede) if ede >= 0 else b""
    return _OPT.pack(0, wire.OPT, payload, DO if do else 0, len(option)) + option
