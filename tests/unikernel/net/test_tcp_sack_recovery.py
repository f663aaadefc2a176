"""Loss recovery with SACK against a peer that behaves as Linux does, and a lossy path that
loses ACKs too: what took our TCP from 0.5 to over 4 MB/s sending 100 MB to Linux through 5 %
loss each way (test_tcp_netem). Each test plays the peer by hand with a fake clock.

- Linux's advertised window grows with almost every ACK while it tunes its receive buffer;
  its duplicate ACKs must count all the same (RFC 6675 2), or fast retransmit never starts.
- When ACKs are lost, SACK blocks still tell what arrived: recovery starts as soon as they
  show DupThresh segments above a hole (RFC 6675 5), and the window inflates by what they
  show has left the network, not by one segment per duplicate that made it.
- A lost retransmission is found from SACKs for data sent after it (RACK's insight), and a
  lost tail by a probe after two round trips (RFC 8985 7), not by a 200 ms timeout.
"""

from __future__ import annotations

from tests.support.tcp_wire import PEER_ISN, RawPeer, raw_client
from unikernel.net.tcp import Connection, Segment, TcpConfig
from unikernel.net.tcp.segment import sack_option

MSS = 1000  # what raw_client's peer offers; no timestamps, so segments carry 1000


def sack(una: int, *blocks: tuple[int, int]) -> bytes:
    """A SACK option for blocks given relative to `una` (wire sequence numbers)."""
    return sack_option([((una + a) & 0xFFFFFFFF, (una + b) & 0xFFFFFFFF) for a, b in blocks])


def start(
    size: int = 30 * MSS, config: TcpConfig | None = None
) -> tuple[RawPeer, Connection, int, int]:
    """A SACK connection with `size` bytes queued and the initial window (10 segments) sent."""
    _layer, peer, conn = raw_client(sack=True, config=config)
    assert conn.sack
    conn.send(bytes(size), peer.now)
    assert len(peer.take()) == 10
    return peer, conn, conn.iss + 1, conn.local_port


def offsets(segments: list[Segment], una: int) -> list[int]:
    return [(seg.seq - una) & 0xFFFFFFFF for seg in segments if seg.payload]


def test_duplicate_acks_count_when_the_window_grows_with_each() -> None:
    peer, conn, una, port = start()
    answers: list[Segment] = []
    for k in range(1, 4):  # segment one lost; each later one SACKed, the window a bit wider
        options = sack(una, (MSS, (k + 1) * MSS))
        peer.send(port, PEER_ISN + 1, una, window=60000 + 1000 * k, options=options)
        answers.extend(peer.take())
    # Limited transmit for the first two (RFC 3042), fast retransmit on the third.
    assert offsets(answers, una) == [10 * MSS, 11 * MSS, 0]
    assert conn.in_recovery


def test_one_ack_sacking_three_segments_starts_recovery_when_the_others_were_lost() -> None:
    peer, conn, una, port = start()
    peer.send(port, PEER_ISN + 1, una, options=sack(una, (MSS, 4 * MSS)))
    assert offsets(peer.take(), una)[0] == 0  # at once: IsLost (RFC 6675 5)
    assert conn.in_recovery


def test_a_cumulative_ack_with_new_sack_blocks_counts_as_a_duplicate() -> None:
    peer, conn, una, port = start()
    # Segment one arrived, two was lost, three to five arrived: their ACKs were lost, but
    # the ACK of segment one already carries the blocks (RFC 6675 5).
    peer.send(port, PEER_ISN + 1, una + MSS, options=sack(una, (2 * MSS, 5 * MSS)))
    assert offsets(peer.take(), una)[0] == MSS
    assert conn.in_recovery


def _into_recovery() -> tuple[RawPeer, Connection, int, int]:
    """Segment one lost, three duplicate ACKs: in recovery, one retransmission sent, twelve
    segments outstanding (ten, and two for limited transmit)."""
    peer, conn, una, port = start()
    answers: list[Segment] = []
    for k in range(1, 4):
        peer.send(port, PEER_ISN + 1, una, options=sack(una, (MSS, (k + 1) * MSS)))
        answers.extend(peer.take())
    assert offsets(answers, una) == [10 * MSS, 11 * MSS, 0]
    assert conn.in_recovery and conn.ssthresh == 6 * MSS
    return peer, conn, una, port


def test_in_recovery_the_window_grows_by_what_sack_shows_has_left() -> None:
    peer, conn, una, port = _into_recovery()
    # The duplicates for segments five to eleven were lost; the next SACKs them all. Only
    # segment one is missing: ssthresh (six segments) worth of new data may go.
    peer.send(port, PEER_ISN + 1, una, options=sack(una, (MSS, 12 * MSS)))
    assert offsets(peer.take(), una) == [12 * MSS, 13 * MSS, 14 * MSS, 15 * MSS, 16 * MSS]
    assert conn.snd_max - conn.snd_una - 11 * MSS <= conn.ssthresh


