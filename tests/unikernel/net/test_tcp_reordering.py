"""The receiving side on a path that reorders: what our ACKs tell the sender, how many of them
there are, and how the data held beyond a hole is kept.

- Data that arrives twice is reported once, in the first SACK block of the next ACK (D-SACK,
  RFC 2883): below RCV.NXT, within what waits beyond a hole (then with the block around it
  second), and when PAWS drops a first copy that its retransmission overtook. Without these
  reports Linux, sending to us through 25 % reordering, could neither widen its reordering
  window nor undo its needless recoveries: it resent one segment in eight.
- A segment that fills only part of a hole is acknowledged as in-order data is, every second
  segment (within a millisecond without a second), rather than at once; one that fills it, or
  arrives beyond it, still is at once (RFC 5681 4.2).
- The reorder queue keeps a window's worth of full segments beyond one hole, and reneges only
  on chunks too small to be worth their overhead; its SACK blocks, kept as data comes and
  goes, are the runs of what it holds.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.tcp_wire import A_IP, B_IP, PEER_ISN, RawPeer, raw_client, seeded
from unikernel.net.tcp import ACK, SYN, Connection, Segment, TcpConfig, TcpLayer
from unikernel.net.tcp.buffers import ReorderQueue
from unikernel.net.tcp.segment import syn_options, timestamp_option


def _wire(blocks: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """SACK blocks relative to the peer's first data byte."""
    base = PEER_ISN + 1
    return [((a - base) & 0xFFFFFFFF, (b - base) & 0xFFFFFFFF) for a, b in blocks or []]


def _data(peer: RawPeer, conn: Connection, offset: int, size: int = 100, **kw: bytes) -> None:
    """`size` bytes of the peer's stream from `offset` (0: its first data byte)."""
    peer.send(conn.local_port, PEER_ISN + 1 + offset, conn.iss + 1, ACK, b"x" * size, **kw)


def _answers(peer: RawPeer) -> list[Segment]:
    return [seg for seg in peer.take() if not seg.payload]


# D-SACK.


def test_data_below_rcv_nxt_is_reported_once_by_dsack() -> None:
    _layer, peer, conn = raw_client(sack=True)
    _data(peer, conn, 0)
    _data(peer, conn, 100)
    assert [a.sack for a in _answers(peer)] == [None]
    _data(peer, conn, 0)  # again: the sender resent it needlessly
    (answer,) = _answers(peer)
    assert answer.ack == PEER_ISN + 201 and _wire(answer.sack) == [(0, 100)]
    _data(peer, conn, 50, 200)  # half old, half new: the old half is reported
    (answer,) = _answers(peer)
    assert answer.ack == PEER_ISN + 251 and _wire(answer.sack) == [(50, 200)]
    _data(peer, conn, 250)
    _data(peer, conn, 350)
    (answer,) = _answers(peer)
    assert answer.sack is None  # each duplicate once only
    assert conn.recv(1000, peer.now) == b"x" * 450


def test_a_duplicate_beyond_a_hole_is_reported_with_the_block_around_it() -> None:
    _layer, peer, conn = raw_client(sack=True)
    _data(peer, conn, 500)
    _data(peer, conn, 100)
    _data(peer, conn, 200)
    assert [_wire(a.sack) for a in _answers(peer)] == [
        [(500, 600)],
        [(100, 200), (500, 600)],
        [(100, 300), (500, 600)],
    ]
    _data(peer, conn, 150, 100)  # all of it held already
    (answer,) = _answers(peer)
    assert answer.ack == PEER_ISN + 1
    assert _wire(answer.sack) == [(150, 250), (100, 300), (500, 600)]  # RFC 2883 4.1.2


def test_a_first_copy_paws_drops_after_its_retransmission_is_reported_by_dsack() -> None:
    layer = TcpLayer(seeded(1), TcpConfig(), A_IP)
    peer = RawPeer(layer)
    conn = layer.connect(B_IP, peer.port, peer.now)
    (syn,) = peer.take()
    options = syn_options(1012, -1, True, (1000, syn.tsval))
    peer.send(conn.local_port, PEER_ISN, syn.seq + 1, SYN | ACK, options=options)
    peer.take()
    assert conn.sack and conn.timestamps
    _data(peer, conn, 100, options=timestamp_option(1002, 0))  # segment 0 is late
    _data(peer, conn, 0, options=timestamp_option(1005, 0))  # its retransmission
    assert [_wire(a.sack) for a in _answers(peer)] == [[(100, 200)], []]
    _data(peer, conn, 0, options=timestamp_option(1001, 0))  # the first copy, at last
    (answer,) = _answers(peer)
    assert answer.ack == PEER_ISN + 201 and _wire(answer.sack) == [(0, 100)]
    assert conn.recv(1000, peer.now) == b"x" * 200


