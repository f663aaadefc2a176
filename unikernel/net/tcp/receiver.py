"""The receive side of a connection: RCV.* (RFC 9293 3.3.1), the data, the window we offer.

Receiver holds what the peer sent us: the bytes ready for recv(), the reorder queue of what
came ahead of a hole (buffers.ReorderQueue), a FIN that came early, and the peer's timestamp
to echo (TS.Recent, RFC 7323 4.3). It decides the window field of every segment we send
(receiver SWS avoidance, RFC 9293 3.8.6.2.2) and when an ACK is owed (delayed ACKs, RFC 5681
4.2). It does not send anything itself: the sender builds every segment and reads ack and
window from here; the connection (connection.py) runs the steps of segment arrival and moves
the state when the FIN is in.

RCV.* are unwrapped: counted from the peer's initial sequence number `irs` as plain ints, the
SYN 0 and the first data byte 1.
"""

from __future__ import annotations

from unikernel.net.tcp.buffers import ReorderQueue
from unikernel.net.tcp.segment import SYN

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.net.tcp.layer import TcpLayer
    from unikernel.net.tcp.segment import Buffer, Segment
    from unikernel.net.tcp.timers import Timers

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_INF = float("inf")
_PAWS_IDLE = 24 * 24 * 3600.0  # RFC 7323 5.5: TS.Recent goes stale after 24 days idle
_ANSWER_INTERVAL = 0.5  # between ACKs to refused segments (Linux: tcp_invalid_ratelimit)
# The longest an ACK waits for a second segment when the first filled only part of a hole
# (Linux bounds its compressed SACKs by the same millisecond).
_PART_FILL_ACK_DELAY = 0.001


def wscale_for(buffer: int) -> int:
    """The smallest shift that lets a 16-bit window field cover `buffer` (RFC 7323 2.3)."""
    shift = 0
    while buffer >> shift > 0xFFFF and shift < 14:
        shift += 1
    return shift


