"""SYN floods, sans-IO: the listener's SYN queue, its eviction of stale half-open children, and
SYN cookies (RFC 4987 3.6): made, checked, forged, stale, and the options they carry back.

A listener on layer A is played against by a RawPeer (one hand-made segment at a time) or by a
real client layer over the Wire; spoofed SYNs come from addresses nobody answers for. Time is
fake throughout.
"""

from __future__ import annotations

import random

import pytest

from tests.support.tcp_wire import A_IP, B_IP, RawPeer, Wire, seeded
from unikernel.net.tcp import (
    ACK,
    CLOSED,
    ESTABLISHED,
    PSH,
    RST,
    SYN,
    SYN_RECEIVED,
    Connection,
    Listener,
    Segment,
    TcpConfig,
    TcpLayer,
    build_segment,
)
from unikernel.net.tcp.segment import syn_options, timestamp_option
from unikernel.net.tcp.syn_cookies import (
    LIFETIME,
    MSS_TABLE,
    NO_OPTIONS,
    SynCookies,
    decode_options,
    encode_options,
    mss_index,
)

PORT = 80
PEER_ISN = 5_000_000
LINUX_SYN = syn_options(1460, 7, True, (123_456, 0))  # what Linux's SYN offers
MASK = 0xFFFFFFFF


def spoofed_syn(layer: TcpLayer, n: int, port: int = PORT, now: float = 0.0) -> None:
    """A SYN from address 198.18.x.y (RFC 2544's, nobody's), which never answers."""
    source = bytes((198, 18, n >> 8 & 0xFF, n & 0xFF))
    segment = build_segment(
        source, layer.local_ip, 10_000 + n % 50_000, port, n * 7919, 0, SYN, 65535, LINUX_SYN
    )
    layer.input(source, layer.local_ip, segment, now)


def flooded(backlog: int = 4, config: TcpConfig | None = None) -> tuple[TcpLayer, Listener]:
    """A listener whose SYN queue is full of spoofed children, past their first SYN-ACK
    retransmission: what a flood leaves."""
    layer = TcpLayer(seeded(1), config, A_IP)
    listener = layer.listen(PORT, backlog)
    for n in range(backlog):
        spoofed_syn(layer, n)
    layer.take_output()
    layer.tick(1.0)  # every SYN-ACK goes out again: a round trip long gone unanswered
    assert len(layer.take_output()) == backlog
    assert listener.queued == backlog and listener.ready == 0
    return layer, listener


def peer_at(layer: TcpLayer, now: float = 1.5, port: int = 4000) -> RawPeer:
    peer = RawPeer(layer, B_IP, port)
    peer.now = now
    return peer


def cookie_handshake(layer: TcpLayer, peer: RawPeer, options: bytes = LINUX_SYN) -> Segment:
    """The SYN-ACK answering the peer's SYN, which must carry a cookie."""
    conns = len(layer)
    sent = layer.stats["syn_cookies_sent"]
    peer.send(PORT, PEER_ISN, 0, SYN, options=options)
    (syn_ack,) = peer.take()
    assert syn_ack.flags == SYN | ACK and syn_ack.ack == PEER_ISN + 1
    assert layer.stats["syn_cookies_sent"] == sent + 1
    assert len(layer) == conns  # nothing kept
    return syn_ack


def ts_option(tsval: int, tsecr: int) -> bytes:
    return timestamp_option(tsval, tsecr)


# The SYN queue.


def test_a_queue_full_of_handshakes_under_way_drops_a_syn_rather_than_cookie_it() -> None:
    layer = TcpLayer(seeded(1), local_ip=A_IP)
    listener = layer.listen(PORT, backlog=2)
    spoofed_syn(layer, 1)
    spoofed_syn(layer, 2)
    layer.take_output()
    peer = peer_at(layer, now=0.15)
    peer.send(PORT, PEER_ISN, 0, SYN, options=LINUX_SYN)
    assert peer.take() == []  # a burst, not a flood (yet): the peer's retransmission comes back
    assert layer.stats["syn_dropped"] == 1 and layer.stats["syn_cookies_sent"] == 0
    assert listener.queued == 2
    peer.now = 0.2  # the queue full for as long as most handshakes take: a flood
    cookie_handshake(layer, peer)