# How many ACKs.


def test_filling_part_of_a_hole_acks_every_second_segment_or_within_a_millisecond() -> None:
    _layer, peer, conn = raw_client(sack=True)
    _data(peer, conn, 400)  # beyond a hole: at once
    assert len(_answers(peer)) == 1
    _data(peer, conn, 0)  # part of the hole
    assert _answers(peer) == []
    _data(peer, conn, 100)  # a second: as in-order data
    (answer,) = _answers(peer)
    assert answer.ack == PEER_ISN + 201
    _data(peer, conn, 200)  # part again, and no second comes
    assert _answers(peer) == []
    sent = peer.run_for(0.01)
    assert [(round(t, 4), seg.ack) for t, seg in sent] == [(0.001, PEER_ISN + 301)]
    _data(peer, conn, 300)  # the rest of the hole: at once, up to what waited
    (answer,) = _answers(peer)
    assert answer.ack == PEER_ISN + 501 and answer.sack is None


# The reorder queue.


def test_a_window_of_full_segments_beyond_a_hole_is_kept_and_tiny_ones_are_not() -> None:
    queue = ReorderQueue(max_chunks=128)
    for k in range(1, 200):
        queue.add(k * 1448, bytes(1448))
    assert len(queue) == 199 and queue.size == 199 * 1448  # nothing reneged on
    assert queue.blocks(4) == [(1448, 200 * 1448)]
    tiny = ReorderQueue(max_chunks=128)
    for k in range(1, 400):
        tiny.add(2 * k, b"x")  # one byte in every two
    assert len(tiny) == 128 and tiny.size == 128
    assert tiny.blocks(2) == [(2, 3), (4, 5)]  # the farthest went: the latest one with them


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(1, 60), st.integers(1, 12)),
            st.tuples(st.just("take"), st.integers(0, 70), st.just(0)),
        ),
        max_size=40,
    ),
    max_chunks=st.sampled_from([3, 8, 1000]),
)
def test_the_queue_holds_what_came_and_its_blocks_are_its_runs(
    ops: list[tuple[str, int, int]], max_chunks: int
) -> None:
    queue = ReorderQueue(max_chunks)
    held: dict[int, int] = {}  # sequence number -> byte, as a segment-by-segment model
    rcv_nxt = 0
    for op, a, b in ops:
        if op == "add" and a > rcv_nxt:
            data = bytes((a + i) % 251 for i in range(b))
            queue.add(a, data)
            new = {a + i: data[i] for i in range(b)}
            assert (queue.duplicate is None) == all(s not in held for s in new)
            held.update(new)
        elif op == "take" and a >= rcv_nxt:
            # In-order data up to `a` arrived: what the queue hands back continues it.
            taken = b"".join(queue.take(a))
            expected = bytearray()
            pos = a
            while pos in held:
                expected.append(held[pos])
                pos += 1
            assert taken == expected
            rcv_nxt = pos
            held = {s: v for s, v in held.items() if s >= rcv_nxt}
        # Reneging drops the bytes farthest from the hole: the model forgets the same.
        kept: set[int] = set()
        for start, end in queue.blocks(10_000):
            kept.update(range(start, end))
        dropped = set(held) - kept
        assert kept <= set(held)
        assert not dropped or not kept or min(dropped) > max(kept)
        assert not dropped or max_chunks < 1000
        held = {s: v for s, v in held.items() if s in kept}
        assert queue.size == len(held)
        runs: list[tuple[int, int]] = []
        for s in sorted(held):
            if runs and runs[-1][1] == s:
                runs[-1] = (runs[-1][0], s + 1)
            else:
                runs.append((s, s + 1))
        blocks = queue.blocks(10_000)
        assert sorted(blocks) == runs
        if blocks and any(start <= queue.last < end for start, end in runs):
            assert blocks[0][0] <= queue.last < blocks[0][1]  # the latest arrival's first