class Receiver:
    __slots__ = (
        "_layer",
        "_timers",
        "ack_now",
        "answered_at",
        "buf",
        "charged",
        "dsack",
        "irs",
        "last_ack_sent",
        "ooo",
        "ooo_fin",
        "part_filled",
        "peer_fin",
        "rcv_adv",
        "rcv_mss",
        "rcv_nxt",
        "rcv_scale",
        "rcv_size",
        "rmss_threshold",
        "ts_ok",
        "ts_recent",
        "ts_recent_at",
        "unacked_segs",
    )

    def __init__(self, layer: TcpLayer, timers: Timers) -> None:
        config = layer.config
        self._layer = layer
        self._timers = timers
        self.charged = True  # our buffers still count towards the layer's memory
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_size = config.recv_buffer
        self.rcv_adv = 0  # right edge of the window offered: never moves left (RFC 9293 3.8.6)
        self.rcv_mss = config.mtu - 40  # the MSS we offer
        self.buf = bytearray()  # in order, waiting for recv()
        self.ooo = ReorderQueue(config.max_reorder_chunks)
        self.ooo_fin = -1  # sequence number of a FIN that came ahead of data
        # Data that arrived twice, to report once in the next ACK's first SACK block
        # (D-SACK, RFC 2883): a sender learns from it that its retransmission was needless.
        self.dsack: tuple[int, int] | None = None
        self.peer_fin = False
        self.rcv_scale = 0
        # Receiver SWS avoidance (RFC 9293 3.8.6.2.2): open the window in steps of at least
        # min(buffer / 2, MSS).
        self.rmss_threshold = min(self.rcv_size // 2, self.rcv_mss)
        self.unacked_segs = 0  # segments received since our last ACK (delayed ACK)
        self.ack_now = False
        self.part_filled = False  # one of them filled part of a hole: ACK soon, if not now
        self.answered_at = -_INF
        self.last_ack_sent = 0
        # Timestamps (RFC 7323 3, 4, 5): negotiated, and the peer's to echo.
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_at = 0.0

    # Opening.

    def offer_scale(self, window_scaling: bool) -> None:
        """Our SYN: the window scale it offers (RFC 7323 2.2)."""
        self.rcv_scale = wscale_for(self.rcv_size) if window_scaling else 0

    def take_syn(self, seg: Segment, wscale_ok: bool, ts_ok: bool, now: float) -> None:
        """The peer's SYN: its ISN, and the options both sides agreed on."""
        self.irs = seg.seq
        self.rcv_nxt = 1
        self.rcv_scale = wscale_for(self.rcv_size) if wscale_ok else 0
        self.ts_ok = ts_ok
        if ts_ok:
            self.ts_recent = seg.tsval
            self.ts_recent_at = now
        # The window our SYN offered counts from the peer's ISN + 1, unscaled (RFC 7323 2.2).
        self.rcv_adv = 1 + min(self.rcv_size, 0xFFFF)

    def reopened_by(self, seg: Segment) -> bool:
        """Whether the SYN `seg` is a new incarnation of the connection in TIME-WAIT: its
        timestamp, or else its sequence number, is past ours (RFC 9293 3.10.7.4; RFC 6191)."""
        if self.ts_ok and seg.has_ts:
            return 0 < (seg.tsval - self.ts_recent) & _MASK < _HALF
        return 0 < (seg.seq - self.irs - self.rcv_nxt) & _MASK < _HALF

    # Segments arriving.

    def paws_drop(self, seg: Segment, now: float) -> bool:
        """PAWS (RFC 7323 5.3) for a segment whose timestamp is older than TS.Recent: whether
        to drop it as an old duplicate (answering with an ACK); not if TS.Recent went stale."""
        if now - self.ts_recent_at <= _PAWS_IDLE:
            self.answer_unacceptable(seg, now)
            return True
        self.ts_recent_at = now
        return False

    def take_ts(self, tsval: int, now: float) -> None:
        """A newer timestamp to echo (RFC 7323 4.3)."""
        self.ts_recent = tsval
        self.ts_recent_at = now

    def owe_ack(self) -> None:
        """Something odd arrived: ACK at once rather than delay."""
        self.ack_now = True

    def answer_unacceptable(self, seg: Segment, now: float) -> None:
        """ACK a segment we refuse, so that a peer out of step learns where we are (RFC 9293
        3.10.7.4) or so that a forger is challenged (RFC 5961). Two ends that both disagree
        would ACK each other forever: answers to segments without data, or with SYN (what such
        a loop is made of), go out at most every _ANSWER_INTERVAL (Linux does the same)."""
        if not seg.payload or seg.flags & SYN:
            if now - self.answered_at < _ANSWER_INTERVAL:
                return
            self.answered_at = now
        self.ack_now = True

    def duplicate(self, start: int, end: int) -> None:
        """[start, end) arrived again: report it with a D-SACK (RFC 2883 4), at once."""
        if 1 <= start < end:  # data, not the SYN nor what an old wrap left below it
            self.dsack = (start, end)
            self.ack_now = True

    def receive(self, seq: int, payload: Buffer) -> bool:
        """RFC 9293 3.10.7.4, seventh step: `payload` starts at `seq` >= RCV.NXT and ends
        inside the window. Whether data became readable."""
        layer = self._layer
        size = len(payload)
        if layer.memory_used + size > layer.config.memory_limit:
            # Over the global budget: drop it, as if lost; the peer will retransmit.
            layer.stats["dropped_memory"] += 1
            self.ack_now = True
            return False
        if seq != self.rcv_nxt:
            # Out of order: keep it for later and send a duplicate ACK at once (RFC 5681 4.2),
            # which carries SACK blocks.
            ooo = self.ooo
            layer.memory_used += ooo.add(seq, payload)
            if ooo.duplicate is not None:
                self.dsack = ooo.duplicate
            self.ack_now = True
            return False
        self.buf += payload
        layer.memory_used += size
        self.rcv_nxt = rcv_nxt = seq + size
        ooo = self.ooo
        self.unacked_segs += 1
        if ooo.size:
            # This fills a hole, or part of one. Filling it reaches what waited beyond: take
            # that, and ACK at once (RFC 5681 4.2). Filling part of it (the segments a path
            # reordered arriving one by one) ACKs as in-order data does, every second
            # segment, only sooner without a second (Linux does the same): an ACK for each
            # would double the ACKs of a path that reorders, and tell the sender little more.
            before = held = ooo.size
            for piece in ooo.take(rcv_nxt):
                self.buf += piece
                rcv_nxt += len(piece)
                held -= len(piece)
            if ooo.size < before:
                layer.memory_used -= held - ooo.size  # held twice: the overlap goes
                self.rcv_nxt = rcv_nxt
                self.ack_now = True
            else:
                self.part_filled = True
        return True

    def take_fin(self, fin_seq: int) -> bool:
        """RFC 9293 3.10.7.4, eighth step: whether the FIN at `fin_seq` is in (the data before
        it all here); one that came early is remembered until the data fills in."""
        if fin_seq != self.rcv_nxt:
            if fin_seq > self.rcv_nxt:
                self.ooo_fin = fin_seq
                self.ack_now = True
            return False
        self.rcv_nxt += 1
        self.ooo_fin = -1
        self.peer_fin = True
        self.ack_now = True
        return True

    def ack_due(self, now: float, delay: float) -> bool:
        """Whether to ACK now: at least every second segment, and at once when something is
        odd (RFC 5681 4.2); otherwise the delayed ACK timer runs, if an ACK is owed."""
        if self.ack_now or self.unacked_segs >= 2:
            return True
        if self.unacked_segs and self._timers.dack_at == _INF:
            self._timers.arm_dack(now + (_PART_FILL_ACK_DELAY if self.part_filled else delay))
        return False

    # Segments leaving.

    def syn_ack_sent(self) -> None:
        """Our SYN-ACK acknowledged the peer's SYN."""
        self.last_ack_sent = self.rcv_nxt

    def ack_sent(self, owed_too: bool) -> int:
        """An ACK of RCV.NXT goes out: return its window field. `owed_too` if it also pays
        the ACK owed (not so a retransmission or probe, which the peer may drop as old:
        RFC 9293 3.10.7.4). One call for both, as every segment we send makes it.

        The window moves its right edge by the receiver's SWS rule (RFC 9293 3.8.6.2.2) and
        never to the left; it is scaled (RFC 7323 2.3)."""
        rcv_nxt = self.last_ack_sent = self.rcv_nxt
        if owed_too:
            self.unacked_segs = 0
            self.ack_now = False
            self.part_filled = False
            timers = self._timers
            if timers.dack_at != _INF:
                timers.cancel_dack()
        free = self.rcv_size - len(self.buf)
        layer = self._layer
        spare = layer.config.memory_limit - layer.memory_used
        if spare < free:
            free = max(spare, 0)  # under global pressure the window stops opening
        scale = self.rcv_scale
        if free > 0xFFFF << scale:
            free = 0xFFFF << scale  # the most the window field can say
        if rcv_nxt + free - self.rcv_adv >= self.rmss_threshold:
            self.rcv_adv = rcv_nxt + free
        window = self.rcv_adv - rcv_nxt
        # Rounding down can show the edge up to 2**scale - 1 bytes short (RFC 7323 2.4).
        return window >> scale if window > 0 else 0

    def sack_blocks(self, count: int) -> list[tuple[int, int]]:
        """Up to `count` SACK blocks (RFC 2018 4), as wire sequence numbers: a D-SACK first if
        one is due, reported this once (RFC 2883 4), then the reorder queue's, whose first is
        the run around the latest arrival, which holds the duplicate if it lies above
        RCV.NXT (RFC 2883 4's second block)."""
        irs = self.irs
        blocks = []
        dsack = self.dsack
        if dsack is not None:
            self.dsack = None
            blocks.append(dsack)
            count -= 1
        if count > 0 and self.ooo.size:
            blocks += self.ooo.blocks(count)
        return [((irs + s) & _MASK, (irs + e) & _MASK) for s, e in blocks]

    # The application's side.

    def read(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` of the data in order; b"" if none."""
        buf = self.buf
        if max_bytes >= len(buf):
            data = bytes(buf)
        else:
            with memoryview(buf) as view:
                data = bytes(view[:max_bytes])
        self.skip(len(data))
        return data

    def skip(self, max_bytes: int) -> int:
        """Remove up to `max_bytes` of the data in order, as read() does once it has copied
        them out, or unread; return how many."""
        buf = self.buf
        size = min(max_bytes, len(buf))
        if size == len(buf):
            buf.clear()
        else:
            del buf[:size]
        if self.charged:
            self._layer.memory_used -= size
        return size

    def window_grows(self) -> bool:
        """Whether a read has opened the window enough to tell the peer now rather than with
        the next ACK: the window offered is down to half the buffer or less, and would at
        least double (as Linux's tcp_cleanup_rbuf decides), by no less than the SWS step.
        A steady reader thus costs no extra ACKs; a window that had closed reopens at once."""
        offered = max(self.rcv_adv - self.rcv_nxt, 0)
        if 2 * offered > self.rcv_size:
            return False
        layer = self._layer
        free = self.rcv_size - len(self.buf)
        free = min(free, max(layer.config.memory_limit - layer.memory_used, 0))
        return free >= 2 * offered and free - offered >= self.rmss_threshold

    # Ending.

    def discard(self) -> None:
        """RFC 9293 3.10.7.4: a reset flushes the queues; recv() reports the reset."""
        if self.charged:
            self._layer.memory_used -= len(self.buf)
        self.buf.clear()

    def drop_reordered(self) -> None:
        """Free the reorder queue: no more data will be taken."""
        freed = self.ooo.clear()
        if self.charged:
            self._layer.memory_used -= freed

    def uncharge(self) -> None:
        """Unread data stays readable, but off the layer's budget."""
        if self.charged:
            self.charged = False
            self._layer.memory_used -= len(self.buf)
