"""authority.py: the answers, as NSD 4 gives them (test_conformance_nsd.py asks NSD itself)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unikernel.apps.dns.testzone import ORIGIN, ZONE_TEXT
from unikernel.apps.dns import wire
from unikernel.apps.dns.authority import Authority
from unikernel.apps.dns.wire import Edns, Message, Question, parse_message
from unikernel.apps.dns.zone import Zone
from unikernel.apps.dns.zonefile import compile_zone

ZONE = Zone.from_compiled(compile_zone(ZONE_TEXT, ORIGIN))
OTHER_ZONE = Zone.from_compiled(
    compile_zone(
        "$TTL 60\n@ SOA ns.other.example. h.other.example. 1 2 3 4 5\n@ NS ns.other.example.\n"
        "www A 192.0.2.99\n",
        "other.example",
    )
)
CHILD_ZONE = Zone.from_compiled(
    compile_zone(
        "$TTL 60\n@ SOA ns h 1 2 3 4 30\n@ NS ns\nns A 192.0.2.100\nwww A 192.0.2.101\n",
        "sub.example.test",
    )
)


def name(text: str) -> tuple[bytes, ...]:
    return wire.name_from_text(text)


def query(
    qname: str,
    qtype: int = wire.A,
    *,
    qclass: int = wire.IN,
    flags: int = 0,
    edns: Edns | None = None,
    ident: int = 0xBEEF,
) -> bytes:
    return Message(ident, flags, [Question(name(qname), qtype, qclass)], edns=edns).to_wire()


def ask(
    qname: str,
    qtype: int = wire.A,
    *,
    authority: Authority | None = None,
    transport: str = "udp",
    **options: object,
) -> Message:
    authority = authority or Authority([ZONE])
    response = authority.respond(query(qname, qtype, **options), transport)  # type: ignore[arg-type]
    assert response is not None
    return parse_message(response)


def texts(records: list[wire.Record]) -> list[str]:
    out = []
    for record in records:
        rdata = record.rdata
        if isinstance(rdata, tuple) and rdata and isinstance(rdata[0], bytes):
            rdata = wire.name_to_text(rdata) if record.rtype != wire.TXT else rdata
        out.append(
            f"{wire.name_to_text(record.name)} {record.ttl} {wire.TYPE_NAMES[record.rtype]} {rdata}"
        )
    return out


def test_a_positive_answer() -> None:
    response = ask("web.example.test", flags=wire.RD | wire.CD | wire.AD)
    assert response.id == 0xBEEF
    assert response.flags == wire.QR | wire.AA | wire.RD  # RA, AD and CD clear
    assert response.question == [Question(name("web.example.test"), wire.A)]
    assert texts(response.answer) == ["web.example.test. 3600 A 192.0.2.80"]
    # Not minimal, as NSD: the apex NS, and their addresses
    assert texts(response.authority) == [
        "example.test. 3600 NS ns1.example.test.",
        "example.test. 3600 NS ns2.example.test.",
    ]
    assert texts(response.additional) == [
        "ns1.example.test. 3600 A 192.0.2.53",
        "ns2.example.test. 3600 A 192.0.2.54",
        "ns1.example.test. 3600 AAAA 2001:db8::53",
    ]
    assert response.edns is None


def test_nxdomain_carries_the_soa_with_the_negative_ttl() -> None:
    response = ask("nothing.example.test")
    assert response.rcode == wire.NXDOMAIN
    assert response.flags & wire.AA
    assert response.answer == []
    assert [(r.rtype, r.ttl) for r in response.authority] == [(wire.SOA, 300)]


def test_nodata() -> None:
    response = ask("web.example.test", wire.MX)
    assert response.rcode == wire.NOERROR
    assert response.answer == []
    assert [(r.rtype, r.ttl) for r in response.authority] == [(wire.SOA, 300)]


def test_empty_non_terminals_are_nodata() -> None:
    response = ask("b.ent.example.test")
    assert (response.rcode, response.answer) == (wire.NOERROR, [])
    assert response.authority[0].rtype == wire.SOA


def test_cname_chains_are_followed() -> None:
    response = ask("alias1.example.test")
    assert texts(response.answer) == [
        "alias1.example.test. 3600 CNAME alias2.example.test.",
        "alias2.example.test. 3600 CNAME www.example.test.",
        "www.example.test. 3600 CNAME web.example.test.",
        "web.example.test. 3600 A 192.0.2.80",
    ]
    assert response.flags & wire.AA


def test_cname_outside_stops_there() -> None:
    response = ask("ext.example.test")
    assert texts(response.answer) == ["ext.example.test. 3600 CNAME www.example.net."]
    assert (response.rcode, response.authority) == (wire.NOERROR, [])


def test_cname_into_another_zone_we_serve_is_followed() -> None:
    text = ZONE_TEXT + "toother CNAME www.other.example.\n"
    zone = Zone.from_compiled(compile_zone(text, ORIGIN))
    response = ask("toother.example.test", authority=Authority([zone, OTHER_ZONE]))
    assert texts(response.answer)[-1] == "www.other.example. 60 A 192.0.2.99"


def test_cname_loops_stop() -> None:
    response = ask("loop1.example.test")
    assert texts(response.answer) == [
        "loop1.example.test. 3600 CNAME loop2.example.test.",
        "loop2.example.test. 3600 CNAME loop1.example.test.",
    ]
    assert response.rcode == wire.NOERROR


def test_cname_to_nothing_is_nxdomain() -> None:
    response = ask("dangling.example.test")
    assert response.rcode == wire.NXDOMAIN
    assert len(response.answer) == 1
    assert response.authority[0].rtype == wire.SOA


def test_cname_type_is_answered_not_followed() -> None:
    response = ask("www.example.test", wire.CNAME)
    assert texts(response.answer) == ["www.example.test. 3600 CNAME web.example.test."]


def test_referral() -> None:
    for qname in ("sub.example.test", "www.sub.example.test", "ns.sub.example.test"):
        response = ask(qname)
        assert not response.flags & wire.AA
        assert response.rcode == wire.NOERROR
        assert response.answer == []
        assert sorted(texts(response.authority)) == [
            "sub.example.test. 3600 NS ns.other.example.",
            "sub.example.test. 3600 NS ns.sub.example.test.",
        ]
        assert texts(response.additional) == [
            "ns.sub.example.test. 3600 A 192.0.2.100",
            "ns.sub.example.test. 3600 AAAA 2001:db8::100",
        ]


def test_referral_without_glue() -> None:
    response = ask("host.nogl.example.test", wire.MX)
    assert texts(response.authority) == ["nogl.example.test. 3600 NS ns.elsewhere.example."]
    assert response.additional == []


def test_referral_through_a_cname_is_authoritative() -> None:
    response = ask("todeleg.example.test")
    assert response.flags & wire.AA
    assert texts(response.answer) == ["todeleg.example.test. 3600 CNAME host.sub.example.test."]
    assert {r.rtype for r in response.authority} == {wire.NS}


def test_ds_at_the_cut_is_answered_by_the_parent() -> None:
    response = ask("sub.example.test", wire.DS)
    assert response.flags & wire.AA
    assert response.answer == []
    assert [r.rtype for r in response.authority] == [wire.SOA]
    below = ask("a.sub.example.test", wire.DS)
    assert not below.flags & wire.AA  # a referral


def test_ds_at_a_child_apex_we_serve_goes_to_the_parent() -> None:
    authority = Authority([ZONE, CHILD_ZONE])
    response = ask("sub.example.test", wire.DS, authority=authority)
    assert response.authority[0].name == name("example.test")
    child = ask("www.sub.example.test", authority=authority)
    assert texts(child.answer) == ["www.sub.example.test. 60 A 192.0.2.101"]
    alone = ask("sub.example.test", wire.DS, authority=Authority([CHILD_ZONE]))
    assert alone.authority[0].name == name("sub.example.test")
    assert alone.authority[0].ttl == 30


def test_wildcards() -> None:
    response = ask("anything.wild.example.test", wire.TXT)
    assert texts(response.answer) == ["anything.wild.example.test. 3600 TXT (b'wild', b'card')"]
    deep = ask("a.b.wild.example.test")
    assert texts(deep.answer) == ["a.b.wild.example.test. 3600 A 192.0.2.200"]
    # A name that exists is not covered by the wildcard beside it
    exists = ask("host.wild.example.test", wire.TXT)
    assert exists.answer == []
    assert exists.rcode == wire.NOERROR
    # Wildcard NODATA
    nodata = ask("anything.wild.example.test", wire.MX)
    assert (nodata.rcode, nodata.answer) == (wire.NOERROR, [])


def test_wildcards_do_not_cover_empty_non_terminals() -> None:
    text = ZONE_TEXT + "*.example.test. A 192.0.2.250\n"
    authority = Authority([Zone.from_compiled(compile_zone(text, ORIGIN))])
    assert texts(ask("q.example.test", authority=authority).answer) == [
        "q.example.test. 3600 A 192.0.2.250"
    ]
    ent = ask("ent.example.test", authority=authority)  # exists, empty
    assert (ent.rcode, ent.answer) == (wire.NOERROR, [])
    below_ent = ask("x.ent.example.test", authority=authority)  # closest encloser: ent
    assert below_ent.rcode == wire.NXDOMAIN


def test_cname_to_a_wildcard_name() -> None:
    response = ask("wcname.example.test")
    assert texts(response.answer) == [
        "wcname.example.test. 3600 CNAME anything.wild.example.test.",
        "anything.wild.example.test. 3600 A 192.0.2.200",
    ]


def test_additional_for_mx_and_srv() -> None:
    response = ask("example.test", wire.MX)
    assert texts(response.additional) == [
        "mail.example.test. 7200 A 192.0.2.25",
        "mx.wild.example.test. 3600 A 192.0.2.200",
        "ns1.example.test. 3600 A 192.0.2.53",
        "ns2.example.test. 3600 A 192.0.2.54",
        "mail.example.test. 3600 AAAA 2001:db8::25",
        "ns1.example.test. 3600 AAAA 2001:db8::53",
    ]
    srv = ask("_sip._tcp.example.test", wire.SRV)
    assert texts(srv.additional)[:2] == [
        "sip.example.test. 3600 A 192.0.2.60",
        "ns1.example.test. 3600 A 192.0.2.53",
    ]


def test_any_answers_one_rrset() -> None:
    apex = ask("example.test", wire.ANY)
    assert [r.rtype for r in apex.answer] == [wire.SOA]
    assert apex.authority == []  # no NS for ANY
    srv = ask("_sip._tcp.example.test", wire.ANY)
    assert {r.rtype for r in srv.answer} == {wire.SRV}
    empty = ask("b.ent.example.test", wire.ANY)
    assert (empty.answer, empty.authority[0].rtype) == ([], wire.SOA)


def test_outside_every_zone_is_refused() -> None:
    response = ask("www.example.com", edns=Edns(1232))
    assert response.rcode == wire.REFUSED
    assert not response.flags & wire.AA
    assert response.question == [Question(name("www.example.com"), wire.A)]
    assert response.edns is not None
    assert response.edns.options == ((wire.OPTION_EDE, b"\x00\x14"),)  # 20: not authoritative


def test_class_any_is_answered_without_aa_or_authority() -> None:
    response = ask("web.example.test", qclass=wire.CLASS_ANY)
    assert not response.flags & wire.AA
    assert len(response.answer) == 1
    assert response.authority == []
    assert ask("nothing.example.test", qclass=wire.CLASS_ANY).authority == []


def test_chaos_is_refused_and_other_classes_lose_the_question() -> None:
    chaos = ask("version.bind", wire.TXT, qclass=wire.CH, edns=Edns())
    assert chaos.rcode == wire.REFUSED
    assert chaos.edns is not None
    assert chaos.edns.options == ((wire.OPTION_EDE, b"\x00\x12"),)  # 18: prohibited
    assert len(chaos.question) == 1
    other = ask("example.test", wire.SOA, qclass=wire.HS, edns=Edns())
    assert other.rcode == wire.REFUSED
    assert other.question == []
    assert other.edns is not None
    assert other.edns.options == ((wire.OPTION_EDE, b"\x00\x15"),)  # 21: not supported


def test_case_is_echoed() -> None:
    response = ask("WeB.ExAmPlE.tEsT")
    assert response.question[0].name == (b"WeB", b"ExAmPlE", b"tEsT")
    assert response.answer[0].name == (b"WeB", b"ExAmPlE", b"tEsT")
    assert response.authority[0].name == (b"ExAmPlE", b"tEsT")
    assert response.additional[0].name == (b"ns1", b"ExAmPlE", b"tEsT")


def test_edns_is_echoed_with_our_payload_and_do() -> None:
    response = ask("web.example.test", edns=Edns(4096, flags=wire.DO, options=[(10, bytes(8))]))
    assert response.edns == Edns(1232, 0, 0, wire.DO, ())
    plain = ask("web.example.test", edns=Edns(512))
    assert plain.edns == Edns(1232)


def test_edns_version_1_is_badvers() -> None:
    response = ask("web.example.test", flags=wire.RD, edns=Edns(1232, version=1))
    assert response.rcode == wire.BADVERS
    assert response.flags & wire.RD
    assert response.answer == []
    assert response.question[0].name == name("web.example.test")
    assert response.edns is not None
    assert response.edns.version == 0


def test_udp_size_limits() -> None:
    # big TXT: ~650 bytes; 80 A records at many: ~1300
    no_edns = ask("big.example.test", wire.TXT)
    assert no_edns.flags & wire.TC
    assert no_edns.answer == []
    small = ask("big.example.test", wire.TXT, edns=Edns(256))  # taken as 512
    assert small.flags & wire.TC
    fits = ask("big.example.test", wire.TXT, edns=Edns(1232))
    assert not fits.flags & wire.TC
    assert len(fits.answer) == 6
    capped = ask("many.example.test", edns=Edns(4096))  # capped at our 1232
    assert capped.flags & wire.TC
    larger = Authority([ZONE], max_udp_payload=4096)
    assert len(ask("many.example.test", edns=Edns(4096), authority=larger).answer) == 80
    tcp = ask("many.example.test", transport="tcp")
    assert not tcp.flags & wire.TC
    assert len(tcp.answer) == 80


def test_optional_records_are_dropped_without_tc() -> None:
    # The answer fits in 512 but the additional addresses do not all: no TC.
    text = ZONE_TEXT + "".join(
        f"@ NS ns{i}.example.test.\nns{i} A 192.0.2.{i}\n" for i in range(3, 20)
    )
    authority = Authority([Zone.from_compiled(compile_zone(text, ORIGIN))])
    response = ask("web.example.test", authority=authority)
    assert not response.flags & wire.TC
    assert len(response.answer) == 1


def test_responses_are_none_for_responses_and_scraps() -> None:
    authority = Authority([ZONE])
    assert authority.respond(query("web.example.test", flags=wire.QR), "udp") is None
    assert authority.respond(b"\x00" * 11, "udp") is None
    with pytest.raises(ValueError, match="transport"):
        authority.respond(query("web.example.test"), "sctp")


def header_only(response: bytes | None) -> tuple[int, int, tuple[int, ...]]:
    assert response is not None
    assert len(response) == 12
    ident, flags, *counts = struct.unpack(">HHHHHH", response)
    return ident, flags, tuple(counts)


def test_formerr() -> None:
    authority = Authority([ZONE])
    good = query("web.example.test", flags=wire.RD)
    two_questions = good[:4] + b"\x00\x02" + good[6:] + good[12:]
    assert header_only(authority.respond(two_questions, "udp")) == (
        0xBEEF,
        wire.QR | wire.FORMERR,  # NSD clears RD when QDCOUNT is wrong
        (0, 0, 0, 0),
    )
    with_answer = good[:6] + b"\x00\x01" + good[8:]
    assert header_only(authority.respond(with_answer, "udp"))[1] == wire.QR | wire.RD | 1
    cut = good[:-3]
    assert header_only(authority.respond(cut, "tcp"))[1] == wire.QR | wire.RD | 1
    with_rcode = good[:3] + bytes([good[3] | 3]) + good[4:]
    assert header_only(authority.respond(with_rcode, "udp"))[1] == wire.QR | wire.RD | 1
    not_opt = good[:10] + b"\x00\x01" + good[12:] + b"\x00\x00\x01\x00\x01" + bytes(6)
    assert header_only(authority.respond(not_opt, "udp"))[1] == wire.QR | wire.RD | 1


def test_formerr_for_an_opt_alone_keeps_rd() -> None:
    authority = Authority([ZONE])
    opt_only = struct.pack(">HHHHHH", 7, wire.RD, 0, 0, 0, 1) + Edns().to_wire()
    assert header_only(authority.respond(opt_only, "udp")) == (7, wire.QR | wire.RD | 1, (0,) * 4)


def test_notimp_and_notify() -> None:
    authority = Authority([ZONE])
    status = query("web.example.test", flags=(wire.STATUS << 11) | wire.RD | wire.AD)
    _ident, flags, counts = header_only(authority.respond(status, "udp"))
    assert flags == wire.QR | (wire.STATUS << 11) | wire.RD | wire.NOTIMP
    assert counts == (0, 0, 0, 0)
    notify = query("example.test", wire.SOA, flags=wire.NOTIFY << 11)
    assert header_only(authority.respond(notify, "udp"))[1] & 0xF == wire.REFUSED
    notify_other = query("example.com", wire.SOA, flags=wire.NOTIFY << 11)
    assert header_only(authority.respond(notify_other, "udp"))[1] & 0xF == wire.NXDOMAIN


def test_zone_transfers_are_refused() -> None:
    assert ask("example.test", wire.AXFR).rcode == wire.NOTIMP
    assert ask("example.test", wire.AXFR, transport="tcp").rcode == wire.REFUSED
    assert ask("example.com", wire.AXFR, transport="tcp").rcode == wire.NOTAUTH
    soa = wire.Record(name("example.test"), wire.SOA, wire.IN, 0, ((), (), 1, 0, 0, 0, 0))
    ixfr = Message(5, 0, [Question(name("example.test"), wire.IXFR)], authority=[soa])
    response = Authority([ZONE]).respond(ixfr.to_wire(), "udp")
    assert response is not None
    assert parse_message(response).rcode == wire.REFUSED


def test_trailing_bytes_are_ignored() -> None:
    response = Authority([ZONE]).respond(query("web.example.test") + b"junk", "udp")
    assert response is not None
    assert len(parse_message(response).answer) == 1


# Memoisation

qnames = st.sampled_from(
    [
        "web.example.test",
        "WEB.example.TEST",
        "www.example.test",
        "nothing.example.test",
        "x.wild.example.test",
        "www.sub.example.test",
        "big.example.test",
        "many.example.test",
        "example.test",
        "example.com",
        "alias1.example.test",
        "b.ent.example.test",
    ]
)
qtypes = st.sampled_from(
    [wire.A, wire.AAAA, wire.TXT, wire.MX, wire.NS, wire.SOA, wire.ANY, wire.DS]
)
edns_options = st.one_of(
    st.none(),
    st.builds(
        Edns,
        st.sampled_from([0, 512, 1232, 1400, 4096]),
        st.just(0),
        st.just(0),
        st.sampled_from([0, wire.DO]),
    ),
)


@settings(max_examples=400)
@given(
    st.lists(
        st.tuples(
            qnames,
            qtypes,
            st.sampled_from([wire.IN, wire.CLASS_ANY, wire.CH]),
            st.sampled_from([0, wire.RD, wire.CD, wire.RD | wire.AD]),
            edns_options,
            st.sampled_from(["udp", "tcp"]),
            st.integers(0, 0xFFFF),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_memoised_responses_are_the_same_bytes(
    queries: list[tuple[str, int, int, int, Edns | None, str, int]],
) -> None:
    plain = Authority([ZONE])
    memoised = Authority([ZONE], memoise=True, memo_entries=8)
    for qname, qtype, qclass, flags, edns, transport, ident in queries * 2:
        data = query(qname, qtype, qclass=qclass, flags=flags, edns=edns, ident=ident)
        assert memoised.respond(data, transport) == plain.respond(data, transport)
    assert 0 < memoised.memoised <= 8


def test_memoised_response_takes_the_new_id() -> None:
    authority = Authority([ZONE], memoise=True)
    first = authority.respond(query("web.example.test", ident=1), "udp")
    second = authority.respond(memoryview(query("web.example.test", ident=2)), "udp")
    assert first is not None and second is not None
    assert first[:2] == b"\x00\x01" and second[:2] == b"\x00\x02"
    assert first[2:] == second[2:]
    assert authority.memoised == 1


# Robustness

ALLOWED_RCODES = {wire.NOERROR, wire.FORMERR, wire.NXDOMAIN, wire.NOTIMP, wire.REFUSED}


def check_response(response: bytes | None, allowed: set[int] = ALLOWED_RCODES) -> None:
    if response is None:
        return
    message = parse_message(response)
    assert message.flags & wire.QR
    assert message.rcode in allowed | {wire.BADVERS, wire.NOTAUTH}


@settings(max_examples=1000)
@given(st.binary(max_size=120), st.sampled_from(["udp", "tcp"]))
def test_respond_never_raises_on_arbitrary_bytes(data: bytes, transport: str) -> None:
    check_response(Authority([ZONE]).respond(data, transport))


@settings(max_examples=1000)
@given(
    qnames,
    qtypes,
    edns_options,
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_respond_never_raises_on_mutated_queries(
    qname: str, qtype: int, edns: Edns | None, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(query(qname, qtype, edns=edns))
    for position, value in mutations:
        data[position % len(data)] = value
    authority = Authority([ZONE])
    check_response(authority.respond(bytes(data), "udp"))
    check_response(authority.respond(bytes(data[: len(data) // 2]), "tcp"))
