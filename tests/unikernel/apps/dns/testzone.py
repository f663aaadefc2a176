"""The zone the DNS tests answer from: a small but realistic one, with one of each thing an
authoritative server must get right (see the comments)."""

from __future__ import annotations

ORIGIN = "example.test."

_BIG_TXT = "\n".join(
    f'big TXT "{index}{"abcdefghij" * 9}{index:09d}"' for index in range(6)
)  # 6 x ~101 bytes: over 512 without EDNS, under 1232

_MANY_A = "\n".join(f"many A 198.51.100.{index}" for index in range(1, 81))  # ~1300 bytes

ZONE_TEXT = f"""\
; example.test: the conformance zone
$ORIGIN example.test.
$TTL 3600
@   IN  SOA ns1.example.test. hostmaster.example.test. (
            2024010101 ; serial
            2h         ; refresh
            1h         ; retry
            2w         ; expire
            300 )      ; minimum, below the TTL: negative answers carry 300
    IN  NS  ns1
        NS  ns2.example.test.
    MX  10 mail
    MX  20 mail2.example.net.
    MX  30 mx.wild
    TXT "v=spf1 mx -all"
    A   192.0.2.1
    AAAA 2001:db8::1
ns1 A   192.0.2.53
    AAAA 2001:db8::53
ns2 3600 IN A 192.0.2.54
mail IN 7200 A 192.0.2.25
mail AAAA 2001:db8::25
; a name spelt in capitals first: answers keep that spelling
WWW CNAME web
web     A     192.0.2.80
web     AAAA  2001:db8::80
; CNAME chains, a CNAME out of the zone, a loop, a CNAME to nothing, to a delegation
alias1  CNAME alias2
alias2  CNAME www
ext     CNAME www.example.net.
loop1   CNAME loop2
loop2   CNAME loop1
dangling CNAME nothing-here
todeleg CNAME host.sub
wcname  CNAME anything.wild
; a delegation with glue, and one without
sub     NS    ns.sub
sub     NS    ns.other.example.
ns.sub  A     192.0.2.100
ns.sub  AAAA  2001:db8::100
nogl    NS    ns.elsewhere.example.
; a wildcard, with a name that exists beside it
*.wild  A     192.0.2.200
*.wild  TXT   "wild" "card"
host.wild A   192.0.2.201
; empty non-terminals: ent and b.ent
a.b.ent A     192.0.2.9
; services
_sip._tcp SRV 10 60 5060 sip
          SRV 20 0 5060 sip2.example.net.
_ldap._tcp 600 SRV 0 0 389 ldap.wild
sip     A     192.0.2.60
sip     AAAA  2001:db8::60
ptr     PTR   web.example.test.
escaped TXT   "quote \\" and \\059 semicolon" plain
{_BIG_TXT}
{_MANY_A}
"""
