"""A zone in memory, as the server answers from it: built once from a compiled zone (see
zonefile.py), then only read.

Names are looked up by their lowercase form (wire.name_key), and written in it too: NSD
lowercases every name of a zone as it loads it, so answers spell names as the query did where
compression points into the question, in lowercase elsewhere. Every name that exists is a Node:
those that own records, and the empty non-terminals between them and the apex. Records are
kept ready to write (wire.encode_record), and what an answer needs beyond the records is worked
out here, once: where the zone is cut by delegations, which wildcard hangs below a node, which
addresses go in the additional section for the targets of NS, MX and SRV records.
"""

from __future__ import annotations

from unikernel.apps.dns import wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from unikernel.apps.dns.wire import Encoded, Name, Pairs
    from unikernel.apps.dns.zonefile import CompiledZone

# Sections of an answer in the making, in the order they are written; NSD 4's split of the
# authority and additional sections (dns.h): NS records that only help (the apex NS on a
# positive answer) go in OPTIONAL_AUTHORITY, and the additional section puts A before AAAA.
ANSWER = 1
AUTHORITY = 2
OPTIONAL_AUTHORITY = 3
ADDITIONAL_A = 4
ADDITIONAL_AAAA = 5


def lowercase_rdata(rtype: int, rdata: Any) -> Any:
    """Rdata with its names in lowercase."""
    if rtype in (wire.NS, wire.CNAME, wire.PTR):
        return wire.name_key(rdata)
    if rtype == wire.MX:
        return (rdata[0], wire.name_key(rdata[1]))
    if rtype == wire.SOA:
        return (wire.name_key(rdata[0]), wire.name_key(rdata[1]), *rdata[2:])
    if rtype == wire.SRV:
        return (*rdata[:3], wire.name_key(rdata[3]))
    return rdata


class RRset:
    """Records of one owner and type. `encoded` is each record ready for wire.Writer.record;
    `additional` what answering with this RRset adds to the additional section, as
    (section, owner, owner key, RRset); `target` a CNAME's target as (key, pairs)."""

    __slots__ = ("additional", "encoded", "key", "owner", "rdatas", "rtype", "target", "ttl")

    def __init__(self, owner: Name, rtype: int, ttl: int, rdatas: tuple[Any, ...]) -> None:
        self.owner: Pairs = wire.name_pairs(owner)
        self.key = wire.name_key(owner)
        self.rtype = rtype
        self.ttl = ttl
        self.rdatas = rdatas
        self.encoded: tuple[Encoded, ...] = tuple(
            wire.encode_record(rtype, wire.IN, ttl, rdata) for rdata in rdatas
        )
        self.additional: tuple[tuple[int, Pairs, Name, RRset], ...] = ()
        self.target: tuple[Name, Pairs] | None = None
        if rtype == wire.CNAME:
            self.target = (wire.name_key(rdatas[0]), wire.name_pairs(rdatas[0]))

    def __repr__(self) -> str:
        return f"RRset({wire.name_to_text(self.key)} {wire.TYPE_NAMES.get(self.rtype)})"


class Node:
    """A name that exists in the zone. `rrsets` by type, in the order the zone file gave them
    (NSD answers ANY from that order); `wildcard` the node `*.` this name if there is one;
    `cut` the highest delegation (a node below the apex with NS records) at or above this
    name, None if the zone is not cut above it."""

    __slots__ = ("cut", "key", "name", "rrsets", "wildcard")

    def __init__(self, key: Name) -> None:
        self.key = key
        self.name: Pairs = wire.name_pairs(key)
        self.rrsets: dict[int, RRset] = {}
        self.wildcard: Node | None = None
        self.cut: Node | None = None

    def __repr__(self) -> str:
        return f"Node({wire.name_to_text(self.key)})"


