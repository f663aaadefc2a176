"""zonefile.py: reading master files, and the checks a zone server makes when loading one."""

from __future__ import annotations

import ast
import marshal
from typing import Any

import pytest

from tests.unikernel.apps.dns.testzone import ORIGIN, ZONE_TEXT
from unikernel.apps.dns import wire
from unikernel.apps.dns.zonefile import ZoneFileError, compile_zone

HEAD = """\
$ORIGIN example.test.
$TTL 1h
@ SOA ns hostmaster 1 2 3 4 5
  NS ns
ns A 192.0.2.1
"""


def rrsets(text: str, origin: str | None = None) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(owner text, type name) -> (ttl, rdatas)."""
    _, compiled = compile_zone(text, origin)
    return {
        (wire.name_to_text(owner), wire.TYPE_NAMES[rtype]): (ttl, rdatas)
        for owner, rtype, _rclass, ttl, rdatas in compiled
    }


def test_the_compiled_zone_is_a_literal() -> None:
    compiled = compile_zone(ZONE_TEXT, ORIGIN)
    assert ast.literal_eval(repr(compiled)) == compiled
    assert marshal.loads(marshal.dumps(compiled)) == compiled
    assert compiled[0] == (b"example", b"test")


def test_reads_the_basics() -> None:
    found = rrsets(HEAD)
    assert found[("example.test.", "SOA")] == (
        3600,
        (((b"ns", b"example", b"test"), (b"hostmaster", b"example", b"test"), 1, 2, 3, 4, 5),),
    )
    assert found[("example.test.", "NS")] == (3600, ((b"ns", b"example", b"test"),))
    assert found[("ns.example.test.", "A")] == (3600, ("192.0.2.1",))


def test_ttl_and_class_in_either_order_and_units() -> None:
    found = rrsets(
        HEAD
        + "a 1h30m IN A 192.0.2.2\n"
        + "b IN 2d A 192.0.2.3\n"
        + "c 1W A 192.0.2.4\n"
        + "d IN A 192.0.2.5\n"
    )
    assert found[("a.example.test.", "A")][0] == 5400
    assert found[("b.example.test.", "A")][0] == 172800
    assert found[("c.example.test.", "A")][0] == 604800
    assert found[("d.example.test.", "A")][0] == 3600  # $TTL


def test_without_ttl_the_last_one_given_is_used() -> None:
    text = "$ORIGIN example.test.\n@ 300 SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
    assert rrsets(text)[("ns.example.test.", "A")][0] == 300


def test_owner_left_out_is_the_previous_one_and_parentheses_span_lines() -> None:
    text = """\
$TTL 60
@ IN SOA ns.example.test. h.example.test. (
        7      ; serial
        1h 2h  ; refresh retry
        1w 5m ) ; expire minimum
  NS ns.example.test. ; same owner
ns A 192.0.2.1
   AAAA 2001:DB8:0::1
