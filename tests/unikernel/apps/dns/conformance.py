"""Conformance of a DNS server with NSD: the same queries to both, through `dig`, and the
answers compared as DNS messages.

- `probes_for_zone(compiled)` makes the queries for a zone (a zonefile.CompiledZone), from its
  records: every type at a sample of names, absent names and types, wildcards, CNAMEs,
  delegations and names below them, empty non-terminals, names outside the zone, mixed case,
  EDNS sizes 512/1232/4096 and none, DO, the largest RRsets under each size (truncation), TCP,
  other classes, EDNS version 1.
- `dig(server, port, probe)` asks one with dig and returns a `DigResponse`: header flags,
  rcode, EDNS (version, flags, payload size, extended errors), the question, and each section
  as a sorted tuple of records (owner, TTL, class, type, rdata, as dig prints them), and the
  message's size.
- `differences(expected, actual)` says, in words, how two DigResponses differ; empty when
  they match.

Names are compared with their case: a server must echo the question as asked, and NSD spells
the other names as they were first written in the zone file (see zonefile.py).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from unikernel.apps.dns import wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from unikernel.apps.dns.wire import Name
    from unikernel.apps.dns.zonefile import CompiledZone

EDNS_VARIANTS: tuple[tuple[str, ...], ...] = (
    (),  # dig's default: EDNS, 1232 bytes
    ("+noedns",),
    ("+bufsize=512",),
    ("+bufsize=4096",),
    ("+tcp",),
    ("+noedns", "+tcp"),
    ("+dnssec",),
)


@dataclass(frozen=True)
class Probe:
    """One query: dig's name, type and class, and dig options (+tcp, +bufsize=N, ...)."""

    qname: str
    qtype: str
    options: tuple[str, ...] = ()
    qclass: str = "IN"

    def __str__(self) -> str:
        options = " ".join(self.options)
        return f"{self.qname} {self.qclass} {self.qtype} {options}".rstrip()


@dataclass(frozen=True)
class DigResponse:
    status: str
    opcode: str
    flags: frozenset[str]
    counts: tuple[int, int, int, int]
    edns: tuple[str, ...] | None  # ("version: 0", "flags: do", "udp: 1232", "EDE: 20 ...")
    question: tuple[str, ...]
    answer: tuple[str, ...]
    authority: tuple[str, ...]
    additional: tuple[str, ...]
    size: int
    text: str = field(compare=False, repr=False)


class DigError(RuntimeError):
    """dig got no answer, or printed something this module cannot read."""


# The queries


def _text(name: Name) -> str:
    return wire.name_to_text(name)


def _mixed_case(text: str) -> str:
    return "".join(char.upper() if index % 2 else char for index, char in enumerate(text))


def _sample(items: Sequence[Name], count: int) -> list[Name]:
    """`count` of `items`, spread evenly, the same every time."""
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(index * step)] for index in range(count)]


