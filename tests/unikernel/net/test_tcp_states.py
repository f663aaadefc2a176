"""The TCP state machine (RFC 9293 3.3.2, 3.10): opening, closing, TIME-WAIT, resets, options.

Two layers talk over the in-memory Wire, or one layer talks to a RawPeer that a test plays by
hand. Time is fake throughout.
"""

from __future__ import annotations

import pytest

from tests.support.tcp_wire import (
    A_IP,
    B_IP,
    PEER_ISN,
    RawPeer,
    Wire,
    raw_client,
    seeded,
)
from unikernel.net.tcp import (
    ACK,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    EV_ACCEPTABLE,
    EV_CONNECTED,
    EV_PEER_CLOSED,
    EV_RESET,
    EV_TIMED_OUT,
    FIN,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    REFUSED,
    RESET,
    RST,
    SYN,
    SYN_SENT,
    TIME_WAIT,
    TIMED_OUT,
    Segment,
    TcpConfig,
    TcpLayer,
)
from unikernel.net.tcp.segment import syn_options, timestamp_option


def events_of(layer: TcpLayer) -> dict[object, int]:
    return dict(layer.take_events())


def flag_names(seg: Segment) -> str:
    return "".join(
        c for bit, c in ((SYN, "S"), (FIN, "F"), (RST, "R"), (ACK, "A")) if seg.flags & bit
    )


# Opening.


def test_three_way_handshake_negotiates_every_option() -> None:
    wire = Wire()
    wire.trace = []
    listener = wire.b.listen(80)
    client = wire.a.connect(B_IP, 80, wire.now)
    assert client.state == SYN_SENT
    assert wire.run(lambda: listener.ready == 1)
    server = listener.accept()
    assert server is not None and listener.accept() is None
    assert client.state == ESTABLISHED and server.state == ESTABLISHED
    syn, syn_ack, ack = (seg for _, _, seg in wire.trace[:3])
    assert [flag_names(s) for s in (syn, syn_ack, ack)] == ["S", "SA", "A"]
    assert syn_ack.ack == (syn.seq + 1) & 0xFFFFFFFF and ack.ack == (syn_ack.seq + 1) & 0xFFFFFFFF
    assert syn.mss == syn_ack.mss == 1460 and syn.sack_ok and syn_ack.sack_ok
    assert syn.wscale == syn_ack.wscale == 3  # 256 KiB buffers need 3 bits of shift
    assert syn.has_ts and syn_ack.tsecr == syn.tsval
    assert client.timestamps and client.sack and client.snd_scale == server.rcv_scale == 3
    assert client.smss == 1460 - 12  # timestamps take 12 bytes of every segment
    assert events_of(wire.a)[client] & EV_CONNECTED
    assert events_of(wire.b)[listener] & EV_ACCEPTABLE


def test_initial_sequence_numbers_come_from_the_function_given() -> None:
    values = iter([111, 222, 333, 444, 555, 666])
    layer = TcpLayer(lambda: next(values), local_ip=A_IP)  # 111 picks the first port
    conn = layer.connect(B_IP, 80, 0.0)
    assert conn.iss == 222
    (_, _, data) = layer.take_output()[0]
    assert int.from_bytes(data[4:8], "big") == 222


def test_simultaneous_open() -> None:
    wire = Wire()
    wire.trace = []
    a = wire.a.connect(B_IP, 2000, wire.now, local_port=1000)
    b = wire.b.connect(A_IP, 1000, wire.now, local_port=2000)
    assert wire.run(lambda: a.state == b.state == ESTABLISHED)
    kinds = [flag_names(seg) for _, _, seg in wire.trace]
    assert kinds[:2] == ["S", "S"] and kinds.count("SA") == 2  # RFC 9293 figure 8
    assert wire.a.stats["rst_sent"] == wire.b.stats["rst_sent"] == 0
    a.send(b"ping", wire.now)
    b.send(b"pong", wire.now)
    assert wire.run(lambda: a.readable == b.readable == 4)
    assert a.recv(10, wire.now) == b"pong" and b.recv(10, wire.now) == b"ping"


