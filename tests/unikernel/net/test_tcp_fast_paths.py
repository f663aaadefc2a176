"""TCP's shortcuts: header prediction on the way in and runs of full segments on the way
out, which must change nothing but the time taken, and batches, whose segments are answered
together (one ACK, one burst of data)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.support.tcp_wire import A_IP, B_IP, PEER_ISN, RawPeer, Wire, raw_client, seeded
from unikernel.drivers.offloads import complete_checksum
from unikernel.net.segmentation import LargeSegment
from unikernel.net.tcp import ACK, FIN, PSH, RST, SYN, Connection, TcpConfig, TcpLayer
from unikernel.net.tcp.segment import (
    URG,
    build_segment,
    parse_segment,
    sack_option,
    syn_options,
    timestamp_option,
)
from unikernel.net.tcp.sender import Sender
from unikernel.net.tcp.states import CLOSED, ESTABLISHED

MSS = 1000


def _exchange(
    seed: int,
    loss: float,
    reorder: float,
    duplicate: float,
    batch: int,
    config: TcpConfig | None = None,
    runs: bool = False,
) -> list[Any]:
    """Data both ways and a close over a lossy wire; every segment sent, as seen on it."""
    wire = Wire(
        seed=seed,
        loss=loss,
        reorder=reorder,
        duplicate=duplicate,
        batch=batch,
        config_a=config,
        config_b=config,
        runs=runs,
    )
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
def counting(owner: type, method: str) -> Iterator[list[int]]:
    """Within: [the sum of what owner's `method` returned]: how many segments it took, or
    (True counting one) how many times it did."""
    taken = [0]
    original = getattr(owner, method)

    def counted(self: Any, *args: Any) -> Any:
        result = original(self, *args)
        taken[0] += result
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(owner, method, counted)
        yield taken


def counting_predictions() -> Any:
    """Within: [how many segments header prediction took]."""
    return counting(Connection, "_input_predicted")


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
    # Through heavy reordering nearly every segment carries SACK blocks (D-SACKs too), and
    # a short exchange may see none predicted: the clean transfer below shows it is used.
    assert taken[0] > 0 or reorder > 0.1
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


_CONFIGS = {
    "default": TcpConfig(),
    "no sack": TcpConfig(sack=False),
    "no timestamps": TcpConfig(timestamps=False, window_scaling=False),
    "tiny mtu": TcpConfig(mtu=576, initial_window=3),
}


# Runs of in-order segments (Connection.input_run): header prediction for a batch's segments.


def counting_runs_taken() -> Any:
    """Within: [how many segments Connection.input_run() took]."""
    return counting(Connection, "input_run")


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    loss=st.sampled_from([0.0, 0.02, 0.1]),
    reorder=st.sampled_from([0.0, 0.05, 0.3]),
    duplicate=st.sampled_from([0.0, 0.05]),
    batch=st.sampled_from([2, 8, 32]),
    config=st.sampled_from(sorted(_CONFIGS)),
)
def test_runs_taken_in_change_nothing_on_the_wire(
    seed: int, loss: float, reorder: float, duplicate: float, batch: int, config: str
) -> None:
    """The same segments, the same answers, at the same times, whether a batch's segments
    go through input() one by one or through input_run()."""
    with counting_runs_taken() as taken:
        runs = _exchange(seed, loss, reorder, duplicate, batch, _CONFIGS[config], runs=True)
    one_by_one = _exchange(seed, loss, reorder, duplicate, batch, _CONFIGS[config])
    # Without timestamps a run is never taken (input() takes each); through heavy
    # reordering nearly every segment carries SACK blocks.
    assert taken[0] > 0 or config == "no timestamps" or reorder > 0.1
    assert runs == one_by_one


def test_runs_carry_most_of_a_clean_transfer() -> None:
    wire = Wire(seed=1, batch=32, runs=True)
    client, server = wire.connect()
    with counting_runs_taken() as taken:
        assert client.send(bytes(200_000), wire.now) == 200_000
        assert wire.run(lambda: server.readable == 200_000 and client.send_space > 0)
    assert taken[0] >= 0.9 * 200_000 // 1448  # all but a few data segments (MSS 1448)


# What a run may meet: segments as a peer sends them (its data, in order, of any size), and
# each way a segment may differ from the next data in order.
_RUN_KINDS = (
    "data",
    "data",
    "data",
    "push",
    "ece",
    "bad checksum",
    "old timestamp",
    "window change",
    "pure ack",
    "gap",
    "retransmission",
    "no timestamps",
    "fin",
    "another port",
)


class _Peer:
    """The far end of a connection made by _sender(), sending `kind`s of segments."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.seq = PEER_ISN + 1
        self.tsval = 1001
        self.window = 65535
        self.last = b""

    def segment(self, kind: str, size: int) -> bytes:
        conn = self.conn
        if kind == "retransmission" and self.last:
            return self.last
        seq, tsval, flags = self.seq, self.tsval, ACK
        payload = hashlib.shake_256(b"%d" % seq).digest(size)
        options = timestamp_option(tsval, 1)
        port = 4000
        if kind == "push":
            flags |= PSH
        elif kind == "ece":
            flags |= 0x40
        elif kind == "old timestamp":
            options = timestamp_option((tsval - 100_000) & 0xFFFFFFFF, 1)
        elif kind == "window change":
            self.window -= 1
        elif kind == "pure ack":
            payload = b""
        elif kind == "gap":
            seq += 1448
            self.seq += 1448
        elif kind == "no timestamps":
            options = b""
        elif kind == "fin":
            flags |= FIN
        elif kind == "another port":
            port = 4001
        data = bytearray(
            build_segment(
                B_IP,
                A_IP,
                port,
                conn.local_port,
                seq & 0xFFFFFFFF,
                (conn.iss + 1) & 0xFFFFFFFF,
                flags,
                self.window,
                options,
                payload,
            )
        )
        if kind == "bad checksum":
            data[-1] ^= 0x20
        self.seq += len(payload) + (kind == "fin")
        self.tsval += 1
        self.last = bytes(data)
        return self.last


Batch = tuple[list[tuple[str, int]], bool]  # (kind, size) of each segment; read after it


def _fed(batches: list[Batch], runs: bool) -> list[Any]:
    """Everything a connection did with `batches` of segments, fed through input_run() or
    input() one by one: what it sent, what it received, its counters, each batch's state.
    The application reads after a batch if it says so: else the window fills."""
    layer, _, conn = _sender()
    peer = _Peer(conn)
    seen: list[Any] = []
    now = 0.0
    for batch, read in batches:
        now += 0.001
        segments = [peer.segment(kind, size) for kind, size in batch]
        vouched = 0b100 if len(segments) > 2 else 0  # the link vouched for the third
        layer.begin_batch()
        if runs:
            layer.input_run(B_IP, A_IP, segments, vouched, now)
        else:
            for index, data in enumerate(segments):
                layer.input(B_IP, A_IP, data, now, vouched >> index & 1 == 1)
        layer.end_batch(now)
        rcv, snd = conn._rcv, conn._snd
        seen.append(
            (
                [bytes(data) for _, _, data in layer.take_output()],
                conn.recv(1 << 20, now) if read else conn.readable,
                conn.state_name,
                dict(layer.stats),
                layer.memory_used,
                (rcv.rcv_nxt, rcv.ts_recent, rcv.ts_recent_at, rcv.last_ack_sent, rcv.rcv_adv),
                (snd.wl1, snd.wl2, snd.snd_wnd),
                layer.next_deadline(),
            )
        )
        layer.tick(now)
    return seen


_FULL = [("data", 1448)] * 60  # past the 64 KiB after which an ACK waits no longer


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.lists(
                st.tuples(st.sampled_from(_RUN_KINDS), st.sampled_from([1, 100, 1448])),
                min_size=1,
                max_size=60,
            ),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
@example(batches=[(_FULL, True)])
@example(batches=[(_FULL, False)] * 5)  # the window fills: the run stops at its edge
@example(batches=[([("data", 100), ("data", 100), ("bad checksum", 100), ("data", 100)], True)])
def test_a_run_does_what_input_does_with_any_batch(batches: list[Batch]) -> None:
    """Segments in order and every way one may not be (a bad checksum, vouched for or not,
    PAWS, another window, a gap, a duplicate, a FIN, another connection's, past the window):
    the run takes what it may and leaves the rest to input(), with the same outcome."""
    assert _fed(batches, runs=True) == _fed(batches, runs=False)


# Runs of full segments (Sender._send_run), the way out's shortcut.


def counting_runs() -> Any:
    """Within: [how many runs of segments output() sent]."""
    return counting(Sender, "_send_run")


@contextmanager
def without_shortcuts() -> Iterator[None]:
    """Within: every segment takes the general path, in and out."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Connection, "_input_predicted", lambda conn, seg, now: False)
        patch.setattr(Sender, "_send_run", lambda snd, seq, limit, now: False)
        yield


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    loss=st.sampled_from([0.0, 0.02, 0.1]),
    reorder=st.sampled_from([0.0, 0.05, 0.3]),
    duplicate=st.sampled_from([0.0, 0.05]),
    batch=st.sampled_from([1, 8]),
    config=st.sampled_from(sorted(_CONFIGS)),
)
def test_runs_of_segments_change_nothing_on_the_wire(
    seed: int, loss: float, reorder: float, duplicate: float, batch: int, config: str
) -> None:
    with counting_runs() as taken:
        fast = _exchange(seed, loss, reorder, duplicate, batch, _CONFIGS[config])
    with without_shortcuts():
        slow = _exchange(seed, loss, reorder, duplicate, batch, _CONFIGS[config])
    assert taken[0] > 0
    assert fast == slow


def _bulk_sender(segmentation: bool = False) -> tuple[TcpLayer, RawPeer, Connection]:
    """_sender() with a large window and cwnd: what limits a write is the test's to set."""
    layer, peer, conn = _sender(segmentation)
    peer.send(conn.local_port, PEER_ISN + 1, conn.iss + 1)  # the first scaled window: 8 MiB
    conn._snd.cc.cwnd = 1 << 30
    return layer, peer, conn


def _sizes(segments: list[Any]) -> list[tuple[int, int]]:
    return [(len(seg.payload), seg.flags) for seg in segments]


def test_a_run_leaves_the_fin_and_a_runt_to_the_general_path() -> None:
    _, peer, conn = _bulk_sender()
    mss = conn.smss
    with counting_runs() as taken:
        conn.send(bytes(5 * mss + 100), peer.now)  # Nagle holds the runt back
        conn.shutdown(peer.now)  # until the FIN, which it carries
    assert taken[0] == 1
    assert _sizes(peer.take()) == [(mss, ACK)] * 5 + [(100, ACK | PSH | FIN)]
    _, peer, conn = _bulk_sender()
    conn._snd.queue(bytes(5 * mss))  # queued, not sent: the FIN comes with the first output
    with counting_runs() as taken:
        conn.shutdown(peer.now)
    assert taken[0] == 1
    assert _sizes(peer.take()) == [(mss, ACK)] * 4 + [(mss, ACK | PSH | FIN)]


def test_no_run_where_fewer_than_two_full_segments_fit_or_the_link_segments() -> None:
    _, peer, conn = _bulk_sender()
    conn.nodelay = True  # no Nagle: a runt goes at once
    mss = conn.smss
    with counting_runs() as taken:
        conn.send(bytes(mss + 10), peer.now)  # one full segment and a runt
        assert _sizes(peer.take()) == [(mss, ACK), (10, ACK | PSH)]
        # All acknowledged, and a window of a segment and a half: one full segment fits.
        everything = conn.iss + conn.snd_max
        peer.send(conn.local_port, PEER_ISN + 1, everything, window=(3 * mss // 2) >> 7)
        conn.send(bytes(4 * mss), peer.now)
        assert _sizes(peer.take()) == [(mss, ACK)]
    assert taken[0] == 0
    layer, peer, conn = _bulk_sender(segmentation=True)
    with counting_runs() as taken:
        conn.send(bytes(10 * mss), peer.now)
    ((_, _, large),) = layer.take_output()  # one segment for the link to cut
    assert taken[0] == 0 and isinstance(large, LargeSegment) and large.segment_size == mss


def test_a_large_segment_holds_the_data_from_its_place_in_the_send_buffer() -> None:
    layer, peer, conn = _bulk_sender(segmentation=True)
    mss = conn.smss
    first, second = bytes(range(256)) * (10 * mss // 256), os.urandom(20 * mss)
    conn.send(first, peer.now)
    layer.take_output()
    # Half of it acknowledged: the send buffer lets go of it (no view of it is left behind),
    # and the next large segment starts within it.
    peer.send(conn.local_port, PEER_ISN + 1, conn.iss + 1 + len(first) // 2)
    conn.send(second, peer.now)
    ((_, _, large),) = layer.take_output()
    assert isinstance(large, LargeSegment) and large.segment_size == mss
    segment = bytearray(large.segment)
    assert complete_checksum(memoryview(segment), 0, 16)
    parsed = parse_segment(A_IP, B_IP, segment)
    assert parsed is not None and parsed.seq == (conn.iss + 1 + len(first)) & 0xFFFFFFFF
    assert bytes(parsed.payload) == second


def test_resent_data_never_goes_in_a_run() -> None:
    _, peer, conn = _bulk_sender()
    mss = conn.smss
    conn.send(bytes(6 * mss), peer.now)
    first = peer.take()
    assert len(first) == 6
    with counting_runs() as taken:
        resent = peer.run_for(conn.rto + 0.01)  # no ACK: the timeout resends from SND.UNA
    assert taken[0] == 0
    assert resent and resent[0][1].seq == first[0].seq


def _state(obj: object, seen: set[int] | None = None) -> dict[str, Any]:
    """Every field of a connection and of the pieces it is made of (sender, receiver, timers,
    congestion control, RTT, RACK, buffers), as plain values to compare."""
    seen = set() if seen is None else seen
    seen.add(id(obj))
    fields: dict[str, Any] = {}
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            value = getattr(obj, name, None)
            if type(value).__module__.startswith("unikernel.net.tcp.") and not isinstance(
                value, TcpLayer | TcpConfig
            ):
                if id(value) not in seen:
                    fields[name] = _state(value, seen)
            elif isinstance(value, bytearray | bytes | memoryview):
                fields[name] = bytes(value)
            elif isinstance(value, list):
                fields[name] = [list(item) if isinstance(item, list) else item for item in value]
            elif not isinstance(value, TcpLayer | TcpConfig):
                fields[name] = value
    return fields


_PEER_ACTIONS = [
    "data",  # the next data in order
    "push",  # the same, with PSH
    "gap",  # data beyond a hole
    "old",  # data from before RCV.NXT (a duplicate)
    "ack",  # a pure ACK of what we sent
    "window",  # a pure ACK with another window
    "old ts",  # the next data, its timestamp older than the last
    "sack",  # the next data, with a SACK block
    "urg",  # the next data, with URG
    "fin",  # the peer's FIN
    "rst",  # a reset in the window
    "syn",  # a SYN on the synchronized connection
    "write",  # our application sends
    "read",  # our application reads
    "time",  # time passes, timers fire
]


def _drive(actions: list[tuple[str, int]]) -> list[tuple[list[bytes], dict[str, Any]]]:
    """A raw peer plays `actions` against a connection (timestamps, SACK, window scaling);
    after each, what the layer sent and the connection's whole state."""
    layer = TcpLayer(seeded(3), TcpConfig(), local_ip=A_IP)
    peer = RawPeer(layer)
    conn = layer.connect(B_IP, peer.port, peer.now)
    (syn,) = peer.take()
    options = syn_options(1460, 7, True, (1000, syn.tsval))
    peer.send(conn.local_port, PEER_ISN, syn.seq + 1, SYN | ACK, window=2000, options=options)
    peer.take()
    seq = PEER_ISN + 1  # the peer's next byte
    heard = conn.iss + 1  # the end of what we sent, as far as the peer has seen
    tsval, tsecr, window = 1001, syn.tsval, 2000
    history = []
    for action, n in actions:
        flags, payload, at, ts = ACK, b"", seq, tsval
        extra = b""
        if action in ("data", "push", "old ts", "sack", "urg"):
            payload = bytes([n % 251]) * n
            seq += n
            flags |= PSH if action == "push" else URG if action == "urg" else 0
            ts = tsval - 5 if action == "old ts" else tsval
            if action == "sack":
                extra = sack_option([(seq + 100, seq + 200)])
        elif action == "gap":
            payload, at = bytes(n), seq + n
        elif action == "old":
            payload, at = bytes(min(n, 500)), seq - min(n, 500)
        elif action == "window":
            window = n
        elif action == "fin":
            flags |= FIN
        elif action in ("rst", "syn"):
            flags = RST if action == "rst" else SYN
            at = seq + n
        if action == "write":
            conn.send(bytes(n), peer.now)
        elif action == "read":
            conn.recv(n, peer.now)
        elif action == "time":
            peer.now += n / 10_000
            layer.tick(peer.now)
        elif conn.state != CLOSED:
            options = timestamp_option(ts, tsecr) + extra
            peer.send(conn.local_port, at, heard, flags, payload, window, options)
            tsval += 1
        sent = layer.take_output()
        for dst, src, data in sent:
            seg = parse_segment(src, dst, data)
            assert seg is not None
            end = (seg.seq + len(seg.payload) + (seg.flags & FIN)) & 0xFFFFFFFF
            if 0 < (end - heard) & 0xFFFFFFFF < 0x80000000:
                heard = end  # the peer's next ACK covers it
            tsecr = seg.tsval
        history.append(([bytes(data) for _, _, data in sent], _state(conn)))
    return history


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_PEER_ACTIONS), st.integers(1, 3000)),
        min_size=1,
        max_size=40,
    )
)
def test_the_shortcuts_leave_the_same_bytes_and_state_segment_by_segment(
    actions: list[tuple[str, int]],
) -> None:
    fast = _drive(actions)
    with without_shortcuts():
        slow = _drive(actions)
    for step, (got, want) in enumerate(zip(fast, slow, strict=True)):
        assert got == want, f"after {actions[: step + 1]}"


def _predicted_connection() -> tuple[TcpLayer, RawPeer, Connection, list[int]]:
    """_sender(), after one segment in order that header prediction took; the list holds
    the peer's next sequence number and timestamp."""
    layer, peer, conn = _sender()
    peer.send(conn.local_port, PEER_ISN + 1, conn.iss + 1)  # the first scaled window
    with counting_predictions() as taken:
        peer.send(
            conn.local_port,
            PEER_ISN + 1,
            conn.iss + 1,
            ACK,
            bytes(MSS),
            window=65535,
            options=timestamp_option(1001, 0),
        )
    assert taken[0] == 1
    peer.take()
    return layer, peer, conn, [PEER_ISN + 1 + MSS, 1002]


@pytest.mark.parametrize(
    "unusual",
    [
        "out of order",
        "duplicate",
        "sack",
        "window change",
        "fin",
        "urg",
        "rst",
        "old timestamp",
        "no timestamp",
        "data acknowledging new data",
        "nothing",  # the next data in order, as the others but for one thing
    ],
)
def test_an_unusual_segment_takes_the_general_path(unusual: str) -> None:
    _, peer, conn, (seq, tsval) = _predicted_connection()
    ack, flags, window, payload = conn.iss + 1, ACK, 65535, bytes(MSS)
    options = timestamp_option(tsval, 0)
    if unusual == "out of order":
        seq += MSS
    elif unusual == "duplicate":
        seq -= MSS
    elif unusual == "sack":
        options += sack_option([(conn.iss + 1, conn.iss + 2)])
    elif unusual == "window change":
        window = 1000
    elif unusual in ("fin", "urg", "rst"):
        flags |= {"fin": FIN, "urg": URG, "rst": RST}[unusual]
    elif unusual == "old timestamp":
        options = timestamp_option(tsval - 10, 0)
    elif unusual == "no timestamp":
        options = b""
    elif unusual == "data acknowledging new data":
        conn.send(bytes(MSS), peer.now)
        peer.take()
        ack += MSS
    with counting_predictions() as taken:
        peer.send(conn.local_port, seq, ack, flags, payload, window, options)
    assert taken[0] == (unusual == "nothing")


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


def _sender(segmentation: bool = False) -> tuple[TcpLayer, RawPeer, Connection]:
    """Layer A with timestamps and window scaling (and TSO if `segmentation`)."""
    layer = TcpLayer(seeded(1), TcpConfig(segmentation=segmentation), local_ip=A_IP)
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
