"""Microbenchmarks of TCP's hot paths.

Run them with `pytest tests/unikernel/net/test_tcp_bench.py --benchmark-enable`; by default
(--benchmark-disable) each body runs once, as a test. Batches report per-batch times: divide
by BATCH for one segment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.tcp_wire import A_IP, B_IP, PEER_ISN, RawPeer, seeded
from unikernel.net.ipv4 import TCP
from unikernel.net.stack import Stack
from unikernel.net.tcp import (
    ACK,
    PSH,
    SYN,
    Connection,
    TcpConfig,
    TcpLayer,
    build_segment,
    parse_segment,
)
from unikernel.net.tcp.segment import syn_options, timestamp_option

from .wire import make_stack, pump

Send = Callable[[bytes, bytes, float], bool]

BATCH = 128
MSS = 1448  # with timestamps, as on Ethernet
PAYLOAD = bytes(i % 251 for i in range(MSS))


def _established(
    wscale: int = -1, segmentation: bool = False, sack: bool = False
) -> tuple[TcpLayer, RawPeer, Connection, int]:
    """Layer A connected to a raw peer, with timestamps; returns the peer's TSval clock."""
    config = TcpConfig(segmentation=segmentation, send_buffer=1 << 20)
    layer = TcpLayer(seeded(1), config, local_ip=A_IP)
    peer = RawPeer(layer)
    conn = layer.connect(B_IP, peer.port, 0.0)
    (syn,) = peer.take()
    options = syn_options(1460, wscale, sack, (1000, syn.tsval))
    peer.send(conn.local_port, PEER_ISN, syn.seq + 1, SYN | ACK, options=options)
    peer.take()
    assert conn.timestamps
    return layer, peer, conn, syn.tsval


def test_parse_a_data_segment(benchmark: Any) -> None:
    data = build_segment(
        A_IP, B_IP, 4000, 80, 1, 2, ACK | PSH, 1000, timestamp_option(5, 6), PAYLOAD
    )
    seg = benchmark(parse_segment, A_IP, B_IP, data)
    assert seg is not None and len(seg.payload) == MSS and seg.has_ts


def test_build_a_data_segment(benchmark: Any) -> None:
    options = timestamp_option(5, 6)
    payload = PAYLOAD
    data = benchmark(build_segment, A_IP, B_IP, 4000, 80, 1, 2, ACK | PSH, 1000, options, payload)
    assert len(data) == 20 + 12 + MSS


def _receive_setup(
    wscale: int = -1,
) -> tuple[tuple[TcpLayer, Connection, list[bytes]], dict[str, Any]]:
    layer, peer, conn, tsecr = _established(wscale)
    segments = [
        build_segment(
            B_IP,
            A_IP,
            peer.port,
            conn.local_port,
            (PEER_ISN + 1 + i * MSS) & 0xFFFFFFFF,
            (conn.iss + 1) & 0xFFFFFFFF,
            ACK | PSH,
            65535,
            timestamp_option(1001 + i, tsecr),
            PAYLOAD,
        )
        for i in range(BATCH)
    ]
    return (layer, conn, segments), {}


def _receive(layer: TcpLayer, conn: Connection, segments: list[bytes]) -> int:
    for data in segments:
        layer.input(B_IP, A_IP, data, 0.001)
    layer.take_output()
    return conn.readable


def test_receive_path_of_in_order_data_segments(benchmark: Any) -> None:
    received = benchmark.pedantic(_receive, setup=_receive_setup, rounds=50)
    assert received == BATCH * MSS


def _receive_batched(layer: TcpLayer, conn: Connection, segments: list[bytes]) -> int:
    layer.begin_batch()
    for data in segments:
        layer.input(B_IP, A_IP, data, 0.001)
    layer.end_batch(0.001)
    acks = len(layer.take_output())
    assert acks == 3  # one per 64 KiB, and one at the end
    return conn.readable


def _receive_scaled_setup() -> tuple[tuple[TcpLayer, Connection, list[bytes]], dict[str, Any]]:
    return _receive_setup(wscale=7)


def test_receive_path_of_in_order_data_segments_read_together(benchmark: Any) -> None:
    """As the driver feeds them: a read of frames is one batch, answered with one ACK per
    64 KiB (the window scaled, as Linux offers it, so that the window does not bound it)."""
    received = benchmark.pedantic(_receive_batched, setup=_receive_scaled_setup, rounds=50)
    assert received == BATCH * MSS


def _send_setup(segmentation: bool = False) -> tuple[tuple[Connection, TcpLayer], dict[str, Any]]:
    layer, peer, conn, _ = _established(wscale=7, segmentation=segmentation)
    peer.send(conn.local_port, PEER_ISN + 1, conn.iss + 1)  # the first scaled window: 8 MiB
    conn._snd.cc.cwnd = 1 << 30  # measure the sending, not slow start
    return (conn, layer), {}


def _send(conn: Connection, layer: TcpLayer) -> int:
    conn.send(PAYLOAD * BATCH, 0.001)
    return len(layer.take_output())