def test_a_lost_syn_ack_is_sent_again_when_the_syn_comes_again() -> None:
    wire = Wire()
    dropped: list[Segment] = []

    def drop_first_syn_ack(src: bytes, dst: bytes, seg: Segment) -> bool:
        if seg.flags == SYN | ACK and not dropped:
            dropped.append(seg)
            return True
        return False

    wire.drop = drop_first_syn_ack
    client, server = wire.connect()
    assert dropped and client.state == server.state == ESTABLISHED
    assert 1.0 <= wire.now < 1.1  # the client's SYN went again after its 1 s initial RTO


def test_data_flows_both_ways_at_once_in_segments_that_fit_the_mtu() -> None:
    wire = Wire(seed=4, loss=0.03)  # losses both ways: data segments carry SACK blocks too
    client, server = wire.connect()
    up = bytes(range(256)) * 1200
    down = bytes(reversed(range(256))) * 1100
    got_up = bytearray()
    got_down = bytearray()
    sent = [0, 0]

    def pump() -> None:
        sent[0] += client.send(memoryview(up)[sent[0] :], wire.now)
        sent[1] += server.send(memoryview(down)[sent[1] :], wire.now)
        got_up.extend(server.recv(1 << 20, wire.now))
        got_down.extend(client.recv(1 << 20, wire.now))

    assert wire.run(lambda: len(got_up) == len(up) and len(got_down) == len(down), pump=pump)
    assert got_up == up and got_down == down
    assert wire.largest == 1500 - 20  # TCP header, options and data within the IPv4 MTU


# Closing.


def test_fin_fin_close_then_time_wait_for_two_msl() -> None:
    wire = Wire()
    client, server = wire.connect()
    client.send(b"last words", wire.now)
    client.close(wire.now)
    assert client.state == FIN_WAIT_1
    assert wire.run(lambda: server.state == CLOSE_WAIT and client.state == FIN_WAIT_2)
    assert events_of(wire.b)[server] & EV_PEER_CLOSED
    assert server.recv(100, wire.now) == b"last words" and server.at_eof
    assert server.recv(100, wire.now) == b""
    server.close(wire.now)
    assert server.state == LAST_ACK
    assert wire.run(lambda: server.state == CLOSED)
    assert client.state == TIME_WAIT and len(wire.a) == 1 and len(wire.b) == 0
    entered = wire.now
    wire.run(for_time=59.9)
    assert client.state == TIME_WAIT  # 2 MSL is 60 s here
    wire.run(for_time=0.2)
    assert client.state == CLOSED and len(wire.a) == 0
    assert wire.now == pytest.approx(entered + 60, abs=0.2)
    assert wire.a.memory_used == wire.b.memory_used == 0


def test_time_wait_acks_a_retransmitted_fin_and_restarts_its_timer() -> None:
    wire = Wire()
    client, server = wire.connect()
    client.close(wire.now)
    wire.run(lambda: server.state == CLOSE_WAIT)
    lost: list[float] = []

    def drop_last_ack_once(src: bytes, dst: bytes, seg: Segment) -> bool:
        if src == A_IP and client.state == TIME_WAIT and not lost:
            lost.append(wire.now)
            return True
        return False

    wire.drop = drop_last_ack_once
    server.close(wire.now)
    assert wire.run(lambda: server.state == CLOSED)
    assert lost and wire.now > lost[0] + 0.2  # closed only once the FIN went again
    wire.run(for_time=59.0)
    assert (
        client.state == TIME_WAIT
    )  # restarted by the second FIN: not gone at 60 s after the first
    wire.run(for_time=2.0)
    assert client.state == CLOSED


def test_simultaneous_close() -> None:
    wire = Wire()
    client, server = wire.connect()
    client.close(wire.now)
    server.close(wire.now)
    assert client.state == server.state == FIN_WAIT_1
    states: set[int] = set()

    def seen() -> None:
        states.update((client.state, server.state))

    wire.run(lambda: client.state == TIME_WAIT, pump=seen)
    assert CLOSING in states  # each got the other's FIN before the ACK of its own
    assert wire.run(lambda: client.state == server.state == TIME_WAIT)
    wire.run(for_time=61)
    assert len(wire.a) == len(wire.b) == 0


