"""Loss and flow: RTO (RFC 6298), NewReno (RFC 5681, 6582), SACK (RFC 2018), zero windows,
bounded memory, and bulk transfers through a lossy, reordering, duplicating wire."""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from collections.abc import Callable

import pytest

from tests.support.tcp_wire import A_IP, B_IP, PEER_ISN, Wire, raw_client
from unikernel.net.tcp import CLOSE_WAIT, CLOSED, ESTABLISHED, Connection, Segment, TcpConfig

MSS = 1000  # what raw_client's peer offers; no timestamps there, so segments carry 1000


# Retransmission timeout.


def test_rto_backs_off_then_recovers_when_acks_return() -> None:
    _layer, peer, conn = raw_client()
    una = conn.iss + 1
    conn.send(bytes(3 * MSS), peer.now)
    assert len(peer.take()) == 3
    assert conn.rto == pytest.approx(0.2)  # RTT ~0 from the handshake: the 200 ms floor
    sent = peer.run_for(3.1)
    assert [round(t, 3) for t, _ in sent] == [0.2, 0.6, 1.4, 3.0]  # doubling (RFC 6298 5.5)
    assert all(seg.seq == una and len(seg.payload) == MSS for _, seg in sent)
    assert conn.cwnd == MSS and conn.ssthresh == 2 * MSS  # RFC 5681 eq. 4, loss window
    peer.send(conn.local_port, PEER_ISN + 1, una + MSS)
    # Go back N, in slow start: the ACK opened the window to two segments.
    assert [seg.seq - una for seg in peer.take()] == [MSS, 2 * MSS]
    assert conn.rto == pytest.approx(0.2)  # the backoff is over (Karn: no sample though)
    peer.send(conn.local_port, PEER_ISN + 1, una + 3 * MSS)
    assert conn.unacked == 0 and conn.state == ESTABLISHED


@pytest.mark.parametrize("probe", [False, True], ids=["rto", "tail-loss-probe"])
def test_a_lost_tail_is_recovered_by_a_probe_or_the_retransmission_timer(probe: bool) -> None:
    config = TcpConfig(tail_loss_probe=probe)
    wire = Wire(config_a=config, config_b=config)
    client, server = wire.connect()
    lost: list[int] = []

    last = (client.iss + 1 + 9 * 1448) & 0xFFFFFFFF

    def drop_last(src: bytes, dst: bytes, seg: Segment) -> bool:
        if src == A_IP and seg.payload and seg.seq == last and not lost:
            lost.append(seg.seq)
            return True
        return False

    wire.drop = drop_last
    client.send(bytes(10 * 1448), wire.now)
    assert wire.run(lambda: server.readable == 10 * 1448)
    assert lost and wire.a.stats["retransmits"] == 1  # no dup ACKs after a tail
    if probe:
        # RFC 8985 7: the segment again after two round trips (10 ms here), not 200 ms.
        assert wire.a.stats["loss_probes"] == 1 and wire.a.stats["timeouts"] == 0
        assert wire.now < 0.05
    else:
        assert wire.a.stats["loss_probes"] == 0 and wire.a.stats["timeouts"] == 1
        assert wire.now > 0.2


def test_a_timeout_never_resends_past_what_was_sent() -> None:
    _layer, peer, conn = raw_client(window=600)
    una = conn.iss + 1
    conn.send(bytes(5000), peer.now)
    (first,) = peer.take()
    assert len(first.payload) == 600  # all the window allows
    (again,) = [seg for _, seg in peer.run_for(0.25)]
    assert again.seq == una and len(again.payload) == 600  # not a full MSS beyond the window
    assert conn.snd_nxt <= conn.snd_max == 1 + 600  # unwrapped: data starts at 1


def test_a_pure_ack_after_a_timeout_comes_from_the_highest_sequence_sent() -> None:
    _layer, peer, conn = raw_client()
    conn.send(bytes(3 * MSS), peer.now)
    peer.take()
    peer.run_for(0.25)  # the timeout: SND.NXT goes back to SND.UNA + one segment
    assert conn.snd_nxt < conn.snd_max
    peer.send(conn.local_port, PEER_ISN + 1, conn.iss + 1, payload=b"x")
    peer.send(conn.local_port, PEER_ISN + 2, conn.iss + 1, payload=b"y")
    (ack,) = peer.take()
    # From SND.NXT the peer, which has all three segments, would drop it as old.
    assert not ack.payload and ack.seq == (conn.iss + conn.snd_max) & 0xFFFFFFFF