def test_send_path_of_a_bulk_write(benchmark: Any) -> None:
    sent = benchmark.pedantic(_send, setup=_send_setup, rounds=50)
    assert sent == BATCH


def _send_large_setup() -> tuple[tuple[Connection, TcpLayer], dict[str, Any]]:
    return _send_setup(segmentation=True)


def test_send_path_of_a_bulk_write_where_the_link_segments(benchmark: Any) -> None:
    """TSO: the same bytes leave in a few large segments, built once with a partial checksum."""
    sent = benchmark.pedantic(_send, setup=_send_large_setup, rounds=50)
    assert sent == -(-BATCH // (65455 // MSS))  # whole MSS-sized pieces of up to 64 KiB


def _acks_setup() -> tuple[tuple[TcpLayer, list[bytes]], dict[str, Any]]:
    """A bulk sender in congestion avoidance with BATCH segments in flight and as many
    waiting, and the pure ACKs a Linux receiver returns for them: one per two segments, with
    timestamps and SACK allowed (as Linux offers them), none SACKing anything."""
    layer, peer, conn, _ = _established(wscale=7, sack=True)
    peer.send(conn.local_port, PEER_ISN + 1, conn.iss + 1)  # the first scaled window: 8 MiB
    conn._snd.cc.cwnd = conn._snd.cc.ssthresh = BATCH * MSS  # measure the ACKs, not growth
    assert conn.send(PAYLOAD * 2 * BATCH, 0.001) == 2 * BATCH * MSS
    sent = peer.take()
    assert len(sent) == BATCH
    acks = [
        build_segment(
            B_IP,
            A_IP,
            peer.port,
            conn.local_port,
            (PEER_ISN + 1) & 0xFFFFFFFF,
            (conn.iss + 1 + (i + 2) * MSS) & 0xFFFFFFFF,
            ACK,
            65535,
            timestamp_option(1001 + i, sent[i + 1].tsval),
            b"",
        )
        for i in range(0, BATCH, 2)
    ]
    return (layer, acks), {}


def _take_acks(layer: TcpLayer, acks: list[bytes]) -> int:
    layer.begin_batch()
    for data in acks:
        layer.input(B_IP, A_IP, data, 0.002)
    layer.end_batch(0.002)
    return len(layer.take_output())


def test_ack_path_of_a_bulk_send(benchmark: Any) -> None:
    """BATCH / 2 ACKs of two segments each, read together, and the BATCH segments they let
    out: the sending side of a bulk transfer, per batch (divide by BATCH for one segment)."""
    sent = benchmark.pedantic(_take_acks, setup=_acks_setup, rounds=50)
    assert sent == BATCH


def _read_setup() -> tuple[tuple[TcpLayer, Connection], dict[str, Any]]:
    (layer, conn, segments), _ = _receive_scaled_setup()
    _receive_batched(layer, conn, segments)
    return (layer, conn), {}


def _read(layer: TcpLayer, conn: Connection) -> int:
    size = len(conn.recv(1 << 20, 0.002))
    layer.take_output()
    return size


def test_read_of_received_data(benchmark: Any) -> None:
    """An application's read of what a batch brought: copied out, the window reopened."""
    read = benchmark.pedantic(_read, setup=_read_setup, rounds=50)
    assert read == BATCH * MSS


def _discard(layer: TcpLayer, conn: Connection) -> int:
    size = conn.discard(1 << 20, 0.002)
    layer.take_output()
    return size


def test_discard_of_received_data(benchmark: Any) -> None:
    """The same as the read, for an application that only counts: nothing copied out."""
    discarded = benchmark.pedantic(_discard, setup=_read_setup, rounds=50)
    assert discarded == BATCH * MSS


LARGE = PAYLOAD * (65455 // MSS)  # one large segment's worth: 45 MSS


def _super_frame_setup() -> tuple[tuple[Connection, TcpLayer, Stack, Send], dict[str, Any]]:
    (conn, layer), _ = _send_setup(segmentation=True)
    stack, peer = make_stack(1, "10.0.0.1/24"), make_stack(2, "10.0.0.2/24")
    stack.segmentation = True
    stack.ping(B_IP, 1, 1, b"arp first", 0.0)
    pump([stack, peer], 0.0)
    stack.take_frames()
    send = stack.register_protocol(TCP, lambda s, d, seg, now, vouched: None)
    return (conn, layer, stack, send), {}


def _super_frame(conn: Connection, layer: TcpLayer, stack: Stack, send: Send) -> list[bytes]:
    conn.send(LARGE, 0.001)
    for destination, _, segment in layer.take_output():
        send(destination, segment, 0.001)
    return stack.take_frames()


def test_super_frame_of_a_64_kib_write(benchmark: Any) -> None:
    """TSO end to end: a 64 KiB write through TCP and the stack to one super-frame's bytes."""
    (frame,) = benchmark.pedantic(_super_frame, setup=_super_frame_setup, rounds=200)
    assert len(frame) == 14 + 20 + 32 + len(LARGE)