def test_half_close_keeps_the_other_direction_open() -> None:
    wire = Wire()
    client, server = wire.connect()
    client.shutdown(wire.now)
    assert wire.run(lambda: server.state == CLOSE_WAIT and client.state == FIN_WAIT_2)
    server.send(b"still talking", wire.now)
    assert wire.run(lambda: client.readable == 13)
    assert client.recv(100, wire.now) == b"still talking"
    with pytest.raises(BrokenPipeError):
        client.send(b"no", wire.now)
    server.close(wire.now)
    assert wire.run(lambda: client.state == TIME_WAIT and server.state == CLOSED)


def test_closing_with_unread_data_resets() -> None:
    wire = Wire()
    client, server = wire.connect()
    client.send(b"unread", wire.now)
    wire.run(lambda: server.readable == 6)
    server.close(wire.now)  # RFC 2525 2.17: data would be lost silently otherwise
    assert server.state == CLOSED
    assert wire.run(lambda: client.state == CLOSED)
    assert client.error == RESET and events_of(wire.a)[client] & EV_RESET


def test_fin_wait_2_of_a_closed_connection_times_out() -> None:
    wire = Wire()
    client, _server = wire.connect()
    client.close(wire.now)
    assert wire.run(lambda: client.state == FIN_WAIT_2)
    wire.run(for_time=59)
    assert client.state == FIN_WAIT_2
    wire.run(for_time=2)
    assert client.state == CLOSED  # the server never closed: 60 s, as Linux's tcp_fin_timeout


# Resets.


def test_a_closed_port_answers_a_syn_with_a_reset() -> None:
    wire = Wire()
    wire.trace = []
    client = wire.a.connect(B_IP, 9, wire.now)
    assert wire.run(lambda: client.state == CLOSED)
    syn, rst = (seg for _, _, seg in wire.trace)
    assert rst.flags == RST | ACK and rst.seq == 0 and rst.ack == (syn.seq + 1) & 0xFFFFFFFF
    assert client.error == REFUSED and events_of(wire.a)[client] & EV_RESET
    with pytest.raises(ConnectionRefusedError):
        client.send(b"x", wire.now)
    assert len(wire.a) == 0


def test_resets_for_segments_that_match_nothing() -> None:
    layer = TcpLayer(seeded(1), local_ip=A_IP)
    peer = RawPeer(layer)
    peer.send(80, 1000, 5555, ACK, payload=b"data")
    (rst,) = peer.take()
    assert rst.flags == RST and rst.seq == 5555  # RFC 9293 3.10.7.1: SEQ from the ACK
    peer.send(80, 1000, 0, FIN, payload=b"abc")
    (rst,) = peer.take()
    assert rst.flags == RST | ACK and rst.ack == 1000 + 3 + 1
    peer.send(80, 1000, 5555, RST | ACK)
    assert peer.take() == []  # never a reset for a reset
    layer.listen(80)
    peer.send(80, 1000, 5555, ACK)  # an ACK to a listener
    (rst,) = peer.take()
    assert rst.flags == RST and rst.seq == 5555
    assert layer.stats["rst_sent"] == 3


def test_reset_in_syn_sent_needs_an_acceptable_ack() -> None:
    layer = TcpLayer(seeded(1), local_ip=A_IP)
    peer = RawPeer(layer)
    conn = layer.connect(B_IP, peer.port, 0.0)
    (syn,) = peer.take()
    peer.send(conn.local_port, 0, syn.seq + 99, RST | ACK)
    assert conn.state == SYN_SENT and peer.take() == []
    peer.send(conn.local_port, 0, syn.seq + 99, ACK)  # a bad ACK without RST: reset it
    (rst,) = peer.take()
    assert rst.flags == RST and rst.seq == (syn.seq + 99) & 0xFFFFFFFF and conn.state == SYN_SENT
    peer.send(conn.local_port, 0, syn.seq + 1, RST | ACK)
    assert conn.state == CLOSED and conn.error == REFUSED