def test_a_flooded_queue_answers_with_a_cookie_and_its_ack_makes_the_connection() -> None:
    layer, listener = flooded()
    peer = peer_at(layer)
    syn_ack = cookie_handshake(layer, peer)
    # Every option survives: they ride in the low bits of our timestamp.
    assert syn_ack.mss == 1460 and syn_ack.wscale == 3 and syn_ack.sack_ok and syn_ack.has_ts
    assert syn_ack.tsecr == 123_456
    peer.now += 0.01
    ts = ts_option(200_000, syn_ack.tsval)
    peer.send(PORT, PEER_ISN + 1, syn_ack.seq + 1, ACK, options=ts)
    assert peer.take() == []  # no reset: the cookie holds
    assert layer.stats["syn_cookies_validated"] == 1 and listener.ready == 1
    conn = listener.accept()
    assert conn is not None and conn.state == ESTABLISHED
    assert conn.iss == syn_ack.seq and conn.remote_port == peer.port
    assert conn.smss == 1460 - 12 and conn.snd_scale == 7 and conn.rcv_scale == 3
    assert conn.sack and conn.timestamps
    # Data both ways, our timestamps going on from the SYN-ACK's without going back.
    peer.send(PORT, PEER_ISN + 1, syn_ack.seq + 1, ACK | PSH, b"hello", options=ts)
    assert conn.recv(100, peer.now) == b"hello"
    conn.send(b"world", peer.now)
    (data,) = [seg for seg in peer.take() if seg.payload]
    assert bytes(data.payload) == b"world" and data.seq == (syn_ack.seq + 1) & MASK
    assert 0 <= (data.tsval - syn_ack.tsval) & MASK < 1000 and data.tsecr == 200_000


@pytest.mark.parametrize(
    ("peer_mss", "restored"),
    [(1460, 1460), (1452, 1440), (1000, 536), (None, 536), (300, 64), (9000, 8960)],
)
def test_the_cookie_brings_the_mss_back_rounded_down(peer_mss: int | None, restored: int) -> None:
    layer, listener = flooded(config=TcpConfig(mtu=9000))
    peer = peer_at(layer)
    # No timestamps: then no window scaling or SACK either, as there is nowhere to keep them.
    options = b"" if peer_mss is None else syn_options(peer_mss, 7, True, None)
    syn_ack = cookie_handshake(layer, peer, options)
    assert syn_ack.wscale == -1 and not syn_ack.sack_ok and not syn_ack.has_ts
    peer.send(PORT, PEER_ISN + 1, syn_ack.seq + 1, ACK)
    conn = listener.accept()
    assert conn is not None and conn.state == ESTABLISHED
    assert conn.smss == restored and conn.snd_scale == conn.rcv_scale == 0
    assert not conn.sack and not conn.timestamps


def test_a_forged_cookie_gets_a_reset_and_no_connection() -> None:
    layer, listener = flooded()
    peer = peer_at(layer)
    syn_ack = cookie_handshake(layer, peer)
    ts = ts_option(200_000, syn_ack.tsval)
    forgeries = [
        (peer.port, PEER_ISN + 1, syn_ack.seq + 2, ts),  # a guess next to the cookie
        (peer.port, PEER_ISN + 2, syn_ack.seq + 1, ts),  # another peer ISN
        (peer.port + 1, PEER_ISN + 1, syn_ack.seq + 1, ts),  # another port
        # The options the cookie covers: a larger window scale than the SYN offered.
        (peer.port, PEER_ISN + 1, syn_ack.seq + 1, ts_option(200_000, syn_ack.tsval ^ 0x0F)),
        (peer.port, PEER_ISN + 1, syn_ack.seq + 1, b""),  # and no timestamps after all
    ]
    for port, seq, ack, options in forgeries:
        peer.port = port
        peer.send(PORT, seq, ack, ACK, options=options)
        (rst,) = peer.take()
        assert rst.flags == RST and rst.seq == ack & MASK  # RFC 9293 3.10.7.2
    assert layer.stats["syn_cookies_rejected"] == len(forgeries)
    assert layer.stats["syn_cookies_validated"] == 0 and listener.ready == 0


