"""The in-memory wire the TCP tests run on is deterministic and loses what it is told to."""

from __future__ import annotations

from tests.support.tcp_wire import Wire


def _transfer_trace(seed: int) -> list[tuple[float, int, int]]:
    wire = Wire(seed=seed, loss=0.05, reorder=0.1, duplicate=0.05)
    wire.trace = []
    client, server = wire.connect()
    client.send(bytes(200_000), wire.now)
    wire.run(lambda: server.readable == 200_000)
    return [(t, seg.seq, len(seg.payload)) for t, _, seg in wire.trace]


def test_the_wire_is_deterministic_for_a_seed() -> None:
    first = _transfer_trace(7)
    assert first == _transfer_trace(7)
    assert first != _transfer_trace(8)


def test_the_wire_loses_about_the_share_it_is_told_and_tcp_recovers_every_byte() -> None:
    wire = Wire(seed=3, loss=0.2)
    client, server = wire.connect()
    client.nodelay = True
    sent_before = wire.sent
    arrived_before = wire.a.stats["segments_in"] + wire.b.stats["segments_in"]
    for i in range(200):
        client.send(bytes([i]), wire.now)
        wire.run(for_time=0.5)
    sent = wire.sent - sent_before
    arrived = wire.a.stats["segments_in"] + wire.b.stats["segments_in"] - arrived_before
    assert 0.75 < arrived / sent < 0.85
    assert server.recv(1000, wire.now) == bytes(range(200))
    assert wire.a.stats["retransmits"] > 20