def test_a_lost_retransmission_is_sent_again_once_later_data_is_sacked() -> None:
    peer, conn, una, port = _into_recovery()
    peer.send(port, PEER_ISN + 1, una, options=sack(una, (MSS, 12 * MSS)))
    assert offsets(peer.take(), una)[0] == 12 * MSS  # new data, sent after the retransmission
    # Segment thirteen arrived, and segment one still not: its retransmission was lost.
    peer.send(port, PEER_ISN + 1, una, options=sack(una, (MSS, 13 * MSS)))
    assert offsets(peer.take(), una)[0] == 0
    assert conn.retransmits == 2 and conn.rto == 0.2  # and no timeout


def test_after_a_timeout_sacks_for_new_data_start_fast_recovery() -> None:
    config = TcpConfig(tail_loss_probe=False, initial_window=4)
    layer, peer, conn = raw_client(sack=True, config=config)
    una, port = conn.iss + 1, conn.local_port
    conn.send(bytes(30 * MSS), peer.now)
    assert offsets(peer.take(), una) == [0, MSS, 2 * MSS, 3 * MSS]  # all lost
    assert offsets([seg for _, seg in peer.run_for(0.25)], una) == [0]  # the timeout
    recover = 4 * MSS  # SND.MAX at the timeout (RFC 6582 4)
    peer.send(port, PEER_ISN + 1, una + MSS)
    assert offsets(peer.take(), una) == [MSS, 2 * MSS]  # go-back-N, in slow start
    answers = []
    for end in (3, 4):  # segment two is lost again; three and four arrive
        peer.send(port, PEER_ISN + 1, una + MSS, options=sack(una, (2 * MSS, end * MSS)))
        answers += offsets(peer.take(), una)
    # Duplicates for data sent before the timeout may echo go-back-N: no fast retransmit
    # (RFC 6582 4), only limited transmit, which reaches new data past `recover`...
    assert answers == [3 * MSS, recover] and not conn.in_recovery
    # ...and once that is SACKed, segment two is lost for sure.
    peer.send(port, PEER_ISN + 1, una + MSS, options=sack(una, (2 * MSS, recover + MSS)))
    assert offsets(peer.take(), una)[0] == MSS
    assert conn.in_recovery and layer.stats["timeouts"] == 1


def test_a_lost_tail_is_found_by_a_probe_after_two_round_trips() -> None:
    peer, conn, una, port = start(size=10 * MSS)
    peer.send(port, PEER_ISN + 1, una + 7 * MSS)  # eight to ten are lost
    assert peer.take() == []  # nothing new to send
    probes = peer.run_for(0.05)
    assert [(round(t, 3), (seg.seq - una) & 0xFFFFFFFF) for t, seg in probes] == [(0.01, 9 * MSS)]
    # The probe arrives: SACKed above a hole that left a probe timeout ago, so lost.
    peer.send(port, PEER_ISN + 1, una + 7 * MSS, options=sack(una, (9 * MSS, 10 * MSS)))
    assert offsets(peer.take(), una) == [7 * MSS]
    assert conn.in_recovery and peer.layer.stats["timeouts"] == 0


def test_a_probe_that_finds_only_a_lost_ack_keeps_the_window() -> None:
    peer, conn, una, port = start(size=10 * MSS)
    cwnd = conn.cwnd
    # Everything arrived, but the ACK was lost: the probe resends the last segment, and the
    # peer reports it as a duplicate (D-SACK, RFC 2883).
    (probe,) = [seg for _, seg in peer.run_for(0.05)]
    assert (probe.seq - una) & 0xFFFFFFFF == 9 * MSS
    peer.send(port, PEER_ISN + 1, una + 10 * MSS, options=sack(una, (9 * MSS, 10 * MSS)))
    assert conn.unacked == 0 and conn.cwnd >= cwnd


def test_a_probe_that_repaired_a_loss_reduces_the_window() -> None:
    peer, conn, una, port = start(size=10 * MSS)
    (probe,) = [seg for _, seg in peer.run_for(0.05)]  # the last segment had been lost
    assert (probe.seq - una) & 0xFFFFFFFF == 9 * MSS
    peer.send(port, PEER_ISN + 1, una + 10 * MSS)  # no D-SACK: the probe delivered it
    conn.send(bytes(MSS), peer.now)
    assert offsets(peer.take(), una) == [10 * MSS]
    cwnd = conn.cwnd
    peer.send(port, PEER_ISN + 1, una + 11 * MSS)  # beyond the probe: the episode ends
    assert conn.cwnd == conn.ssthresh == cwnd // 2  # as fast recovery would (RFC 8985 7.4.2)