# Fast retransmit and NewReno.


def _dup_acks_on_segment_two() -> tuple[Connection, list[Segment], int]:
    _layer, peer, conn = raw_client()
    una = conn.iss + 1
    port = conn.local_port
    conn.send(bytes(30 * MSS), peer.now)
    assert len(peer.take()) == 10  # the initial window (RFC 6928)
    peer.send(port, PEER_ISN + 1, una + MSS)  # slow start: two more
    assert [s.seq - una for s in peer.take()] == [10 * MSS, 11 * MSS]
    answers: list[Segment] = []
    for _ in range(3):  # segment two is lost; three later ones arrive
        peer.send(port, PEER_ISN + 1, una + MSS)
        answers.extend(peer.take())
    return conn, answers, una


def test_three_duplicate_acks_trigger_fast_retransmit() -> None:
    conn, answers, una = _dup_acks_on_segment_two()
    # The first two only allow new data (limited transmit, RFC 3042); the third retransmits.
    assert [s.seq - una for s in answers] == [12 * MSS, 13 * MSS, MSS]
    assert conn.in_recovery
    flight = 13 * MSS  # snd_max - snd_una when the third came
    assert conn.ssthresh == flight // 2 and conn.cwnd == flight // 2 + 3 * MSS


def test_newreno_partial_acks_retransmit_the_next_hole_and_full_ack_ends_recovery() -> None:
    layer, peer, conn = raw_client()
    una = conn.iss + 1
    port = conn.local_port
    conn.send(bytes(30 * MSS), peer.now)
    peer.take()
    answers = []
    for _ in range(3):
        peer.send(port, PEER_ISN + 1, una)  # segment one lost
        answers.extend(peer.take())
    assert [seg.seq - una for seg in answers] == [10 * MSS, 11 * MSS, 0]
    assert conn.in_recovery
    recover = una + 12 * MSS
    peer.send(port, PEER_ISN + 1, una + 4 * MSS)  # a partial ACK: segment five lost too
    (second,) = peer.take()
    assert second.seq == una + 4 * MSS and conn.in_recovery  # at once (RFC 6582 3.2)
    cwnd = conn.cwnd
    peer.send(port, PEER_ISN + 1, una + 7 * MSS)
    (third,) = peer.take()
    assert third.seq == una + 7 * MSS and conn.cwnd == cwnd - 3 * MSS + MSS  # deflated
    peer.send(port, PEER_ISN + 1, recover)  # the full ACK
    assert not conn.in_recovery and conn.cwnd <= conn.ssthresh == 12 * MSS // 2
    assert layer.stats["retransmits"] == 3


@pytest.mark.parametrize("sack", [True, False])
def test_several_losses_in_one_window_cost_one_retransmission_each(sack: bool) -> None:
    config = TcpConfig(sack=sack)
    wire = Wire(config_a=config, config_b=config)
    client, server = wire.connect()
    client.send(bytes(300_000), wire.now)  # warm up: cwnd grows past the losses below
    wire.run(lambda: server.readable == 300_000)
    server.recv(1 << 20, wire.now)
    base = client.snd_nxt
    targets = {(client.iss + base + k * 1448) & 0xFFFFFFFF for k in (5, 9, 13)}

    def drop_three(src: bytes, dst: bytes, seg: Segment) -> bool:
        if src == A_IP and seg.seq in targets and seg.payload:
            targets.discard(seg.seq)
            return True
        return False

    wire.drop = drop_three
    start = wire.now
    client.send(bytes(60 * 1448), wire.now)
    assert wire.run(lambda: server.readable == 60 * 1448)
    assert not targets and wire.a.stats["retransmits"] == 3  # no go-back-N, no timeout
    took = wire.now - start
    # SACK repairs all three holes in about one round trip; NewReno needs one per hole.
    assert took < 0.05 if sack else took > 0.04


# Zero windows and the Mirage stall.