def test_reset_in_syn_received_returns_the_listener_to_listening() -> None:
    layer = TcpLayer(seeded(1), local_ip=A_IP)
    listener = layer.listen(80, backlog=1)
    peer = RawPeer(layer)
    peer.send(80, PEER_ISN, 0, SYN)
    (syn_ack,) = peer.take()
    assert listener.queued == 1
    peer.send(80, PEER_ISN + 1, 0, RST)
    assert listener.queued == 0 and len(layer) == 0
    peer.port += 1  # the backlog has room again
    peer.send(80, PEER_ISN, 0, SYN)
    peer.send(80, PEER_ISN + 1, peer.take()[0].seq + 1, ACK)
    assert listener.ready == 1 and syn_ack.flags == SYN | ACK


@pytest.mark.parametrize("state", [ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT])
def test_an_exact_reset_aborts_a_synchronized_connection(state: int) -> None:
    layer, peer, conn = raw_client()
    conn.send(b"x", peer.now)
    peer.take()
    if state in (FIN_WAIT_1, FIN_WAIT_2):
        conn.shutdown(peer.now)
        if state == FIN_WAIT_2:
            peer.send(conn.local_port, PEER_ISN + 1, conn.iss + 3)
    if state == CLOSE_WAIT:
        peer.send(conn.local_port, PEER_ISN + 1, conn.iss + 2, ACK | FIN)
    assert conn.state == state
    peer.take()
    rcv_nxt = PEER_ISN + 1 + (state == CLOSE_WAIT)
    peer.send(conn.local_port, rcv_nxt + 10, 0, RST)  # in the window, not exact
    (challenge,) = peer.take()  # RFC 5961 3.2
    assert challenge.flags == ACK and challenge.ack == rcv_nxt and conn.state == state
    peer.send(conn.local_port, rcv_nxt + 200_000, 0, RST)  # outside: ignored
    assert peer.take() == [] and conn.state == state
    peer.send(conn.local_port, rcv_nxt, 0, RST)
    assert conn.state == CLOSED and conn.error == RESET and len(layer) == 0
    with pytest.raises(ConnectionResetError):
        conn.send(b"x", peer.now)
    if state == CLOSE_WAIT:
        assert conn.recv(10, peer.now) == b""  # the FIN came first: the end was clean
    else:
        with pytest.raises(ConnectionResetError):
            conn.recv(10, peer.now)


@pytest.mark.parametrize("state", [CLOSING, LAST_ACK, TIME_WAIT])
def test_a_reset_after_the_peers_fin_just_closes(state: int) -> None:
    layer, peer, conn = raw_client()
    fin_seq = PEER_ISN + 1
    if state == LAST_ACK:
        peer.send(conn.local_port, fin_seq, conn.iss + 1, ACK | FIN)
        conn.close(peer.now)
    else:
        conn.close(peer.now)
        if state == TIME_WAIT:
            peer.send(conn.local_port, fin_seq, conn.iss + 2, ACK)
        peer.send(conn.local_port, fin_seq, conn.iss + 1 + (state == TIME_WAIT), ACK | FIN)
    assert conn.state == state
    peer.take()
    peer.send(conn.local_port, fin_seq + 1, 0, RST)
    assert conn.state == CLOSED and conn.error is None and len(layer) == 0


def test_a_syn_on_an_established_connection_gets_a_challenge_ack() -> None:
    _layer, peer, conn = raw_client()
    peer.send(conn.local_port, PEER_ISN + 100, 0, SYN)
    (challenge,) = peer.take()  # RFC 5961 4.2
    assert challenge.flags == ACK and challenge.ack == PEER_ISN + 1
    assert conn.state == ESTABLISHED
    peer.send(conn.local_port, PEER_ISN + 100, 0, SYN)
    assert peer.take() == []  # answers to refused segments are rate limited
    peer.advance(0.6)
    peer.send(conn.local_port, PEER_ISN + 100, 0, SYN)
    assert len(peer.take()) == 1


