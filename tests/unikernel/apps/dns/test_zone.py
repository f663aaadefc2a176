"""zone.py: the zone in memory: nodes, empty non-terminals, wildcards, cuts, additional data."""

from __future__ import annotations

import pytest

from tests.unikernel.apps.dns.testzone import ORIGIN, ZONE_TEXT
from unikernel.apps.dns import wire
from unikernel.apps.dns.zone import ADDITIONAL_A, ADDITIONAL_AAAA, Zone
from unikernel.apps.dns.zonefile import compile_zone


@pytest.fixture(scope="module")
def zone() -> Zone:
    return Zone.from_compiled(compile_zone(ZONE_TEXT, ORIGIN))


def key(text: str) -> tuple[bytes, ...]:
    return wire.name_key(wire.name_from_text(text))


def test_apex_soa_ns_and_negative_soa(zone: Zone) -> None:
    assert zone.apex == key("example.test")
    assert zone.soa.ttl == 3600
    assert zone.negative_soa.ttl == 300  # the SOA minimum, lower than its TTL
    assert zone.negative_soa.rdatas == zone.soa.rdatas
    assert len(zone.ns.rdatas) == 2


def test_names_are_found_case_insensitively_and_kept_in_lowercase(zone: Zone) -> None:
    node = zone.nodes[key("www.example.test")]  # written WWW in the file
    assert node.rrsets[wire.CNAME].owner[0][1] == b"\x03www"


def test_empty_non_terminals_exist_without_records(zone: Zone) -> None:
    for name in ("ent.example.test", "b.ent.example.test", "_tcp.example.test"):
        assert zone.nodes[key(name)].rrsets == {}
    assert key("nothing.example.test") not in zone.nodes


def test_closest_encloser(zone: Zone) -> None:
    assert zone.closest_encloser(key("x.y.b.ent.example.test")).key == key("b.ent.example.test")
    assert zone.closest_encloser(key("q.example.test")) is zone.apex_node


def test_wildcards_hang_below_their_parent(zone: Zone) -> None:
    wild = zone.nodes[key("wild.example.test")]
    assert wild.wildcard is zone.nodes[key("*.wild.example.test")]
    assert zone.apex_node.wildcard is None


def test_cuts(zone: Zone) -> None:
    sub = zone.nodes[key("sub.example.test")]
    assert sub.cut is sub
    assert zone.nodes[key("ns.sub.example.test")].cut is sub
    assert zone.cut_above(key("deep.below.sub.example.test")) is sub
    assert zone.apex_node.cut is None
    assert zone.cut_above(key("www.example.test")) is None


def test_additional_data_for_ns_mx_srv(zone: Zone) -> None:
    def described(owner: str, rtype: int) -> list[tuple[int, str, str]]:
        rrset = zone.nodes[key(owner)].rrsets[rtype]
        return [
            (section, wire.name_to_text(name), wire.TYPE_NAMES[found.rtype])
            for section, _, name, found in rrset.additional
        ]

    assert described("example.test", wire.NS) == [
        (ADDITIONAL_A, "ns1.example.test.", "A"),
        (ADDITIONAL_AAAA, "ns1.example.test.", "AAAA"),
        (ADDITIONAL_A, "ns2.example.test.", "A"),
    ]
    # mail2.example.net is not ours; mx.wild comes from the wildcard
    assert described("example.test", wire.MX) == [
        (ADDITIONAL_A, "mail.example.test.", "A"),
        (ADDITIONAL_AAAA, "mail.example.test.", "AAAA"),
        (ADDITIONAL_A, "mx.wild.example.test.", "A"),
    ]
    assert described("sub.example.test", wire.NS) == [
        (ADDITIONAL_A, "ns.sub.example.test.", "A"),
        (ADDITIONAL_AAAA, "ns.sub.example.test.", "AAAA"),
    ]
    assert described("_sip._tcp.example.test", wire.SRV)[0] == (
        ADDITIONAL_A,
        "sip.example.test.",
        "A",
    )


def test_glue_is_additional_data_for_ns_only() -> None:
    text = (
        "$ORIGIN z.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
        "@ MX 1 mx.cut\ncut NS mx.cut\nmx.cut A 192.0.2.2\n"
    )
    zone = Zone.from_compiled(compile_zone(text))
    assert zone.apex_node.rrsets[wire.MX].additional == ()
    assert len(zone.nodes[key("cut.z")].rrsets[wire.NS].additional) == 1


def test_a_zone_needs_soa_and_ns() -> None:
    with pytest.raises(ValueError, match="no SOA or no NS"):
        Zone.from_compiled(((b"z",), (((b"z",), wire.A, 1, 60, ("192.0.2.1",)),)))