def _fill_the_window() -> tuple[Wire, Connection, Connection]:
    wire = Wire(config_b=TcpConfig(recv_buffer=60_000))
    client, server = wire.connect()
    client.send(bytes(range(256)) * 800, wire.now)  # 200 KiB for a 64 KiB window
    wire.run(lambda: client.snd_wnd == 0 and client.snd_una == client.snd_max)
    assert server.readable == 60_000 and server.rcv_window == 0
    return wire, client, server


def test_a_zero_window_is_probed_with_backoff_and_never_given_up() -> None:
    wire, client, server = _fill_the_window()
    wire.trace = []
    wire.run(for_time=600)
    probes = [(t, seg) for t, src, seg in wire.trace if src == A_IP]
    assert len(probes) >= 6
    assert all(not seg.payload for _, seg in probes)
    una = (client.iss + client.snd_una - 1) & 0xFFFFFFFF
    assert all(seg.seq == una for _, seg in probes)  # one below SND.UNA: the peer must answer
    gaps = [round(b - a, 6) for (a, _), (b, _) in itertools.pairwise(probes)]
    assert gaps == sorted(gaps) and gaps[-1] == pytest.approx(60.0, abs=0.1)  # up to rto_max
    assert client.state == ESTABLISHED and server.memory == 60_000


def test_reading_reopens_the_window_at_once() -> None:
    wire, _client, server = _fill_the_window()
    wire.run(for_time=3)
    wire.trace = []
    read_at = wire.now
    received = server.recv(1 << 20, wire.now)
    update = wire.b.take_output()
    assert len(update) == 1  # the window update goes out from recv() itself
    wire.b.outbox.extend(update)  # and on to the wire
    got = bytearray(received)

    def reader() -> None:
        got.extend(server.recv(1 << 20, wire.now))

    assert wire.run(lambda: len(got) == 200 * 1024, pump=reader)
    assert got == bytes(range(256)) * 800
    first_data = min(t for t, src, seg in wire.trace if src == A_IP and seg.payload)
    assert first_data - read_at == pytest.approx(0.005)  # one trip, not a probe interval


def test_a_lost_window_update_is_repaired_by_the_next_probe() -> None:
    wire, _client, server = _fill_the_window()
    lost: list[float] = []

    def drop_update(src: bytes, dst: bytes, seg: Segment) -> bool:
        if src == B_IP and not lost:
            lost.append(wire.now)
            return True
        return False

    wire.drop = drop_update
    got = bytearray(server.recv(1 << 20, wire.now))

    def reader() -> None:
        got.extend(server.recv(1 << 20, wire.now))

    assert wire.run(lambda: len(got) == 200 * 1024, pump=reader, for_time=120)
    assert lost and got == bytes(range(256)) * 800


def test_a_steady_reader_costs_one_ack_per_two_segments() -> None:
    wire = Wire()
    client, server = wire.connect()
    wire.trace = []
    assert client.send(bytes(150 * 1448), wire.now) == 150 * 1448

    def reader() -> None:
        server.recv(1 << 20, wire.now)

    assert wire.run(lambda: client.unacked == 0, pump=reader)
    data = sum(1 for _, src, seg in wire.trace if src == A_IP)
    acks = sum(1 for _, src, seg in wire.trace if src == B_IP)
    assert data == 150 and 75 <= acks <= 80  # delayed ACKs, no window-update storm


# Memory.


def test_a_peer_that_never_reads_cannot_make_either_side_buffer_more() -> None:
    config_a = TcpConfig(send_buffer=100_000)
    config_b = TcpConfig(recv_buffer=50_000)
    wire = Wire(config_a=config_a, config_b=config_b)
    client, server = wire.connect()
    accepted = 0
    peaks = [0, 0]

    def pump() -> None:
        nonlocal accepted
        accepted += client.send(bytes(1 << 16), wire.now)
        peaks[0] = max(peaks[0], wire.a.memory_used)
        peaks[1] = max(peaks[1], wire.b.memory_used)

    wire.run(pump=pump, for_time=300)
    assert accepted == 150_000  # the receiver's buffer plus the sender's, not a byte more
    assert peaks == [100_000, 50_000]
    assert client.send(b"more", wire.now) == 0
    assert client.state == server.state == ESTABLISHED  # still probing, not stalled for good