def test_a_stale_cookie_is_refused_and_a_fresh_one_taken() -> None:
    layer, listener = flooded()
    old = peer_at(layer, port=4001)
    old_syn_ack = cookie_handshake(layer, old)
    late = peer_at(layer, port=4002)
    late_syn_ack = cookie_handshake(layer, late)
    # Keep the port flooded (so ACKs are checked as cookies) past the first cookie's life.
    for n in range(int(LIFETIME) + 10):
        spoofed_syn(layer, 1000 + n, now=old.now + n)
        layer.tick(old.now + n)
    layer.take_output()
    late.now = old.now + LIFETIME / 2
    late.send(
        PORT, PEER_ISN + 1, late_syn_ack.seq + 1, ACK, options=ts_option(1, late_syn_ack.tsval)
    )
    assert late.take() == [] and listener.ready == 1  # within its life
    old.now += LIFETIME + 1
    old.send(PORT, PEER_ISN + 1, old_syn_ack.seq + 1, ACK, options=ts_option(1, old_syn_ack.tsval))
    (rst,) = old.take()
    assert rst.flags == RST and listener.ready == 1
    assert layer.stats["syn_cookies_rejected"] == 1 and layer.stats["syn_cookies_validated"] == 1


def test_an_ack_to_a_port_that_sent_no_cookies_is_not_checked_as_one() -> None:
    layer = TcpLayer(seeded(1), local_ip=A_IP)
    layer.listen(PORT)
    peer = peer_at(layer)
    peer.send(PORT, PEER_ISN + 1, 12345, ACK)
    (rst,) = peer.take()
    assert rst.flags == RST and layer.stats["syn_cookies_rejected"] == 0


def test_a_valid_cookie_waits_for_room_in_the_accept_queue() -> None:
    layer, listener = flooded(backlog=2)
    first = peer_at(layer, port=4001)
    syn_ack = cookie_handshake(layer, first)
    first.send(PORT, PEER_ISN + 1, syn_ack.seq + 1, ACK, options=ts_option(1, syn_ack.tsval))
    second = peer_at(layer, port=4002)
    syn_ack = cookie_handshake(layer, second)
    third = peer_at(layer, port=4003)
    third_syn_ack = cookie_handshake(layer, third)
    second.send(PORT, PEER_ISN + 1, syn_ack.seq + 1, ACK, options=ts_option(1, syn_ack.tsval))
    assert listener.ready == 2  # cookie connections need room in the accept queue only
    third_ack = (PEER_ISN + 1, third_syn_ack.seq + 1, ACK | PSH, b"data")
    third.send(PORT, *third_ack, options=ts_option(2, third_syn_ack.tsval))
    assert third.take() == []  # full: dropped without a word, as Linux does
    assert layer.stats["listen_overflows"] == 1 and listener.ready == 2
    assert listener.accept() is not None
    third.now += 0.2  # the peer sends its data again, the cookie with it
    third.send(PORT, *third_ack, options=ts_option(3, third_syn_ack.tsval))
    assert listener.ready == 2 and layer.stats["syn_cookies_validated"] == 3
    conns = [c for c in layer.connections if c.remote_port == third.port]
    assert len(conns) == 1 and conns[0].recv(10, third.now) == b"data"


def test_a_stale_half_open_child_gives_its_place_to_a_new_syn() -> None:
    layer, listener = flooded(backlog=2)
    children = [c for c in layer.connections if c.state == SYN_RECEIVED]
    peer = peer_at(layer, now=3.0)
    layer.tick(3.0)  # the SYN-ACKs go out a third time
    layer.take_output()
    peer.send(PORT, PEER_ISN, 0, SYN, options=LINUX_SYN)
    (syn_ack,) = peer.take()
    assert layer.stats["syn_recv_evicted"] == 1 and layer.stats["syn_cookies_sent"] == 0
    assert children[0].state == CLOSED and children[1].state == SYN_RECEIVED  # the oldest
    assert listener.queued == 2
    ack_ts = ts_option(200_000, syn_ack.tsval)  # past the SYN's, for PAWS
    peer.send(PORT, PEER_ISN + 1, syn_ack.seq + 1, ACK, options=ack_ts)
    conn = listener.accept()
    assert conn is not None and conn.state == ESTABLISHED and conn.retransmits == 0
    assert layer.stats["syn_cookies_validated"] == 0


