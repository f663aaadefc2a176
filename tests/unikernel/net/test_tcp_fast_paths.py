"""TCP's two receive shortcuts: header prediction, which must change nothing but the time
taken, and batches, whose segments are answered together (one ACK, one burst of data)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.tcp_wire import A_IP, B_IP, PEER_ISN, RawPeer, Wire, raw_client, seeded
from unikernel.net.tcp import ACK, PSH, SYN, Connection, TcpConfig, TcpLayer
from unikernel.net.tcp.segment import syn_options, timestamp_option
from unikernel.net.tcp.states import CLOSED, ESTABLISHED

MSS = 1000


def _exchange(seed: int, loss: float, reorder: float, duplicate: float, batch: int) -> list[Any]:
    """Data both ways and a close over a lossy wire; every segment sent, as seen on it."""
    wire = Wire(seed=seed, loss=loss, reorder=reorder, duplicate=duplicate, batch=batch)
    wire.trace = []
    client, server = wire.connect()
    up = hashlib.shake_256(b"up%d" % seed).digest(150_000)
    down = hashlib.shake_256(b"down%d" % seed).digest(40_000)
    sent_up = sent_down = 0
    got_up, got_down = bytearray(), bytearray()

    def pump() -> None:
        nonlocal sent_up, sent_down
        if sent_up < len(up):
            sent_up += client.send(up[sent_up : sent_up + 65536], wire.now)
            if sent_up == len(up):
                client.shutdown(wire.now)
        if sent_down < len(down):
            sent_down += server.send(down[sent_down : sent_down + 65536], wire.now)
        got_up.extend(server.recv(1 << 20, wire.now))
        got_down.extend(client.recv(1 << 20, wire.now))
        if server.at_eof and sent_down == len(down) and server.state_name == "CLOSE-WAIT":
            server.close(wire.now)

    assert wire.run(lambda: server.state == CLOSED and client.at_eof, pump=pump)
    assert bytes(got_up) == up and bytes(got_down) == down
    return [
        (t, src, s.seq, s.ack, s.flags, s.window, bytes(s.payload), s.tsval, s.tsecr, s.sack)
        for t, src, s in wire.trace
    ]


@contextmanager
def counting_predictions() -> Iterator[list[int]]:
    """Within: [how many segments header prediction took]."""
    taken = [0]
    predicted = Connection._input_predicted

    def counting(conn: Connection, seg: Any, now: float) -> bool:
        result = predicted(conn, seg, now)
        taken[0] += result
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Connection, "_input_predicted", counting)
        yield taken


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    loss=st.sampled_from([0.0, 0.02, 0.1]),
    reorder=st.sampled_from([0.0, 0.05, 0.3]),
    duplicate=st.sampled_from([0.0, 0.05]),
    batch=st.sampled_from([1, 8]),
)
def test_header_prediction_changes_nothing_on_the_wire(
    seed: int, loss: float, reorder: float, duplicate: float, batch: int
) -> None:
    with counting_predictions() as taken:
        fast = _exchange(seed, loss, reorder, duplicate, batch)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Connection, "_input_predicted", lambda conn, seg, now: False)
        slow = _exchange(seed, loss, reorder, duplicate, batch)
    assert taken[0] > 0
    assert fast == slow


def test_header_prediction_carries_most_of_a_clean_transfer() -> None:
    wire = Wire(seed=1)
    client, server = wire.connect()
    before = wire.a.stats["segments_in"] + wire.b.stats["segments_in"]
    with counting_predictions() as taken:
        client.send(bytes(200_000), wire.now)
        assert wire.run(lambda: server.readable == 200_000 and client.send_space > 0)
        wire.run(for_time=1.0)  # the last ACKs
    arrived = wire.a.stats["segments_in"] + wire.b.stats["segments_in"] - before
    assert taken[0] >= 0.9 * arrived  # both the data and the ACKs of it


def test_batches_over_a_lossy_wire_deliver_every_byte_with_fewer_acks() -> None:
    one = _exchange(5, 0.02, 0.05, 0.01, batch=1)
    batched = _exchange(5, 0.02, 0.05, 0.01, batch=16)
    assert len(batched) < len(one)  # the same data, fewer segments: ACKs were spared


# Batches, segment by segment.


def _data(peer: RawPeer, conn: Connection, index: int) -> None:
    peer.send(conn.local_port, PEER_ISN + 1 + index * MSS, conn.iss + 1, ACK | PSH, bytes(MSS))


def test_in_order_data_in_a_batch_gets_one_ack_at_its_end() -> None:
    layer, peer, conn = raw_client(mss=MSS)
    layer.begin_batch()
    for i in range(10):
        _data(peer, conn, i)
    assert peer.take() == []  # nothing before the batch ends
    layer.end_batch(peer.now)
    (ack,) = peer.take()
    assert ack.ack == PEER_ISN + 1 + 10 * MSS and conn.readable == 10 * MSS
    # Outside a batch, every second segment is acknowledged, as before.
    for i in range(10, 20):
        _data(peer, conn, i)
    assert len(peer.take()) == 5


def test_data_out_of_order_in_a_batch_is_answered_at_once() -> None:
    layer, peer, conn = raw_client(mss=MSS, sack=True)
    layer.begin_batch()
    _data(peer, conn, 0)
    _data(peer, conn, 2)  # a hole at 1
    (dup,) = peer.take()
    assert dup.ack == PEER_ISN + 1 + MSS and dup.sack  # the duplicate ACK, with its SACK
    _data(peer, conn, 1)  # the hole filled: also answered at once
    (ack,) = peer.take()
    assert ack.ack == PEER_ISN + 1 + 3 * MSS
    layer.end_batch(peer.now)
    assert peer.take() == []  # nothing more was owed


def test_a_batch_never_leaves_more_than_64_kib_unacknowledged() -> None:
    layer, peer, conn = _sender()  # window scaling: room for more than 64 KiB
    layer.begin_batch()
    acks = []
    for i in range(60):
        peer.send(
            conn.local_port,
            PEER_ISN + 1 + i * 1448,
            conn.iss + 1,
            ACK,
            bytes(1448),
            options=timestamp_option(1001 + i, 0),
        )
        acks += peer.take()
    layer.end_batch(peer.now)
    acks += peer.take()
    assert [a.ack - PEER_ISN - 1 for a in acks] == [46 * 1448, 60 * 1448]


def test_a_batch_acks_once_half_the_window_offered_is_used() -> None:
    layer, peer, conn = raw_client(mss=MSS)  # no window scaling: 65,535 bytes offered
    layer.begin_batch()
    acks = []
    for i in range(40):
        _data(peer, conn, i)
        acks += peer.take()
    layer.end_batch(peer.now)
    acks += peer.take()
    assert [a.ack - PEER_ISN - 1 for a in acks] == [33 * MSS, 40 * MSS]  # 33,000 > 32,767


def test_a_connection_closed_during_its_batch_is_not_answered() -> None:
    layer, peer, conn = raw_client(mss=MSS)
    layer.begin_batch()
    _data(peer, conn, 0)
    conn.abort(peer.now)
    (rst,) = peer.take()
    layer.end_batch(peer.now)
    assert rst.flags & 0x04 and peer.take() == [] and conn.state == CLOSED


def _sender() -> tuple[TcpLayer, RawPeer, Connection]:
    """Layer A with timestamps and window scaling, its window large and cwnd open."""
    layer = TcpLayer(seeded(1), TcpConfig(), local_ip=A_IP)
    peer = RawPeer(layer)
    conn = layer.connect(B_IP, peer.port, 0.0)
    (syn,) = peer.take()
    options = syn_options(1460, 7, False, (1000, syn.tsval))
    peer.send(conn.local_port, PEER_ISN, syn.seq + 1, SYN | ACK, options=options)
    peer.take()
    assert conn.state == ESTABLISHED
    return layer, peer, conn


def _released_by_acks(batched: bool) -> list[list[tuple[int, int]]]:
    """What five ACKs of the initial window release, after each (batched: at the end)."""
    layer, peer, conn = _sender()
    conn.send(bytes(100 * 1448), peer.now)
    first = peer.take()
    assert sum(len(s.payload) for s in first) == 10 * 1448  # the initial window
    if batched:
        layer.begin_batch()
    released = []
    for i, seg in enumerate(first[:5]):
        end = (seg.seq + len(seg.payload)) & 0xFFFFFFFF
        options = timestamp_option(1001 + i, seg.tsval)
        peer.send(conn.local_port, PEER_ISN + 1, end, ACK, window=2000, options=options)
        released.append([(s.seq, len(s.payload)) for s in peer.take()])
    if batched:
        layer.end_batch(peer.now)
        released.append([(s.seq, len(s.payload)) for s in peer.take()])
    return released


def test_acks_in_a_batch_release_the_same_data_once_at_its_end() -> None:
    one_by_one = _released_by_acks(batched=False)
    batched = _released_by_acks(batched=True)
    assert all(released for released in one_by_one)  # each ACK let some out
    assert batched[:5] == [[]] * 5  # nothing until the batch ended
    singly = [piece for released in one_by_one for piece in released]
    burst = batched[5]
    assert burst == singly[: len(burst)]  # the same segments, from the same place
    # Within a batch the flight shrinks ACK by ACK before anything refills it, and cwnd only
    # grows while the flight fills half of it (congestion.py): at this tiny window, by one
    # segment less.
    assert len(singly) - 1 <= len(burst)