def test_many_connections_share_a_bounded_memory_budget() -> None:
    limit = 300_000
    config_b = TcpConfig(memory_limit=limit, recv_buffer=64 * 1024)
    wire = Wire(seed=9, config_b=config_b)
    pairs = [wire.connect() for _ in range(20)]
    payloads = [bytes([i]) * 100_000 for i in range(20)]
    offsets = [0] * 20
    readers_on = False
    got = [bytearray() for _ in range(20)]
    peak = 0

    def pump() -> None:
        nonlocal peak
        for i, (client, server) in enumerate(pairs):
            offsets[i] += client.send(memoryview(payloads[i])[offsets[i] :], wire.now)
            if readers_on:
                got[i].extend(server.recv(1 << 20, wire.now))
        peak = max(peak, wire.b.memory_used)

    wire.run(pump=pump, for_time=30)
    assert peak <= limit and wire.b.memory_used > limit * 0.9  # full, and no further
    assert wire.b.memory_used == sum(server.memory for _, server in pairs)
    readers_on = True  # the applications start reading: every stream completes intact
    assert wire.run(lambda: all(len(g) == 100_000 for g in got), pump=pump)
    assert [bytes(g) for g in got] == payloads and peak <= limit


def all_in_state(conns: list[Connection | None], state: int) -> Callable[[], bool]:
    return lambda: all(conn is not None and conn.state == state for conn in conns)


def test_thousands_of_short_connections_leave_nothing_behind() -> None:
    wire = Wire(config_a=TcpConfig(max_time_wait=100))
    listener = wire.b.listen(80, backlog=64)
    for round_ in range(10):
        clients = [wire.a.connect(B_IP, 80, wire.now) for _ in range(50)]
        wire.run(lambda: listener.ready == 50)
        servers = [listener.accept() for _ in range(50)]
        for client in clients:
            client.send(b"hello %d" % round_, wire.now)
            client.close(wire.now)
        assert wire.run(all_in_state(servers, CLOSE_WAIT))
        for server in servers:
            assert server is not None and server.recv(100, wire.now) == b"hello %d" % round_
            assert server.at_eof
            server.close(wire.now)
        assert wire.run(lambda: len(wire.b) == 0)
    assert len(wire.a) <= 100  # TIME-WAIT bounded
    assert len(wire.a._heap) <= 2 * len(wire.a) + 64
    wire.run(for_time=61)
    assert len(wire.a) == 0 and wire.a.memory_used == wire.b.memory_used == 0


# Bulk transfers.


def transfer(size: int, *, seed: int, loss: float, reorder: float, duplicate: float) -> float:
    """Send `size` bytes from a to b and close; check them byte for byte; return CPU
    seconds spent (both ends and the wire)."""
    wire = Wire(seed=seed, loss=loss, reorder=reorder, duplicate=duplicate, verify=False)
    client, server = wire.connect()
    data = hashlib.shake_256(b"%d" % seed).digest(size)
    view = memoryview(data)
    sent = 0
    received = hashlib.sha256()
    count = 0

    def pump() -> None:
        nonlocal sent, count
        if sent < size:
            sent += client.send(view[sent : sent + 262144], wire.now)
            if sent == size:
                client.close(wire.now)
        chunk = server.recv(1 << 20, wire.now)
        count += len(chunk)
        received.update(chunk)
        if server.at_eof and server.state != CLOSED:
            server.close(wire.now)

    start = time.process_time()
    assert wire.run(lambda: server.state == CLOSED and client.state != ESTABLISHED, pump=pump)
    cpu = time.process_time() - start
    assert count == size and received.digest() == hashlib.sha256(data).digest()
    assert wire.a.memory_used == wire.b.memory_used == 0
    return cpu


@pytest.mark.parametrize("loss", [0.01, 0.05])
def test_ten_megabytes_arrive_intact_through_loss_reordering_and_duplication(
    loss: float,
) -> None:
    size = 10 * 1024 * 1024
    cpu = transfer(size, seed=11, loss=loss, reorder=0.02, duplicate=0.01)
    print(f"\n10 MiB at {loss:.0%} loss: {size / cpu / 1e6:.1f} MB/s of CPU ({cpu:.2f} s)")