class Zone:
    """One zone: `apex` (its key), `nodes` by key, the apex `soa` and `ns` RRsets, and
    `negative_soa`, the SOA given with NXDOMAIN and NODATA answers, its TTL the smaller of the
    SOA's and its minimum field (RFC 2308 section 3)."""

    __slots__ = ("apex", "apex_node", "negative_soa", "nodes", "ns", "soa")

    def __init__(self, apex: Name, nodes: dict[Name, Node]) -> None:
        self.apex = apex
        self.nodes = nodes
        self.apex_node = nodes[apex]
        soa = self.apex_node.rrsets.get(wire.SOA)
        ns = self.apex_node.rrsets.get(wire.NS)
        if soa is None or ns is None:
            raise ValueError(f"zone {wire.name_to_text(apex)} has no SOA or no NS at its apex")
        self.soa = soa
        self.ns = ns
        minimum = soa.rdatas[0][6]
        self.negative_soa = RRset(apex, wire.SOA, min(soa.ttl, minimum), soa.rdatas)

    @classmethod
    def from_compiled(cls, compiled: CompiledZone) -> Zone:
        apex = wire.name_key(compiled[0])
        rrsets = compiled[1]
        nodes: dict[Name, Node] = {apex: Node(apex)}
        for owner, rtype, _rclass, ttl, rdatas in rrsets:
            key = wire.name_key(owner)
            node = nodes.get(key)
            if node is None:
                node = nodes[key] = Node(key)
                _add_parents(nodes, apex, key)
            lowered = tuple(lowercase_rdata(rtype, rdata) for rdata in rdatas)
            node.rrsets[rtype] = RRset(key, rtype, ttl, lowered)
        zone = cls(apex, nodes)
        zone._link()
        return zone

    def _link(self) -> None:
        depth = len(self.apex)
        for key, node in self.nodes.items():
            if key and key[0] == b"*" and len(key) > depth:
                self.nodes[key[1:]].wildcard = node
            for length in range(depth + 1, len(key) + 1):
                above = self.nodes[key[len(key) - length :]]
                if wire.NS in above.rrsets:
                    node.cut = above
                    break
        for node in self.nodes.values():
            for rrset in node.rrsets.values():
                if rrset.rtype in (wire.NS, wire.MX, wire.SRV):
                    rrset.additional = self._additional(rrset)

    def contains(self, key: Name) -> bool:
        depth = len(self.apex)
        return len(key) >= depth and key[len(key) - depth :] == self.apex

    def closest_encloser(self, key: Name) -> Node:
        """The deepest existing node at or above `key`, which must be in the zone."""
        nodes = self.nodes
        for index in range(len(key) - len(self.apex) + 1):
            node = nodes.get(key[index:])
            if node is not None:
                return node
        return self.apex_node

    def cut_above(self, key: Name) -> Node | None:
        """The highest delegation at or above `key`, a name in the zone."""
        return self.closest_encloser(key).cut

    def _additional(self, rrset: RRset) -> tuple[tuple[int, Pairs, Name, RRset], ...]:
        """The A and AAAA RRsets for the targets of an NS, MX or SRV RRset (NSD's
        add_additional_rrsets): targets in this zone only; for MX and SRV not those at or below
        a delegation (glue is for NS only); a target that does not exist takes the records of
        the wildcard of its closest encloser."""
        out: list[tuple[int, Pairs, Name, RRset]] = []
        for rdata in rrset.rdatas:
            target: Name = (
                rdata
                if rrset.rtype == wire.NS
                else rdata[1]
                if rrset.rtype == wire.MX
                else rdata[3]
            )
            key = wire.name_key(target)
            if not self.contains(key):
                continue
            if rrset.rtype != wire.NS and self.cut_above(key) is not None:
                continue
            source = self.nodes.get(key)
            if source is None:
                source = self.closest_encloser(key).wildcard
                if source is None:
                    continue
            pairs = wire.name_pairs(target)
            for section, rtype in ((ADDITIONAL_A, wire.A), (ADDITIONAL_AAAA, wire.AAAA)):
                found = source.rrsets.get(rtype)
                if found is not None:
                    out.append((section, pairs, key, found))
        return tuple(out)


def _add_parents(nodes: dict[Name, Node], apex: Name, key: Name) -> None:
    """The empty non-terminals between a new node and the apex."""
    for index in range(1, len(key) - len(apex)):
        parent = key[index:]
        if parent in nodes:
            return
        nodes[parent] = Node(parent)