def test_data_for_a_closed_connection_draws_a_reset() -> None:
    _layer, peer, conn = raw_client()
    conn.close(peer.now)  # nothing unread: a FIN
    assert conn.state == FIN_WAIT_1
    peer.take()
    peer.send(conn.local_port, PEER_ISN + 1, conn.iss + 2, ACK, payload=b"too late")
    (rst,) = peer.take()  # RFC 1122 4.2.2.13
    assert rst.flags & RST and conn.state == CLOSED


# Listening.


def test_the_listen_backlog_is_bounded() -> None:
    wire = Wire()
    listener = wire.b.listen(80, backlog=2)
    clients = [wire.a.connect(B_IP, 80, wire.now) for _ in range(5)]
    wire.run(lambda: listener.queued > 2, for_time=2.0)
    assert listener.queued == 2 and listener.ready == 2
    assert sum(c.state == ESTABLISHED for c in clients) == 2
    assert wire.b.stats["syn_dropped"] >= 3
    accepted = [listener.accept(), listener.accept()]
    assert all(conn is not None for conn in accepted)
    # Room again: the other clients get in as their SYNs come again.
    while sum(c.state == ESTABLISHED for c in clients) < 5:
        assert wire.run(lambda: listener.ready > 0, for_time=200)
        assert listener.queued <= 2
        listener.accept()
    assert len(wire.b) == 5


def test_closing_a_listener_resets_what_was_not_accepted() -> None:
    wire = Wire()
    listener = wire.b.listen(80)
    client = wire.a.connect(B_IP, 80, wire.now)
    wire.run(lambda: listener.ready == 1)
    listener.close(wire.now)
    assert not listener.listening
    assert wire.run(lambda: client.state == CLOSED) and client.error == RESET
    late = wire.a.connect(B_IP, 80, wire.now)
    assert wire.run(lambda: late.state == CLOSED) and late.error == REFUSED


def test_time_wait_gives_way_to_a_new_syn_from_the_same_port() -> None:
    wire = Wire()
    listener = wire.b.listen(80)
    client = wire.a.connect(B_IP, 80, wire.now, local_port=5555)
    wire.run(lambda: listener.ready == 1)
    server = listener.accept()
    assert server is not None
    server.close(wire.now)  # the server closes first: it holds the TIME-WAIT
    wire.run(lambda: client.state == CLOSE_WAIT)
    client.close(wire.now)
    assert wire.run(lambda: server.state == TIME_WAIT and client.state == CLOSED)
    wire.run(for_time=1.0)
    again = wire.a.connect(B_IP, 80, wire.now, local_port=5555)
    assert wire.run(lambda: again.state == ESTABLISHED and listener.ready == 1)
    assert server.state == CLOSED  # RFC 6191: the newer timestamp let it through


# Options honoured.


def test_window_scaling_lets_more_than_64_kib_fly() -> None:
    config = TcpConfig(recv_buffer=1 << 20)
    wire = Wire(config_a=TcpConfig(send_buffer=1 << 20), config_b=config)
    client, server = wire.connect()
    assert server.rcv_scale == client.snd_scale == 5
    most = 0

    def pump() -> None:
        nonlocal most
        client.send(bytes(1 << 16), wire.now)
        most = max(most, client.snd_max - client.snd_una)

    wire.run(lambda: server.readable >= 900_000, pump=pump)
    assert most > 65535 and client.snd_wnd > 65535
    assert server.memory <= 1 << 20


def test_without_window_scaling_the_window_stays_under_64_kib() -> None:
    wire = Wire(config_a=TcpConfig(window_scaling=False))
    client, server = wire.connect()
    assert client.snd_scale == client.rcv_scale == server.snd_scale == server.rcv_scale == 0
    most = 0

    def pump() -> None:
        nonlocal most
        client.send(bytes(1 << 16), wire.now)
        most = max(most, client.snd_max - client.snd_una)
        server.recv(1 << 20, wire.now)

    wire.run(lambda: client.snd_una > 1_000_000, pump=pump)
    assert 30000 < most <= 65535