def probes_for_zone(compiled: CompiledZone, *, names: int = 40) -> list[Probe]:
    """The queries for a zone: all of its special names (delegations, wildcards, CNAMEs,
    empty non-terminals, the largest RRsets) and `names` of its other names."""
    origin, rrsets = compiled
    apex = _text(origin)
    types: dict[Name, list[int]] = {}
    sizes: list[tuple[int, Name, int]] = []
    spelling: dict[Name, Name] = {}
    for owner, rtype, _rclass, _ttl, rdatas in rrsets:
        key = wire.name_key(owner)
        spelling.setdefault(key, owner)
        types.setdefault(key, []).append(rtype)
        size = sum(len(wire.encode_rdata(rtype, rdata)) + len(owner) + 12 for rdata in rdatas)
        sizes.append((size, owner, rtype))
    apex_key = wire.name_key(origin)
    cuts = [key for key, present in types.items() if wire.NS in present and key != apex_key]
    wildcards = [key for key in types if key[0] == b"*"]
    cnames = [key for key, present in types.items() if wire.CNAME in present]
    below_cuts = [
        key for key in types if any(key[-len(cut) :] == cut and key != cut for cut in cuts)
    ]
    ents = sorted(
        {
            key[index:]
            for key in types
            for index in range(1, len(key) - len(apex_key))
            if key[index:] not in types
        }
    )
    plain = sorted(
        key
        for key in types
        if key not in cuts and key not in wildcards and key not in cnames and key != apex_key
    )
    probes: list[Probe] = []

    def add(name: str, *qtypes: str, options: tuple[str, ...] = (), qclass: str = "IN") -> None:
        probes.extend(Probe(name, qtype, options, qclass) for qtype in qtypes)

    def spelt(key: Name) -> str:
        return _text(spelling.get(key, key))

    add(apex, "SOA", "NS", "MX", "TXT", "A", "AAAA", "ANY", "SRV", "DS", "DNSKEY", "CNAME", "PTR")
    for key in _sample(plain, names):
        present = [wire.TYPE_NAMES.get(rtype, str(rtype)) for rtype in types[key]]
        absent = "TXT" if "TXT" not in present else "HINFO"
        add(spelt(key), *present, absent, "ANY")
    for key in _sample(plain, max(5, names // 4)):
        add(_mixed_case(spelt(key)), "A", "MX")
        add(spelt(key).upper(), wire.TYPE_NAMES.get(types[key][0], "A"))
    add(_mixed_case(apex), "SOA", "NS")
    for index in range(5):
        add(f"nonexistent{index}.{apex}", "A", "AAAA" if index % 2 else "MX")
    for key in _sample(plain, 8):
        add(f"zz.{spelt(key)}", "A")
    for key in wildcards:
        parent = _text(key[1:])
        add(f"anything.{parent}", "A", "AAAA", "TXT", "MX", "ANY")
        add(f"a.b.{parent}", "A", "TXT")
        add(f"ANYthing.{parent}", "A")
        add(spelt(key), "A", "TXT")
        add(parent, "A", "TXT")
    for key in _sample(cnames, 20):
        add(spelt(key), "A", "AAAA", "CNAME", "TXT", "ANY")
        add(_mixed_case(spelt(key)), "A")
    for key in _sample(cuts, 10):
        add(spelt(key), "NS", "A", "DS", "ANY", "SOA", "MX")
        add(f"www.{spelt(key)}", "A", "AAAA")
        add(f"a.b.{spelt(key)}", "MX", "DS")
    for key in _sample(below_cuts, 10):
        add(spelt(key), "A", "AAAA", "NS")
    for key in _sample(ents, 10):
        add(_text(key), "A", "TXT", "ANY")
        add(f"x.{_text(key)}", "A")
    for key in _sample(sorted(key for key, present in types.items() if wire.SRV in present), 5):
        add(spelt(key), "SRV", "A")
    outside = ("example.com.", "test.", ".", "invalid.", "example.org.")
    for name in outside:
        add(name, "A", "NS")
    add(apex.split(".", 1)[1] or ".", "SOA")
    add(f"www.{apex}nonsense.", "A")
    # EDNS sizes and TCP, over a few ordinary answers and the largest RRsets
    biggest = sorted(sizes, reverse=True)[:4]
    ordinary = [(key, types[key][0]) for key in _sample(plain, 3)]
    for owner, rtype in [(o, t) for _, o, t in biggest] + [(apex_key, wire.MX)] + ordinary:
        qtype = wire.TYPE_NAMES.get(rtype, str(rtype))
        for variant in EDNS_VARIANTS:
            add(spelt(wire.name_key(owner)), qtype, options=variant)
        add(spelt(wire.name_key(owner)), "ANY", options=("+noedns",))
    for key in _sample(cuts, 3):
        for variant in EDNS_VARIANTS[:3]:
            add(f"www.{spelt(key)}", "A", options=variant)
    for variant in (("+noedns",), ("+tcp",), ("+dnssec",), ("+cookie",), ("+rec",), ("+cd",)):
        add(f"nonexistent.{apex}", "A", options=variant)
        add("example.com.", "A", options=variant)
    add(apex, "SOA", options=("+edns=1",))
    add(apex, "SOA", options=("+edns=1", "+tcp"))
    add(apex, "SOA", options=("+rec", "+cd", "+adflag"))
    add("version.bind.", "TXT", qclass="CH")
    add("id.server.", "TXT", qclass="CH")
    add("hostname.bind.", "ANY", qclass="CH")
    add(apex, "SOA", qclass="CH")
    add(apex, "SOA", qclass="HS")
    add(apex, "SOA", "NS", "ANY", qclass="ANY")
    add(f"nonexistent.{apex}", "A", qclass="ANY")
    for key in _sample(plain, 3):
        add(spelt(key), "A", qclass="ANY")
    return list(dict.fromkeys(probes))


# Asking


def dig(
    server: str, port: int, probe: Probe, *, timeout: float = 3.0, namespace: str | None = None
) -> DigResponse:
    """What dig gets for `probe`: one try, no recursion asked for (unless +rec), no cookie
    (unless +cookie), a truncated answer taken as it is; run inside the network namespace
    `namespace` when the server is reached from there."""
    command = [
        "dig",
        f"@{server}",
        "-p",
        str(port),
        "+norec",
        "+nocookie",
        "+ignore",
        "+nofail",
        "+tries=1",
        f"+time={max(1, round(timeout))}",
        "+noednsnegotiation",
        *probe.options,
        "-c",
        probe.qclass,
    ]
    command += ["-q", probe.qname, "-t", probe.qtype]
    if namespace is not None:
        command = ["ip", "netns", "exec", namespace, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout * 3 + 5)
    return parse_dig(done.stdout, probe)


def parse_dig(text: str, probe: Probe | None = None) -> DigResponse:
    """A DigResponse from dig's usual output (one message)."""
    status = opcode = None
    flags: frozenset[str] = frozenset()
    counts = (0, 0, 0, 0)
    edns: list[str] | None = None
    sections: dict[str, list[str]] = {}
    section = None
    size = -1
    for line in text.splitlines():
        if line.startswith(";; ->>HEADER<<-"):
            if status is not None:
                raise DigError(f"two messages for {probe}:\n{text}")
            fields = dict(part.strip().split(": ", 1) for part in line[16:].split(","))
            status, opcode = fields["status"], fields["opcode"]
        elif line.startswith(";; flags:"):
            flag_text, count_text = line[len(";; flags:") :].split(";", 1)
            flags = frozenset(flag_text.split())
            numbers = dict(part.strip().split(": ") for part in count_text.split(","))
            counts = tuple(  # type: ignore[assignment]
                int(numbers[name]) for name in ("QUERY", "ANSWER", "AUTHORITY", "ADDITIONAL")
            )
        elif line.startswith(";; OPT PSEUDOSECTION:"):
            edns = []
            section = "OPT"
        elif line.startswith("; EDNS:"):
            assert edns is not None
            edns.extend(part.strip() for part in line[len("; EDNS:") :].split(";") if part.strip())
        elif section == "OPT" and line.startswith("; ") and edns is not None:
            edns.append(line[2:].strip())
        elif line.startswith(";; ") and line.endswith(" SECTION:"):
            section = line[3 : -len(" SECTION:")]
            sections[section] = []
        elif line.startswith(";; MSG SIZE  rcvd:"):
            size = int(line.split(":")[1])
        elif not line.strip() or line.startswith(";;"):
            continue
        elif section == "QUESTION" and line.startswith(";"):
            sections[section].append(" ".join(line[1:].split()))
        elif section in ("ANSWER", "AUTHORITY", "ADDITIONAL") and not line.startswith(";"):
            owner, ttl, rclass, rtype, *rest = line.split(None, 4)
            rdata = rest[0].strip() if rest else ""
            sections[section].append(f"{owner} {ttl} {rclass} {rtype} {rdata}")
    if status is None or opcode is None:
        raise DigError(f"no answer for {probe}:\n{text}")
    return DigResponse(
        status=status,
        opcode=opcode,
        flags=flags,
        counts=counts,
        edns=tuple(edns) if edns is not None else None,
        question=tuple(sections.get("QUESTION", ())),
        answer=tuple(sorted(sections.get("ANSWER", ()))),
        authority=tuple(sorted(sections.get("AUTHORITY", ()))),
        additional=tuple(sorted(sections.get("ADDITIONAL", ()))),
        size=size,
        text=text,
    )


# Comparing


def differences(
    expected: DigResponse, actual: DigResponse, *, compare_size: bool = True
) -> list[str]:
    """How `actual` differs from `expected`, one line each; [] if they are the same message
    (sections as sets of records)."""
    out = []
    for name in ("status", "opcode", "flags", "counts", "edns", "question"):
        want, got = getattr(expected, name), getattr(actual, name)
        if want != got:
            if name == "flags":
                want, got = " ".join(sorted(want)), " ".join(sorted(got))
            out.append(f"{name}: expected {want}, got {got}")
    for name in ("answer", "authority", "additional"):
        out.extend(_section_differences(name, getattr(expected, name), getattr(actual, name)))
    if compare_size and expected.size != actual.size and not out:
        out.append(f"size: expected {expected.size} bytes, got {actual.size}")
    return out


def _section_differences(name: str, want: Iterable[str], got: Iterable[str]) -> list[str]:
    wanted, gotten = list(want), list(got)
    missing = [record for record in wanted if record not in gotten]
    extra = [record for record in gotten if record not in wanted]
    return [f"{name}: missing {record}" for record in missing] + [
        f"{name}: unexpected {record}" for record in extra
    ]


def report(results: Iterable[tuple[Probe, list[str]]]) -> str:
    """The differences of many probes, readably."""
    lines = []
    for probe, found in results:
        if found:
            lines.append(f"dig {probe}:")
            lines.extend(f"    {line}" for line in found)
    return "\n".join(lines)