"""
    found = rrsets(text, "example.test")
    assert found[("example.test.", "SOA")][1][0][2:] == (7, 3600, 7200, 604800, 300)
    assert found[("ns.example.test.", "AAAA")] == (60, ("2001:db8::1",))


def test_relative_absolute_and_origin_changes() -> None:
    found = rrsets(
        HEAD
        + "www CNAME web\n"
        + "abs CNAME www.example.net.\n"
        + "$ORIGIN sub.example.test.\n"
        + "host A 192.0.2.9\n"
        + "@ TXT here\n"
    )
    assert found[("www.example.test.", "CNAME")][1] == ((b"web", b"example", b"test"),)
    assert found[("abs.example.test.", "CNAME")][1] == ((b"www", b"example", b"net"),)
    assert ("host.sub.example.test.", "A") in found
    assert found[("sub.example.test.", "TXT")][1] == ((b"here",),)


def test_quoted_strings_and_escapes() -> None:
    found = rrsets(
        HEAD
        + 't TXT "a \\"quoted\\" word" plain "semi;colon" \\059 "\\255"\n'
        + "dot\\.ted A 192.0.2.7\n"
        + "sp\\032ace A 192.0.2.8\n"
    )
    assert found[("t.example.test.", "TXT")][1] == (
        (b'a "quoted" word', b"plain", b"semi;colon", b";", b"\xff"),
    )
    assert ("dot\\.ted.example.test.", "A") in found
    assert ("sp\\032ace.example.test.", "A") in found


def test_mx_srv_ptr() -> None:
    found = rrsets(
        HEAD + "@ MX 10 mail\n" + "_sip._tcp SRV 1 2 5060 sip.example.net.\n" + "1 PTR host\n"
    )
    assert found[("example.test.", "MX")][1] == ((10, (b"mail", b"example", b"test")),)
    assert found[("_sip._tcp.example.test.", "SRV")][1] == (
        (1, 2, 5060, (b"sip", b"example", b"net")),
    )
    assert found[("1.example.test.", "PTR")][1] == ((b"host", b"example", b"test"),)


def test_names_keep_their_case_and_duplicates_go() -> None:
    found = rrsets(HEAD + "WWW A 192.0.2.1\nwww A 192.0.2.1\nWww A 192.0.2.2\n")
    assert found[("WWW.example.test.", "A")] == (3600, ("192.0.2.1", "192.0.2.2"))


def test_the_origin_defaults_to_the_soa_owner() -> None:
    origin, _ = compile_zone(HEAD)
    assert origin == (b"example", b"test")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (HEAD + "$INCLUDE other.zone\n", 6, "$INCLUDE is not supported"),
        (HEAD + "$GENERATE 1-10 h$ A 192.0.2.$\n", 6, "$GENERATE is not supported"),
        (HEAD + "$FOO\n", 6, "unknown directive"),
        (HEAD + "x A 192.0.2\n", 6, "not an A address"),
        (HEAD + "x AAAA 192.0.2.1\n", 6, "not an AAAA address"),
        (HEAD + "x A 192.0.2.1 192.0.2.2\n", 6, "A takes 1 fields, not 2"),
        (HEAD + "x MX ten mail\n", 6, "MX preference 'ten' is not a number"),
        (HEAD + "x MX 70000 mail\n", 6, "does not fit in 16 bits"),
        (HEAD + "x LOC 1 2 3\n", 6, "type LOC is unknown or not supported"),
        (HEAD + "x CH A 192.0.2.1\n", 6, "only class IN"),
        (HEAD + "x 99999999999 A 192.0.2.1\n", 6, "over 2^31 - 1"),
        (HEAD + "x 1x A 192.0.2.1\n", 6, "'1x' is not a TTL"),
        (HEAD + "x TXT\n", 6, "at least one string"),
        (HEAD + 'x TXT "' + "a" * 256 + '"\n', 6, "longer than 255"),
        (HEAD + 'x TXT "open\n', 6, "not closed"),
        (HEAD + "x A (\n192.0.2.1\n", 6, "'(' is never closed"),
        (HEAD + "x A 192.0.2.1 )\n", 6, "')' without '('"),
        (HEAD + "x..y A 192.0.2.1\n", 6, "empty label"),
        (HEAD + "a" * 64 + " A 192.0.2.1\n", 6, "longer than 63"),
        (HEAD + ("a" * 60 + ".") * 5 + " A 192.0.2.1\n", 6, "longer than 255 octets"),
        (HEAD + "x\n", 6, "no record type"),
        (HEAD + "outside.example.net. A 192.0.2.1\n", 6, "outside the zone"),
        (HEAD + "test. A 192.0.2.1\n", 6, "outside the zone"),
        (HEAD + "x SOA a b 1 2 3 4 5\n", 6, "SOA record below the apex"),
        (HEAD + "@ SOA a b 1 2 3 4 5\n", 6, "a second SOA"),
        (HEAD + "c CNAME a\nc A 192.0.2.1\n", 7, "CNAME and other data"),
        (HEAD + "c A 192.0.2.1\nc CNAME a\n", 7, "CNAME and other data"),
        (HEAD + "c CNAME a\nc CNAME b\n", 7, "a second CNAME"),
        (HEAD + "@ CNAME a\n", 6, "CNAME and other data"),
        (HEAD + "ns 60 A 192.0.2.2\n", 6, "TTL 60 differs"),
        (HEAD + 'x "quoted" A 192.0.2.1\n', 6, "quoted string"),
        ("$ORIGIN example.test.\n@ 60 NS ns\nns 60 A 192.0.2.1\n", 4, "no SOA"),
        ("$ORIGIN example.test.\n@ 60 SOA a b 1 2 3 4 5\n", 3, "no NS records at the apex"),
        ("www 60 A 192.0.2.1\n", 1, "no $ORIGIN"),
        ("$ORIGIN example.test.\n@ SOA a b 1 2 3 4 5\n", 2, "no TTL"),
        ("  A 192.0.2.1\n", 1, "no owner name"),
        ("$ORIGIN example.test.\n@ 60 SOA a b 1 2 3 x 5\n", 2, "SOA expire 'x' is not a time"),
    ],
)
def test_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ZoneFileError) as caught:
        compile_zone(text)
    assert caught.value.line == line
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"line {line}: ")


def test_an_origin_argument_is_the_apex() -> None:
    text = "@ 60 SOA ns h 1 2 3 4 5\n@ 60 NS ns\nwww 60 A 192.0.2.1\n"
    origin, compiled = compile_zone(text, "Example.Test")
    assert origin == (b"Example", b"Test")
    assert compiled[2][0] == (b"www", b"Example", b"Test")
    with pytest.raises(ZoneFileError, match="outside the zone"):
        compile_zone("$ORIGIN other.\n" + text, "example.test.")