def test_timestamps_ride_on_every_segment_and_are_echoed() -> None:
    wire = Wire()
    wire.trace = []
    client, server = wire.connect()
    client.send(bytes(50_000), wire.now)
    wire.run(lambda: server.readable == 50_000)
    sent_by: dict[bytes, set[int]] = {A_IP: set(), B_IP: set()}
    for _, src, seg in wire.trace:
        assert seg.has_ts
        sent_by[src].add(seg.tsval)
    syn = wire.trace[0][2]
    assert syn.tsecr == 0
    for _, src, seg in wire.trace[1:]:
        assert seg.tsecr in sent_by[B_IP if src == A_IP else A_IP]  # RFC 7323 3.2
    assert len(sent_by[A_IP]) > 1  # a clock that ticks: milliseconds of fake time


def test_without_timestamps_no_segment_carries_them() -> None:
    wire = Wire(config_b=TcpConfig(timestamps=False))
    wire.trace = []
    client, server = wire.connect()
    client.send(bytes(20_000), wire.now)
    wire.run(lambda: server.readable == 20_000)
    assert wire.trace[0][2].has_ts  # the SYN offers them
    assert not any(seg.has_ts for _, _, seg in wire.trace[1:])
    assert client.smss == server.smss == 1460
    assert client.srtt == pytest.approx(0.010, abs=0.002)  # timed without timestamps


def test_paws_drops_an_old_duplicate() -> None:
    layer = TcpLayer(seeded(1), local_ip=A_IP)
    peer = RawPeer(layer)
    conn = layer.connect(B_IP, peer.port, 0.0)
    (syn,) = peer.take()
    options = syn_options(1000, -1, False, (1000, syn.tsval))
    peer.send(conn.local_port, PEER_ISN, syn.seq + 1, SYN | ACK, options=options)
    peer.take()
    assert conn.timestamps
    peer.send(
        conn.local_port, PEER_ISN + 1, syn.seq + 1, ACK, b"new", options=timestamp_option(2000, 0)
    )
    assert conn.recv(10, peer.now) == b"new"
    # A segment whose timestamp is older than the last one: from an earlier incarnation.
    peer.send(
        conn.local_port, PEER_ISN + 4, syn.seq + 1, ACK, b"old", options=timestamp_option(1500, 0)
    )
    assert conn.readable == 0 and conn.rcv_nxt == 4
    peer.send(
        conn.local_port, PEER_ISN + 4, syn.seq + 1, ACK, b"ok!", options=timestamp_option(2001, 0)
    )
    assert conn.recv(10, peer.now) == b"ok!"


def test_the_peers_mss_bounds_every_segment() -> None:
    wire = Wire(config_b=TcpConfig(mtu=576))
    wire.trace = []
    client, server = wire.connect()
    assert wire.trace[1][2].mss == 536
    client.send(bytes(100_000), wire.now)
    wire.run(lambda: server.readable == 100_000)
    sizes = [len(seg.payload) for _, src, seg in wire.trace if src == A_IP]
    assert max(sizes) == 536 - 12  # less the timestamps option


def test_without_an_mss_option_536_is_assumed() -> None:
    layer = TcpLayer(seeded(1), local_ip=A_IP)
    peer = RawPeer(layer)
    conn = layer.connect(B_IP, peer.port, 0.0)
    (syn,) = peer.take()
    peer.send(conn.local_port, PEER_ISN, syn.seq + 1, SYN | ACK)
    assert conn.smss == 536  # RFC 9293 3.7.1


# Acknowledgments.