def _random_exchange(seed: int) -> None:
    """Random options and buffers on each side, a random path, data both ways, a close."""
    rng = random.Random(seed)

    def config() -> TcpConfig:
        return TcpConfig(
            sack=rng.random() < 0.7,
            timestamps=rng.random() < 0.7,
            window_scaling=rng.random() < 0.7,
            recv_buffer=rng.choice([8000, 64 * 1024, 256 * 1024]),
            send_buffer=rng.choice([10000, 256 * 1024]),
            mtu=rng.choice([576, 1500, 9000]),
        )

    wire = Wire(
        seed=seed,
        loss=rng.choice([0, 0.01, 0.05, 0.1, 0.2]),
        reorder=rng.choice([0, 0.05, 0.2]),
        duplicate=rng.choice([0, 0.02, 0.1]),
        config_a=config(),
        config_b=config(),
        verify=False,
    )
    client, server = wire.connect()
    up = rng.randbytes(rng.randrange(300_000))
    down = rng.randbytes(rng.randrange(100_000))
    sent = [0, 0]
    got_up = bytearray()
    got_down = bytearray()

    def pump() -> None:
        if sent[0] < len(up):
            chunk = memoryview(up)[sent[0] : sent[0] + rng.randrange(1, 70000)]
            sent[0] += client.send(chunk, wire.now)
            if sent[0] == len(up):
                client.shutdown(wire.now)
        if sent[1] < len(down):
            sent[1] += server.send(memoryview(down)[sent[1] :], wire.now)
        elif server.at_eof and server.state == CLOSE_WAIT:
            server.close(wire.now)
        got_up.extend(server.recv(rng.randrange(1, 100000), wire.now))
        got_down.extend(client.recv(rng.randrange(1, 100000), wire.now))

    assert wire.run(lambda: client.at_eof and server.state == CLOSED, pump=pump)
    assert got_up == up and got_down == down
    wire.run(for_time=100)
    assert len(wire.a) == len(wire.b) == 0
    assert wire.a.memory_used == wire.b.memory_used == 0


def test_random_configurations_and_paths_deliver_every_byte() -> None:
    # Each of these seeds once found a bug: a retransmission past SND.MAX, an ACK sent from
    # a rewound SND.NXT, timestamps feeding the backoff into the RTT, an overlap counted twice.
    for seed in (3, 11, 106, 171, 290, *range(400, 420)):
        _random_exchange(seed)


def _reads(discard: bool) -> tuple[list[int], list[list[bytes]], list[object]]:
    """A reader taking the window's data in steps: how much each read took, what it made the
    receiver send at once, and the receiver's books after each read and once the sender has
    answered it."""
    wire, _client, server = _fill_the_window()
    wire.run(for_time=3)
    taken: list[int] = []
    updates: list[list[bytes]] = []
    books: list[object] = []
    for size in (1000, 25_000, 1 << 20, 700, 40_000, 1 << 20, 1 << 20):
        if discard:
            taken.append(server.discard(size, wire.now))
        else:
            taken.append(len(server.recv(size, wire.now)))
        sent = [bytes(data) for _, _, data in wire.b.take_output()]
        updates.append(sent)
        books.append((server.readable, server.rcv_window, server.memory, wire.b.memory_used))
        for data in sent:
            wire.b.outbox.append((A_IP, B_IP, data))
        wire.run(for_time=0.1)  # the sender fills what the read opened
        books.append((server.readable, server.rcv_window, wire.b.memory_used, wire.now))
    books.append((server.discard(1 << 20, wire.now), server.recv(1 << 20, wire.now)))
    return taken, updates, books


def test_discarding_keeps_the_books_reading_does() -> None:
    """discard() is recv() without the copy: the same counts, window updates, window and
    memory, read after read, while the sender keeps filling what each opens."""
    taken, updates, books = _reads(discard=True)
    assert (taken, updates, books) == _reads(discard=False)
    assert taken[:2] == [1000, 25_000] and sum(taken) > 60_000
    assert any(updates)  # a read reopened the window: the update went from discard() itself
