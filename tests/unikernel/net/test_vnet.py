"""The in-memory switch: learning, flooding, faults, and readiness through eventfd."""

from __future__ import annotations

import select

from unikernel.drivers.vnet import Port, Switch
from unikernel.net import ethernet

from .wire import mac


def frame(destination: bytes, source: bytes, body: bytes = b"") -> bytes:
    return ethernet.build(destination, source, 0x88B5, body)  # the local experimental type


def readable(port: Port) -> bool:
    return bool(select.select([port.fileno()], [], [], 0)[0])


def test_unknown_destinations_are_flooded_then_the_switch_learns() -> None:
    switch = Switch()
    a, b, c = (switch.port(mac(n)) for n in (1, 2, 3))
    a.write_batch([frame(ethernet.BROADCAST, mac(1), b"who?")])
    assert b.read_batch(10) == [frame(ethernet.BROADCAST, mac(1), b"who?")]
    assert len(c.read_batch(10)) == 1 and a.read_batch(10) == []
    b.write_batch([frame(mac(1), mac(2), b"me")])  # a is known: only a gets it
    assert a.read_batch(10) == [frame(mac(1), mac(2), b"me")] and c.read_batch(10) == []
    c.write_batch([frame(mac(9), mac(3))])  # nobody knows mac 9: flooded
    assert len(a.read_batch(10)) == 1 and len(b.read_batch(10)) == 1


def test_the_descriptor_is_readable_exactly_while_frames_wait() -> None:
    switch = Switch()
    a, b = switch.port(mac(1)), switch.port(mac(2))
    assert not readable(b)
    a.write_batch([frame(mac(2), mac(1), b"%d" % n) for n in range(3)])
    assert readable(b)
    assert len(b.read_batch(2)) == 2 and readable(b)
    assert b.read_batch(2) == [frame(mac(2), mac(1), b"2")] and not readable(b)
    for port in (a, b):
        port.close()
    assert a.fileno() == -1


def test_frames_over_the_mtu_are_dropped() -> None:
    switch = Switch()
    a, b = switch.port(mac(1)), switch.port(mac(2), mtu=100)
    a.write_batch([frame(mac(2), mac(1), bytes(101)), frame(mac(2), mac(1), bytes(100))])
    assert [len(f) for f in b.read_batch(10)] == [114]
    assert switch.counts["dropped"] == 1


def test_faults_come_from_the_seed() -> None:
    def deliveries(seed: int) -> list[bytes]:
        switch = Switch(loss=0.2, duplicate=0.2, reorder=0.2, seed=seed)
        a, b = switch.port(mac(1)), switch.port(mac(2))
        a.write_batch([frame(mac(2), mac(1), b"%d" % n) for n in range(200)])
        counts = switch.counts
        assert counts["lost"] > 10 and counts["duplicated"] > 10 and counts["reordered"] > 10
        received = [bytes(f) for f in b.read_batch(1000)]
        assert len(received) == counts["forwarded"] == 200 - counts["lost"] + counts["duplicated"]
        return received

    first = deliveries(1)
    assert first == deliveries(1) and first != deliveries(2)
    bodies = [int(f[14:]) for f in first]
    assert bodies != sorted(bodies)


def test_full_port_queues_drop() -> None:
    switch = Switch(queue_limit=2)
    a, b = switch.port(mac(1)), switch.port(mac(2))
    a.write_batch([frame(mac(2), mac(1))] * 3)
    assert len(b.read_batch(10)) == 2 and switch.counts["dropped"] == 1


def test_a_closed_port_gets_nothing_more() -> None:
    switch = Switch()
    a, b, c = (switch.port(mac(n)) for n in (1, 2, 3))
    b.write_batch([frame(ethernet.BROADCAST, mac(2))])
    a.read_batch(10)
    b.close()
    a.write_batch([frame(mac(2), mac(1))])  # b forgotten: flooded to c alone
    assert len(c.read_batch(10)) == 2