def test_delayed_ack_waits_for_a_second_segment_or_40_ms() -> None:
    _layer, peer, conn = raw_client()
    port = conn.local_port
    peer.send(port, PEER_ISN + 1, conn.iss + 1, ACK, b"a" * 100)
    assert peer.take() == []
    peer.advance(0.039)
    assert peer.take() == []
    peer.advance(0.002)
    (ack,) = peer.take()
    assert ack.ack == PEER_ISN + 101
    peer.send(port, PEER_ISN + 101, conn.iss + 1, ACK, b"b" * 100)
    peer.send(port, PEER_ISN + 201, conn.iss + 1, ACK, b"c" * 100)
    (ack,) = peer.take()  # every second segment at once (RFC 5681 4.2)
    assert ack.ack == PEER_ISN + 301


def test_an_out_of_order_segment_is_acked_at_once_with_sack() -> None:
    wire = Wire()
    client, server = wire.connect()
    wire.trace = []
    dropped: list[int] = []

    def drop_second(src: bytes, dst: bytes, seg: Segment) -> bool:
        if src == A_IP and seg.payload and len(dropped) < 1 and seg.seq != client.iss + 1:
            dropped.append(seg.seq)
            return True
        return False

    wire.drop = drop_second
    client.send(bytes(5 * 1448), wire.now)
    wire.run(lambda: server.readable == 5 * 1448)
    sacks = [seg.sack for _, src, seg in wire.trace if src == B_IP and seg.sack]
    assert sacks and sacks[0][0][0] == (dropped[0] + 1448) & 0xFFFFFFFF


def test_a_fin_that_overtakes_data_waits_for_it() -> None:
    _layer, peer, conn = raw_client()
    port = conn.local_port
    peer.send(port, PEER_ISN + 1 + 5, conn.iss + 1, ACK | FIN)  # FIN after a 5-byte hole
    assert conn.state == ESTABLISHED and conn.readable == 0
    (dup,) = peer.take()
    assert dup.ack == PEER_ISN + 1  # a duplicate ACK at once: something is missing
    peer.send(port, PEER_ISN + 1, conn.iss + 1, ACK, b"12345")
    assert conn.state == CLOSE_WAIT and conn.recv(10, peer.now) == b"12345" and conn.at_eof
    (ack,) = peer.take()
    assert ack.ack == PEER_ISN + 1 + 5 + 1


# Giving up.


def test_keepalive_probes_an_idle_peer_and_gives_up_on_a_dead_one() -> None:
    wire = Wire()
    client, _server = wire.connect()
    client.keepalive(10.0, 1.0, 3, wire.now)
    wire.trace = []
    wire.run(for_time=25)
    probes = [seg for _, src, seg in wire.trace if src == A_IP]
    assert len(probes) == 2 and client.state == ESTABLISHED  # answered each time
    assert probes[0].seq == (client.iss + client.snd_una - 1) & 0xFFFFFFFF
    wire.drop = lambda src, dst, seg: True  # the server vanishes
    wire.run(lambda: client.state == CLOSED, for_time=30)
    assert client.error == TIMED_OUT and events_of(wire.a)[client] & EV_TIMED_OUT


def test_retransmissions_give_up_after_the_configured_count() -> None:
    wire = Wire(config_a=TcpConfig(retries=4))
    client, _server = wire.connect()
    wire.drop = lambda src, dst, seg: True
    client.send(b"into the void", wire.now)
    start = wire.now
    assert wire.run(lambda: client.state == CLOSED)
    assert client.error == TIMED_OUT
    # 0.2 s minimum RTO, doubled each time: 0.2 + 0.4 + 0.8 + 1.6 + 3.2
    assert wire.now - start == pytest.approx(6.2, abs=0.05)
    with pytest.raises(TimeoutError):
        client.send(b"x", wire.now)


def test_an_unanswered_syn_backs_off_then_times_out() -> None:
    wire = Wire(config_a=TcpConfig(syn_retries=3))
    wire.drop = lambda src, dst, seg: True
    wire.trace = []
    client = wire.a.connect(B_IP, 80, wire.now)
    assert wire.run(lambda: client.state == CLOSED)
    times = [t for t, _, _ in wire.trace]
    assert times == [0.0, 1.0, 3.0, 7.0]  # RFC 6298 2.1, 5.5
    assert wire.now == 15.0 and client.error == TIMED_OUT