def test_a_layer_at_its_connection_limit_answers_with_cookies() -> None:
    layer = TcpLayer(seeded(1), TcpConfig(max_connections=3), A_IP)
    listener = layer.listen(PORT, backlog=16)
    for n in range(3):
        spoofed_syn(layer, n)
    layer.take_output()
    peer = peer_at(layer, now=0.1)
    syn_ack = cookie_handshake(layer, peer)  # young children, but no room for a fourth
    assert layer.stats["syn_dropped"] == 0
    peer.send(PORT, PEER_ISN + 1, syn_ack.seq + 1, ACK, options=ts_option(1, syn_ack.tsval))
    assert layer.stats["listen_overflows"] == 1  # still no room: the peer will try again
    assert listener.ready == 0 and len(layer) == 3


# The cookies themselves.


def test_cookies_encode_the_time_the_mss_and_a_mac() -> None:
    cookies = SynCookies(bytes(range(32)))
    made = cookies.make(B_IP, 4000, A_IP, 80, PEER_ISN, 1460, NO_OPTIONS, 100.0)
    assert made >> 27 == 1 and (made >> 24) & 7 == mss_index(1460)  # counter 100 // 64
    assert cookies.check(B_IP, 4000, A_IP, 80, PEER_ISN, made, NO_OPTIONS, 100.0) == 1460
    assert cookies.check(B_IP, 4000, A_IP, 80, PEER_ISN, made, NO_OPTIONS, 191.0) == 1460
    assert cookies.check(B_IP, 4000, A_IP, 80, PEER_ISN, made, NO_OPTIONS, 192.0) == -1
    other = SynCookies(bytes(range(1, 33)))  # another stack's secret
    assert other.check(B_IP, 4000, A_IP, 80, PEER_ISN, made, NO_OPTIONS, 100.0) == -1
    # Another MSS index in the cookie does not pass either: the MAC covers it.
    altered = made ^ (1 << 24)
    assert cookies.check(B_IP, 4000, A_IP, 80, PEER_ISN, altered, NO_OPTIONS, 100.0) == -1
    assert [MSS_TABLE[mss_index(m)] for m in (1, 64, 535, 536, 1459, 1460, 65535)] == [
        64,
        64,
        64,
        536,
        1440,
        1460,
        8960,
    ]
    assert decode_options(encode_options(7, True)) == (True, 7, True)
    assert decode_options(encode_options(-1, False)) == (True, -1, False)
    assert decode_options(NO_OPTIONS) == (False, -1, False)


def test_random_guesses_almost_never_pass() -> None:
    cookies = SynCookies(bytes(32))
    rng = random.Random(3)
    passed = sum(
        cookies.check(B_IP, 4000, A_IP, 80, PEER_ISN, rng.getrandbits(32), NO_OPTIONS, 10.0) >= 0
        for _ in range(20_000)
    )
    assert passed == 0  # 24 bits of MAC: one in 16 million, give or take the counter's


# A flood, with real clients among it.


def test_real_clients_get_in_through_a_flood_of_5000_spoofed_syns() -> None:
    wire = Wire(delay=0.02)  # a round trip of 40 ms
    listener = wire.b.listen(PORT)  # backlog 128
    # What goes to a spoofed address is lost: nobody there answers.
    wire.drop = lambda src, dst, seg: dst not in (A_IP, B_IP)
    connected: dict[int, float] = {}
    started: list[tuple[float, Connection]] = []

    def serve() -> None:
        while listener.accept() is not None:
            pass
        for i, (_, conn) in enumerate(started):
            if i not in connected and conn.state == ESTABLISHED:
                connected[i] = wire.now

    rate = 2000.0  # spoofed SYNs a second: 2.5 s of flood
    for n in range(5000):
        wire.run(pump=serve, for_time=max(0.0, n / rate - wire.now))
        if n % 100 == 0:
            started.append((wire.now, wire.a.connect(B_IP, PORT, wire.now)))
        spoofed_syn(wire.b, n, now=wire.now)
    wire.run(pump=serve, for_time=3.0)
    assert len(connected) == len(started) == 50
    waits = [connected[i] - at for i, (at, _) in enumerate(started)]
    # Until the first children are 0.2 s old, the queue looks like a burst: a real SYN that
    # comes then is dropped, and its retransmission a second later gets a cookie.
    assert all(wait < 1.1 for wait in waits), waits
    # From then on, every client is in after one round trip.
    assert all(wait < 0.05 for (at, _), wait in zip(started, waits, strict=True) if at > 0.2)
    stats = wire.b.stats
    assert stats["syn_cookies_sent"] > 4000 and stats["syn_cookies_validated"] >= 45
    assert listener.queued <= 128 and len(wire.b) <= 128 + 50
