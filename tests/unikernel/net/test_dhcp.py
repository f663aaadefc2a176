"""The DHCP client against a scripted server, with a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.net import dhcp
from unikernel.net.config import Ipv4Config
from unikernel.net.dhcp import DhcpClient
from unikernel.net.ipv4 import BROADCAST
from unikernel.net.malformed import Malformed

from .dhcp_server import ScriptedServer
from .wire import ip, mac

Outgoing = list[tuple[bytes, bytes]]


def client(**options: Any) -> DhcpClient:
    """A client whose random choices are fixed: xids count up, and backoffs get no jitter."""
    xids = iter(range(100, 10_000))

    def random_below(n: int) -> int:
        return 1000 if n == 2001 else next(xids)

    return DhcpClient(mac(9), random_below=random_below, **options)


def exchange(c: DhcpClient, server: ScriptedServer, outgoing: Outgoing, now: float) -> int:
    """Carry messages both ways until neither side has more; how many the client sent."""
    sent = 0
    while outgoing:
        sent += len(outgoing)
        replies = [server.answer(message) for _, message in outgoing]
        outgoing = []
        for reply in replies:
            if reply is not None:
                outgoing += c.receive(reply, now)
    return sent


def bound(at: float = 0.0) -> tuple[DhcpClient, ScriptedServer]:
    c, server = client(), ScriptedServer()
    exchange(c, server, c.start(at), at)
    assert c.state == dhcp.BOUND
    return c, server


def test_the_full_exchange_binds_a_lease() -> None:
    c, server = client(hostname="uk"), ScriptedServer()
    ((destination, data),) = c.start(0.0)
    discover = dhcp.parse(data)
    assert destination == BROADCAST and c.state == dhcp.SELECTING
    assert discover.type == dhcp.DISCOVER and discover.chaddr == mac(9) and discover.xid == 100
    assert discover.flags & dhcp.BROADCAST_FLAG and discover.options[dhcp.HOSTNAME] == b"uk"
    assert set(discover.options[dhcp.PARAMETER_REQUEST]) >= {1, 3, 6, 51}
    offer = server.answer(data)
    assert offer is not None
    ((destination, data),) = c.receive(offer, 0.5)
    request = dhcp.parse(data)
    assert destination == BROADCAST and c.state == dhcp.REQUESTING
    assert request.type == dhcp.REQUEST and request.xid == discover.xid
    assert request.options[dhcp.REQUESTED_ADDRESS] == ip("10.0.0.50")
    assert request.options[dhcp.SERVER_ID] == ip("10.0.0.1")
    ack = server.answer(data)
    assert ack is not None
    assert c.receive(ack, 1.0) == []
    assert c.state == dhcp.BOUND and c.lease is not None
    expected = Ipv4Config(ip("10.0.0.50"), 24, ip("10.0.0.1"), (ip("10.0.0.53"), ip("10.0.0.54")))
    assert c.lease.config == expected and c.lease.server == ip("10.0.0.1")
    assert (c.lease.renew_at, c.lease.rebind_at, c.lease.expires_at) == (1801, 3151, 3601)
    assert c.next_deadline() == 1801


def test_discover_is_repeated_with_exponential_backoff() -> None:
    c = client(max_backoff=64.0)
    c.start(0.0)
    times: list[float] = []
    now = 0.0
    while len(times) < 7:
        deadline = c.next_deadline()
        assert deadline is not None
        assert c.tick(deadline - 0.01) == []
        now = deadline
        ((_, data),) = c.tick(now)
        message = dhcp.parse(data)
        assert message.type == dhcp.DISCOVER and message.xid == 100  # the same exchange
        times.append(now)
    assert times == [4, 12, 28, 60, 124, 188, 252]
    assert int.from_bytes(data[8:10], "big") == 252  # secs since the exchange began


def test_backoff_is_randomised_by_up_to_a_second() -> None:
    early = DhcpClient(mac(9), random_below=lambda n: 0)
    late = DhcpClient(mac(9), random_below=lambda n: n - 1)
    early.start(0.0)
    late.start(0.0)
    assert (early.next_deadline(), late.next_deadline()) == (3.0, 5.0)


def test_lost_messages_are_sent_again() -> None:
    c, server = client(), ScriptedServer()
    server.silent = 1
    exchange(c, server, c.start(0.0), 0.0)  # the DISCOVER is lost
    assert c.state == dhcp.SELECTING
    ((_, discover),) = c.tick(4.0)
    offer = server.answer(discover)
    assert offer is not None
    ((_, request),) = c.receive(offer, 4.0)
    server.silent = 1
    assert server.answer(request) is None  # and so is the REQUEST
    assert c.state == dhcp.REQUESTING and c.next_deadline() == 8.0
    exchange(c, server, c.tick(8.0), 8.0)
    assert c.state == dhcp.BOUND
    kinds = [m.type for m in server.heard]
    assert kinds == [dhcp.DISCOVER, dhcp.DISCOVER, dhcp.REQUEST, dhcp.REQUEST]


def test_unanswered_requests_start_over_with_a_new_discover() -> None:
    c, server = client(max_requests=3), ScriptedServer()
    ((_, discover),) = c.start(0.0)
    offer = server.answer(discover)
    assert offer is not None
    assert len(c.receive(offer, 0.0)) == 1 and c.state == dhcp.REQUESTING
    assert len(c.tick(4.0)) == 1 and len(c.tick(12.0)) == 1  # the server stays silent
    ((_, data),) = c.tick(28.0)  # out of requests
    again = dhcp.parse(data)
    assert c.state == dhcp.SELECTING and again.type == dhcp.DISCOVER and again.xid == 101


def test_a_nak_starts_over_after_a_while() -> None:
    c, server = client(restart_delay=10.0), ScriptedServer()
    server.refuse = True
    exchange(c, server, c.start(0.0), 0.0)
    assert c.state == dhcp.INIT and c.lease is None and c.next_deadline() == 10.0
    assert [m.type for m in server.heard] == [dhcp.DISCOVER, dhcp.REQUEST]
    server.refuse = False
    exchange(c, server, c.tick(10.0), 10.0)
    assert c.state == dhcp.BOUND


def test_replies_for_other_clients_or_exchanges_are_ignored() -> None:
    c, server = client(), ScriptedServer()
    ((_, data),) = c.start(0.0)
    offer = server.answer(data)
    assert offer is not None
    other_xid = bytearray(offer)
    other_xid[4] ^= 1
    other_client = bytearray(offer)
    other_client[28 + 5] ^= 1
    assert c.receive(other_xid, 0.0) == [] and c.receive(other_client, 0.0) == []
    assert c.state == dhcp.SELECTING


def test_renewal_is_unicast_to_the_server_and_extends_the_lease() -> None:
    c, server = bound()
    assert c.tick(1799.0) == []
    ((destination, data),) = c.tick(1800.0)
    request = dhcp.parse(data)
    assert c.state == dhcp.RENEWING and destination == ip("10.0.0.1")
    assert request.ciaddr == ip("10.0.0.50") and not request.flags & dhcp.BROADCAST_FLAG
    assert dhcp.REQUESTED_ADDRESS not in request.options and dhcp.SERVER_ID not in request.options
    ack = server.answer(data)
    assert ack is not None
    c.receive(ack, 1800.5)
    assert c.state == dhcp.BOUND and c.lease is not None
    assert c.lease.expires_at == 1800.5 + 3600


def test_without_answers_the_client_renews_then_rebinds_then_gives_the_lease_up() -> None:
    c, _ = bound()
    sent: list[tuple[float, str, bytes]] = []
    while c.state != dhcp.SELECTING:
        now = c.next_deadline()
        assert now is not None
        for destination, _ in c.tick(now):
            sent.append((now, c.state, destination))
    server, everyone = ip("10.0.0.1"), BROADCAST
    # Half the time left each time, but at least 60 s: to T2 (3150), then to the end (3600).
    renewing = [1800, 2475, 2812.5, 2981.25, 3065.625, 3125.625]
    rebinding = [3150, 3375, 3487.5, 3547.5]
    assert sent[:-1] == [(t, dhcp.RENEWING, server) for t in renewing] + [
        (t, dhcp.REBINDING, everyone) for t in rebinding
    ]
    assert sent[-1] == (3600, dhcp.SELECTING, everyone) and c.lease is None


def test_release_gives_the_lease_back() -> None:
    c, _ = bound()
    ((destination, data),) = c.release()
    message = dhcp.parse(data)
    assert destination == ip("10.0.0.1") and message.type == dhcp.RELEASE
    assert message.ciaddr == ip("10.0.0.50") and c.lease is None and c.next_deadline() is None
    assert c.release() == []


def test_lease_defaults_when_the_server_says_little() -> None:
    c, server = client(), ScriptedServer(offer="172.16.5.5", options=[])
    exchange(c, server, c.start(0.0), 0.0)
    assert c.lease is not None
    assert c.lease.config == Ipv4Config(ip("172.16.5.5"), 16)  # class B, no router, no DNS


def test_an_infinite_lease_needs_no_timer() -> None:
    c, server = client(), ScriptedServer(lease=0xFFFFFFFF)
    exchange(c, server, c.start(0.0), 0.0)
    assert c.state == dhcp.BOUND and c.next_deadline() is None
    assert c.tick(1e12) == []


def test_options_split_in_pieces_are_joined() -> None:
    long = bytes(range(256)) * 2
    data = dhcp.build(dhcp.BOOTREPLY, 1, mac(9), [(dhcp.HOSTNAME, long), (dhcp.PAD, b"")])
    assert data.count(bytes((dhcp.HOSTNAME, 255))) == 2
    assert dhcp.parse(data).options[dhcp.HOSTNAME] == long
    assert len(dhcp.build(dhcp.BOOTREQUEST, 1, mac(9), [])) == 300  # BOOTP's minimum


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m: m[:239], "truncated"),
        (lambda m: m[:236] + b"\0\0\0\0" + m[240:], "magic"),
        (lambda m: b"\x03" + m[1:], "op"),
        (lambda m: m[:1] + b"\x06" + m[2:], "hardware"),
        (lambda m: m[:240] + bytes((dhcp.HOSTNAME, 10)) + b"short", "option"),
        (lambda m: m[:240] + bytes((dhcp.HOSTNAME,)), "option"),
    ],
)
def test_malformed_messages_say_why(change: object, reason: str) -> None:
    data = dhcp.build(dhcp.BOOTREPLY, 1, mac(9), [(dhcp.MESSAGE_TYPE, b"\x02")])
    with pytest.raises(Malformed) as caught:
        dhcp.parse(change(data))  # type: ignore[operator]
    assert caught.value.reason == reason


@given(
    st.integers(0, 0xFFFFFFFF),
    st.lists(st.tuples(st.integers(1, 254), st.binary(max_size=600)), max_size=8),
)
def test_build_then_parse_keeps_every_option(xid: int, options: list[tuple[int, bytes]]) -> None:
    message = dhcp.parse(dhcp.build(dhcp.BOOTREQUEST, xid, mac(9), options))
    expected: dict[int, bytes] = {}
    for code, value in options:
        expected[code] = expected.get(code, b"") + value
    assert message.xid == xid and message.chaddr == mac(9) and message.options == expected
