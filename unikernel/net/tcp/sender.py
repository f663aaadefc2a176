"""The send side of a connection: SND.* (RFC 9293 3.3.1), the send buffer, and loss repair.

Sender holds the bytes the application queued until the peer acknowledges them, and decides
what goes out when: segmentation within the peer's window and the congestion window (Nagle,
sender SWS avoidance, limited transmit), the RTT estimate and retransmission timeout (rto.py),
NewReno congestion control (congestion.py) with SACK (the scoreboard of buffers.py), fast
retransmit and recovery, tail loss probes (RFC 8985 7), window probes and our FIN.

It builds every segment the connection sends (transmit()), reading the acknowledgment, the
window and SACK blocks from the receiver (receiver.py), and arms the retransmission timer
through timers.py. The connection (connection.py) calls it for each acceptable ACK
(take_ack()) and each time the state allows output; the state itself is the connection's.

SND.* are unwrapped: counted from our initial sequence number `iss` as plain ints, the SYN 0
and the first data byte 1.
"""

from __future__ import annotations

from unikernel.net.tcp.buffers import Scoreboard
from unikernel.net.tcp.congestion import NewReno, initial_window
from unikernel.net.tcp.rto import RttEstimator
from unikernel.net.tcp.segment import (
    ACK,
    FIN,
    MAX_HEADER_LEN,
    PSH,
    SYN,
    build_large_segment,
    build_segment,
    sack_option,
    syn_options,
    timestamp_option,
)
from unikernel.net.tcp.states import EV_WRITABLE, SENDING, SYN_RECEIVED, SYN_SENT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.net.tcp.connection import Connection
    from unikernel.net.tcp.layer import TcpLayer
    from unikernel.net.tcp.receiver import Receiver
    from unikernel.net.tcp.segment import Buffer, Segment
    from unikernel.net.tcp.timers import Timers

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_INF = float("inf")
DEFAULT_MSS = 536  # RFC 9293 3.7.1: assumed when the peer sends no MSS option
_MIN_MSS = 64  # below this a peer's MSS only makes us burn CPU on tiny segments
_TS_LEN = 12  # NOP, NOP, timestamps: in every segment once negotiated (RFC 7323 3.2)
_DUP_THRESH = 3  # RFC 5681 3.2
_PTO_MIN = 0.01  # the shortest tail loss probe timeout (as Linux's, about two jiffies)
_WC_DEL_ACK = 0.2  # RFC 8985 7.2 WCDelAckT: how long a peer may delay its ACK at worst
_LARGEST_DATA = 0xFFFF - 20 - MAX_HEADER_LEN  # in one IPv4 datagram, whatever our options


class Sender:
    __slots__ = (
        "_burst",
        "_config",
        "_conn",
        "_layer",
        "_rcv",
        "_timers",
        "buf",
        "buf_seq",
        "cc",
        "charged",
        "dupacks",
        "fin_queued",
        "fin_sent",
        "iss",
        "last_send",
        "max_snd_wnd",
        "partial_acks",
        "probes",
        "retransmits",
        "rto",
        "rtt_seq",
        "rtt_time",
        "rtx_hint",
        "rtx_marks",
        "rtx_tsval",
        "sack_ok",
        "sacked",
        "smss",
        "snd_max",
        "snd_nxt",
        "snd_scale",
        "snd_size",
        "snd_una",
        "snd_wnd",
        "tlp_high",
        "tlp_retrans",
        "ts_offset",
        "want_write",
        "wl1",
        "wl2",
        "wscale_ok",
    )

    def __init__(
        self,
        conn: Connection,
        layer: TcpLayer,
        receiver: Receiver,
        timers: Timers,
        iss: int,
        ts_offset: int,
    ) -> None:
        config = layer.config
        self._conn = conn
        self._layer = layer
        self._config = config
        self._rcv = receiver
        self._timers = timers
        self.charged = True  # our buffers still count towards the layer's memory
        self.retransmits = 0
        self.iss = iss & _MASK
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_max = 0  # highest sequence sent + 1: snd_nxt goes back below it after a timeout
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self.wl1 = 0
        self.wl2 = 0
        self.buf = bytearray()  # unacknowledged and unsent data
        self.buf_seq = 1  # sequence number of buf[0]
        self.snd_size = config.send_buffer
        self.fin_queued = False  # the FIN follows the last byte of buf
        self.fin_sent = False
        self.want_write = False  # a send() was cut short: report EV_WRITABLE
        self.snd_scale = 0
        self.wscale_ok = False
        self.sack_ok = False
        self.sacked = Scoreboard(16)
        self.rtx_hint = 0  # in recovery, holes below this were retransmitted already
        # In recovery, each hole retransmitted -> SND.MAX when it was: SACKs for data beyond
        # that (sent later, arrived first) mean the retransmission was lost too.
        self.rtx_marks: dict[int, int] = {}
        self.dupacks = 0
        self.partial_acks = 0
        self.last_send = -1.0  # when data last left (-1: never)
        self.smss = config.mtu - 40
        self.ts_offset = ts_offset  # a random offset per connection (RFC 7323 5.4)
        self.rto = RttEstimator(config.rto_initial, config.rto_min, config.rto_max)
        self.rtt_seq = -1  # without timestamps: the segment being timed (Karn, RFC 6298 3)
        self.rtt_time = 0.0
        self.rtx_tsval = 0  # our timestamp when the retransmission timer last fired
        self.cc = NewReno(self.smss, config.initial_window)
        self._burst = self._largest_burst()
        self.tlp_high = -1  # SND.MAX after our probe, until its episode ends (RFC 8985 7.4)
        self.tlp_retrans = False  # the probe resent data rather than sending new data
        self.probes = 0  # window probes in a row the peer did not answer

    def _largest_burst(self) -> int:
        """The most new data one segment carries: whole MSS-sized pieces of a segment the link
        cuts (TSO), or one MSS."""
        if not self._config.segmentation:
            return self.smss
        return _LARGEST_DATA // self.smss * self.smss

    def ts_now(self, now: float) -> int:
        """Our timestamp clock: milliseconds, offset per connection (RFC 7323 5.4)."""
        return (int(now * 1000) + self.ts_offset) & _MASK

    # The application's side.

    def space(self) -> int:
        """Bytes queue() would take now."""
        layer = self._layer
        room = self.snd_size - len(self.buf)
        return max(0, min(room, layer.config.memory_limit - layer.memory_used))

    def queue(self, data: Buffer) -> int:
        """Take as much of `data` as the buffers hold; return how much."""
        size = len(data)
        layer = self._layer
        room = self.snd_size - len(self.buf)
        spare = layer.config.memory_limit - layer.memory_used
        taken = max(0, min(size, room, spare))
        if taken < size:
            self.want_write = True
            if spare < room:
                layer.wait_for_memory(self._conn)
        if taken:
            self.buf += data if taken == size else memoryview(data)[:taken]
            layer.memory_used += taken
        return taken

    def queue_fin(self) -> None:
        self.fin_queued = True

    def fin_acked(self, ack: int) -> bool:
        """Whether `ack` (unwrapped) acknowledges our FIN."""
        return self.fin_sent and ack == self.buf_seq + len(self.buf) + 1

    # Opening.

    def take_syn(self, seg: Segment, wscale_ok: bool, sack_ok: bool, ts_ok: bool) -> None:
        """The peer's SYN: its window scale and MSS, with the options both sides agreed on."""
        config = self._config
        self.wl1 = 0
        self.wscale_ok = wscale_ok
        self.snd_scale = seg.wscale if wscale_ok else 0
        self.sack_ok = sack_ok
        peer_mss = seg.mss if seg.mss > 0 else DEFAULT_MSS
        # RFC 9293 3.7.1: options in every segment come out of the MSS.
        mss = min(peer_mss, config.mtu - 40) - (_TS_LEN if ts_ok else 0)
        self.smss = max(mss, _MIN_MSS)
        self.cc = NewReno(self.smss, config.initial_window)
        self._burst = self._largest_burst()

    def cookie_syn_sent(self) -> None:
        """Our SYN-ACK went out as a SYN cookie, before this sender existed."""
        self.snd_nxt = self.snd_max = 1

    def send_syn(self, now: float) -> None:
        """SYN or SYN-ACK, with the options we offer or accept. Our window there is unscaled."""
        config = self._config
        rcv = self._rcv
        active = self._conn.state == SYN_SENT
        flags = SYN if active else SYN | ACK
        offer = config.window_scaling if active else self.wscale_ok
        wscale = rcv.rcv_scale if offer else -1
        ts = None
        if (active and config.timestamps) or rcv.ts_ok:
            ts = (self.ts_now(now), rcv.ts_recent)
        sack_ok = config.sack if active else self.sack_ok
        options = syn_options(rcv.rcv_mss, wscale, sack_ok, ts)
        window = min(rcv.rcv_size, 0xFFFF)
        ack = 0
        if flags & ACK:
            ack = (rcv.irs + rcv.rcv_nxt) & _MASK
            rcv.syn_ack_sent()
        self._put(self.iss, ack, flags, window, options, b"")
        self.snd_nxt = self.snd_max = 1
        if self.rtt_seq < 0 and self.retransmits == 0:
            self.rtt_seq = 0  # time the SYN, unless it is a retransmission (Karn)
            self.rtt_time = now
        self._timers.arm_rtx_if_idle(now + self.rto.rto)

    def established(self, seg: Segment, seq: int, ack: int) -> None:
        """The handshake is over: the peer's first window (RFC 9293 3.10.7.3, 3.10.7.4)."""
        self.snd_wnd = seg.window << self.snd_scale if not seg.flags & SYN else seg.window
        self.max_snd_wnd = self.snd_wnd
        self.wl1 = seq
        self.wl2 = ack
        if self.retransmits and not self.rto.has_sample:
            self.rto.reset(3.0)  # RFC 6298 5.7

    def syn_acked(self, seg: Segment, now: float) -> None:
        """Our SYN is acknowledged by the peer's SYN-ACK (RFC 9293 3.10.7.3)."""
        self.snd_una = 1
        self.rtt_ack(seg, 1, now)
        self.established(seg, 0, 1)
        self.rto.backoffs = 0  # the SYN is acknowledged: its timeouts are over
        self._timers.stop_rtx()

    # ACKs arriving.

    def take_ack(self, seg: Segment, seq: int, ack: int, flags: int, size: int, now: float) -> None:
        """An acceptable ACK, una <= `ack` <= SND.MAX (RFC 9293 3.10.7.4, fifth step), on a
        segment at `seq` that carries `size` bytes of data we take."""
        una = self.snd_una
        if self._timers.persist:
            self.probes = 0  # the peer answers our window probes: never give up on it
        window = seg.window << self.snd_scale
        # RFC 5681 2 counts an ACK as a duplicate only if it changes nothing, the window
        # included; with SACK, an ACK that SACKs new data counts whatever else it changes
        # (RFC 6675 2). That matters with Linux, whose window grows with almost every ACK as
        # it tunes its receive buffer: by RFC 5681 alone its duplicate ACKs would hardly ever
        # count, and nearly every loss would wait for the retransmission timer.
        sacked = self.sack_ok and seg.sack is not None and self._take_sack(seg.sack, ack)
        duplicate = (
            ack == una
            and self.snd_max > una
            and (sacked or (size == 0 and not flags & FIN and window == self.snd_wnd))
        )
        if self.wl1 < seq or (self.wl1 == seq and self.wl2 <= ack):
            # The window update rule: only segments newer than the last one that set it.
            self.snd_wnd = window
            self.wl1 = seq
            self.wl2 = ack
            if window > self.max_snd_wnd:
                self.max_snd_wnd = window
        if self.tlp_high >= 0:
            self._tlp_episode(seg, ack)
        cc = self.cc
        if ack > una:
            self.rtt_ack(seg, ack, now)
            self._new_ack(ack, now)
            if sacked and not cc.in_recovery:
                self._dup_ack(now)  # with new SACK information it counts too (RFC 6675 5)
        elif duplicate:
            self._dup_ack(now)
        if cc.in_recovery and self.sack_ok:
            cc.limit_unsacked(self.sacked.total)

    def take_predicted_ack(self, seg: Segment, seq: int, size: int, now: float) -> bool:
        """Header prediction's ACK (Connection._input_predicted): with `size` bytes of data,
        an ACK that changes nothing (neither SND.UNA nor the window); without, an ACK of new
        data. Taken as take_ack() would; False if it is not such an ACK or we are in any
        episode (recovery, tail loss probe, window probes), and then nothing changed."""
        if seg.sack is not None or self.tlp_high >= 0 or self.cc.in_recovery:
            return False
        if self._timers.persist:
            return False
        una = self.snd_una
        ack = una + ((seg.ack - self.iss - una + _HALF) & _MASK) - _HALF
        if size:
            if ack != una or seg.window << self.snd_scale != self.snd_wnd:
                return False
            # The window update rule holds: nothing before it reached past `seq`.
            self.wl1 = seq
            self.wl2 = ack
            return True
        if not una < ack <= self.snd_max:
            return False
        self.take_ack(seg, seq, ack, ACK, 0, now)
        return True

    def rtt_ack(self, seg: Segment, ack: int, now: float) -> None:
        """An RTT sample from an ACK of new data.

        The timed segment (RFC 6298 3, one per round trip, never a retransmission) comes
        first, as Linux prefers it too: an echoed timestamp deliberately overstates the RTT
        when a hole or a lost ACK delays it (RFC 7323 4.3), and on a lossy path those samples
        would drive the RTO up by seconds. Timestamps serve where Karn's rule leaves nothing
        to time: after a timeout, they measure the retransmission (RFC 7323 4.1) - if they
        echo it, and not an earlier segment whose ACK was lost, which would feed the backoff
        itself into the estimate."""
        if 0 <= self.rtt_seq < ack:
            self.rto.sample(now - self.rtt_time)
            self.rtt_seq = -1
        elif (
            self._rcv.ts_ok
            and self.rto.backoffs
            and seg.has_ts
            and (seg.tsecr - self.rtx_tsval) & _MASK < _HALF  # echoes the retransmission
        ):
            self.rto.sample(((self.ts_now(now) - seg.tsecr) & _MASK) / 1000)

    def _take_sack(self, blocks: list[tuple[int, int]], ack: int) -> bool:
        """Record the peer's SACK blocks (RFC 2018 3), ignoring any outside what we sent and
        not acknowledged by `ack` (a D-SACK, RFC 2883, reports a duplicate there); whether
        they SACKed anything new."""
        una = self.snd_una
        base = self.iss + una
        low = max(una, ack)
        new = False
        for left, right in blocks:
            start = una + ((left - base + _HALF) & _MASK) - _HALF
            end = una + ((right - base + _HALF) & _MASK) - _HALF
            if low < start < end <= self.snd_max and self.sacked.add(start, end) > 0:
                new = True
        return new

    def _new_ack(self, ack: int, now: float) -> None:
        """SND.UNA advances (RFC 9293 3.10.7.4; RFC 5681; RFC 6582; RFC 6298 5.2, 5.3)."""
        una = self.snd_una
        acked = ack - una
        buf = self.buf
        data_end = min(ack, self.buf_seq + len(buf))
        freed = data_end - self.buf_seq
        if freed > 0:
            del buf[:freed]
            self.buf_seq = data_end
            if self.charged:
                self._layer.memory_used -= freed
            if not buf or (self.want_write and len(buf) <= self.snd_size * 3 // 4):
                # Room for a writer that was cut short, or everything acknowledged (drain).
                self.want_write = False
                self._conn.emit(EV_WRITABLE)
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        self.sacked.prune(ack)
        marks = self.rtx_marks
        if marks:
            for seq in [seq for seq in marks if seq < ack]:
                del marks[seq]
        self.rto.backoffs = 0
        cc = self.cc
        restart_timer = True
        if cc.in_recovery:
            if cc.is_full_ack(ack):
                cc.on_full_ack(self.snd_max - ack)
                self.dupacks = 0
                marks.clear()
            else:
                # A partial ACK: the next hole is at `ack`. Retransmit it unless the SACK
                # logic did already (and that retransmission is not lost); RFC 6582 resets
                # the timer on the first one only.
                cc.on_partial_ack(acked)
                if ack >= self.rtx_hint:
                    self.rtx_hint = ack + self._recovery_retransmit(ack, now)
                elif self._retransmission_lost():
                    self._recovery_retransmit(ack, now)
                self.partial_acks += 1
                restart_timer = self.partial_acks == 1
        else:
            self.dupacks = 0
            cc.on_ack(max(freed, 0), self.snd_max - una)
        if self.snd_max == ack:
            self._timers.stop_rtx()  # everything acknowledged (RFC 6298 5.2)
        elif restart_timer and not self._timers.persist:
            self._start_timer(now)  # RFC 6298 5.3; RFC 8985 7.2

    def _dup_ack(self, now: float) -> None:
        """A duplicate ACK (RFC 5681 2 defines which): limited transmit, fast retransmit,
        or another segment gone from the network during recovery."""
        self.dupacks += 1
        cc = self.cc
        una = self.snd_una
        if cc.in_recovery:
            if self._retransmission_lost():
                self._recovery_retransmit(una, now)  # in place of new data, as below
                return
            hole = self._next_hole()
            if hole >= 0:
                # SACK says it is lost: resend it in place of new data (RFC 6675 spirit).
                self.rtx_hint = hole + self._recovery_retransmit(hole, now)
            else:
                cc.on_dup_ack_in_recovery()
        elif self._loss_detected(una) and (
            cc.may_enter_recovery(una) or self.sacked.highest > cc.recover
        ):
            # Fast retransmit (RFC 5681 3.2; RFC 6582 3.2 step 2). After a timeout, RFC 6582
            # 4 waits for `recover` to be acknowledged, lest the duplicates that go-back-N's
            # needless retransmissions cause count as losses; the peer SACKing data first
            # sent after the timeout is no such echo but a new loss.
            cc.enter_recovery(self.snd_max - una, self.snd_max)
            self.partial_acks = 0
            self.tlp_high = -1  # a probe's episode ends in the reduction made here
            self.rtx_hint = una + self._recovery_retransmit(una, now)
            if self._timers.tlp:
                self._start_timer(now)  # no probe during recovery: the RTO again
        # Below the threshold, output() sends new data for limited transmit (RFC 3042).

    def _loss_detected(self, una: int) -> bool:
        """Whether the segment at SND.UNA is lost: DupThresh duplicate ACKs, or sooner when
        SACK shows DupThresh segments above it though some of their ACKs were lost (RFC 6675
        5), or a hole below a tail loss probe."""
        return self.dupacks >= _DUP_THRESH or self._is_lost(una) or self._probe_found_loss()

    def _recovery_retransmit(self, seq: int, now: float) -> int:
        """_retransmit() for fast recovery, remembering how far we had sent by then."""
        self.rtx_marks[seq] = self.snd_max
        return self._retransmit(seq, now)

    def _retransmission_lost(self) -> bool:
        """Whether the hole at SND.UNA was retransmitted in this recovery and the peer has
        since SACKed data first sent after that: then the retransmission was lost as well
        (RACK's insight, RFC 8985 2), and only the retransmission timer would resend it."""
        mark = self.rtx_marks.get(self.snd_una)
        return mark is not None and self.sacked.highest > mark

    def _probe_found_loss(self) -> bool:
        """Whether the peer SACKed our tail loss probe (or the tail it probed) while data
        below stays missing: that data left at least a probe timeout (two round trips)
        before, too long ago to be merely reordered, so it is lost (RFC 8985 7.4: the
        probe's ACK lets RACK start fast recovery)."""
        return self.tlp_high >= 0 and self.sacked.highest >= self.tlp_high

    def _is_lost(self, seq: int) -> bool:
        """RFC 6675 IsLost: at least DupThresh segments' worth SACKed above `seq`."""
        above = 0
        for start, end in self.sacked.ranges:
            if start > seq:
                above += end - start
        return above >= _DUP_THRESH * self.smss

    def _next_hole(self) -> int:
        """The first unacknowledged byte not SACKed, not retransmitted yet in this recovery,
        that IsLost (RFC 6675); -1 if none."""
        sacked = self.sacked
        if not sacked:
            return -1
        seq = sacked.skip(max(self.rtx_hint, self.snd_una))
        return seq if self._is_lost(seq) else -1

    # Segments leaving.

    def output(self, now: float) -> None:
        """Send new data (and our FIN) as the windows allow (RFC 9293 3.8.6, RFC 5681)."""
        if not 1 << self._conn.state & SENDING:
            return
        buf = self.buf
        buf_seq = self.buf_seq
        buf_end = buf_seq + len(buf)
        # Our FIN is due if queued and not sent, or sent but due again after a timeout.
        fin_pending = self.fin_queued and self.snd_nxt <= buf_end
        if self.snd_nxt >= buf_end and not fin_pending:
            return  # nothing new to send: the common case on the receiving side
        una = self.snd_una
        smss = self.smss
        cc = self.cc
        if self.snd_max == una and 0 <= self.last_send < now - self.rto.rto:
            cc.on_idle(initial_window(smss, self._config.initial_window))
        cwnd = cc.cwnd
        if self.dupacks and not cc.in_recovery:
            cwnd += self.dupacks * smss  # limited transmit (RFC 3042)
        wnd_edge = una + self.snd_wnd
        edge = min(wnd_edge, una + cwnd)
        sacked = self.sacked
        sent = new = False
        while True:
            nxt = self.snd_nxt
            if nxt < self.snd_max and sacked:
                nxt = self.snd_nxt = min(sacked.skip(nxt), self.snd_max)
            avail = buf_end - nxt
            if avail <= 0:
                if fin_pending and nxt == buf_end and nxt < wnd_edge:
                    self.transmit(nxt, FIN | ACK, b"", now)  # the FIN alone
                    new |= self._account(nxt, 1, now)
                    sent = True
                    self.fin_sent = True
                    fin_pending = False
                break
            # New data may go as one segment the link cuts (TSO); what is resent goes as
            # before, one MSS at a time, around what the peer SACKed.
            size = min(avail, self._burst if nxt == self.snd_max else smss, edge - nxt)
            if size <= 0:
                break
            if size > smss and size < avail:
                size -= size % smss  # no runt inside a burst that the windows cut short
            if size < smss:
                if size < avail:
                    # A runt the window cuts short: sender SWS avoidance (RFC 9293
                    # 3.8.6.2.1) waits for half the largest window the peer offered.
                    if wnd_edge > una + cwnd or size < self.max_snd_wnd // 2:
                        break
                elif (
                    not self._conn.nodelay
                    and not self.fin_queued
                    and self.snd_max > una
                    and nxt == self.snd_max
                ):
                    break  # Nagle (RFC 896): one small segment in flight at a time
            if nxt < self.snd_max and sacked:
                stop = sacked.next_start(nxt)
                if 0 <= stop < nxt + size:
                    size = stop - nxt
            end = nxt + size
            flags = ACK | PSH if end == buf_end else ACK
            fin = fin_pending and end == buf_end and end < wnd_edge
            if fin:
                flags |= FIN
                fin_pending = False
                self.fin_sent = True
            offset = nxt - buf_seq
            self.transmit(nxt, flags, buf[offset : offset + size], now)
            new |= self._account(nxt, size + fin, now)
            sent = True
        if sent:
            # Once for the lot: at one `now`, arming after each segment ends the same.
            self._arm_after_sending(new, now)
        if self.snd_max == una and self._timers.rtx_at == _INF and (buf_end > una or fin_pending):
            # Data waits and nothing is in flight to bring an ACK: the persist timer
            # (RFC 9293 3.8.6.1) probes the window until it opens.
            self._timers.arm_persist(now + self.rto.rto)

    def _sent(self, seq: int, length: int, now: float) -> None:
        """Bookkeeping after sending [seq, seq + length) from snd_nxt."""
        self._arm_after_sending(self._account(seq, length, now), now)

    def _account(self, seq: int, length: int, now: float) -> bool:
        """_sent() without the timer: whether the segment carried new data."""
        end = seq + length
        self.snd_nxt = end
        new = end > self.snd_max
        if new:
            if self.rtt_seq < 0 and seq == self.snd_max:
                self.rtt_seq = seq
                self.rtt_time = now
            self.snd_max = end
        else:
            self.retransmits += 1
            self.rtt_seq = -1  # Karn: no sample from a retransmission
        self.last_send = now
        return new

    def _arm_after_sending(self, new: bool, now: float) -> None:
        timers = self._timers
        if timers.persist or timers.rtx_at == _INF:
            self._start_timer(now)  # RFC 6298 5.1
        elif new:
            self._start_timer(now, restart=False)  # a probe's timeout restarts (RFC 8985 7.2)

    def _retransmit(self, seq: int, now: float) -> int:
        """Resend one segment from `seq`, stopping before SACKed data; return the sequence
        space it covered (0 if nothing was left to send)."""
        buf_seq = self.buf_seq
        buf_end = buf_seq + len(self.buf)
        size = min(self.smss, buf_end - seq, self.snd_max - seq)  # never past what was sent
        stop = self.sacked.next_start(seq)
        if 0 <= stop < seq + size:
            size = stop - seq
        fin = self.fin_sent and seq + size == buf_end
        if size <= 0 and not fin:
            return 0
        flags = ACK | FIN if fin else ACK
        offset = seq - buf_seq
        self.transmit(seq, flags, self.buf[offset : offset + size], now)
        self.retransmits += 1
        self._layer.stats["retransmits"] += 1
        self.rtt_seq = -1
        timers = self._timers
        if timers.rtx_at == _INF or timers.persist:
            timers.arm_rtx(now + self.rto.rto)
        return size + fin

    def _start_timer(self, now: float, restart: bool = True) -> None:
        """(Re)start the retransmission timer: as a tail loss probe's timeout when a probe
        may go (RFC 8985 7.2), else as the retransmission timeout; `restart` False leaves
        a retransmission timeout that runs already as it is (RFC 6298 5.1)."""
        rto = self.rto.rto
        timers = self._timers
        if self._tlp_allowed():
            srtt = self.rto.srtt
            if self.snd_max - self.snd_una > self.smss:
                pto = max(2 * srtt, _PTO_MIN)
            else:
                pto = 2 * srtt + _WC_DEL_ACK  # one segment: its ACK may come delayed
            if pto < rto:
                timers.arm_tlp(now + pto)
                return
        if restart or timers.tlp or timers.persist or timers.rtx_at == _INF:
            timers.arm_rtx(now + rto)

    def _tlp_allowed(self) -> bool:
        """Whether a tail loss probe may be scheduled: SACK will show what it finds, no other
        recovery and no other probe is under way (RFC 8985 7.2)."""
        return (
            self.sack_ok
            and self._config.tail_loss_probe
            and self.tlp_high < 0
            and self.snd_max > self.snd_una
            and self.rto.has_sample
            and not self.rto.backoffs
            and not self.cc.in_recovery
            and bool(1 << self._conn.state & SENDING)
        )

    def tail_loss_probe(self, now: float) -> None:
        """The probe timeout fired (RFC 8985 7.3): send one segment, new data if the peer's
        window takes it, else the last one again, to draw an ACK whose SACK blocks start fast
        recovery instead of waiting for the retransmission timeout. Then the RTO follows."""
        una = self.snd_una
        snd_max = self.snd_max
        if snd_max == una:
            return
        buf_end = self.buf_seq + len(self.buf)
        self._layer.stats["loss_probes"] += 1
        size = min(self.smss, buf_end - snd_max, una + self.snd_wnd - snd_max)
        self.tlp_high = snd_max  # no new probe until the episode ends
        if size > 0 and self.snd_nxt == snd_max:
            self.tlp_retrans = False
            offset = snd_max - self.buf_seq
            flags = ACK | PSH if snd_max + size == buf_end else ACK
            self.transmit(snd_max, flags, self.buf[offset : offset + size], now)
            self._sent(snd_max, size, now)
            self.tlp_high = self.snd_max
        else:
            self.tlp_retrans = True
            last = max(una, min(buf_end, snd_max) - self.smss)
            self._retransmit(last, now)
        self._timers.arm_rtx(now + self.rto.rto)

    def _tlp_episode(self, seg: Segment, ack: int) -> None:
        """The ACK `ack` (unwrapped) for a probe episode (RFC 8985 7.4): the episode ends once
        an ACK covers the probe. A probe that resent data repaired a loss, calling for the
        window reduction fast recovery would have made, unless a D-SACK (RFC 2883) says both
        copies arrived or the probe was needless; Linux judges the same way."""
        high = self.tlp_high
        if ack < high:
            return
        if self.tlp_retrans:
            if self._dsack(seg, ack):
                self.tlp_high = -1  # both copies arrived: only an ACK had been lost
            elif ack > high:
                self.tlp_high = -1
                self.cc.on_probe_repair()
            return  # ack == high without a D-SACK: wait for one, or for more acknowledged
        self.tlp_high = -1

    def _dsack(self, seg: Segment, ack: int) -> bool:
        """Whether the segment's first SACK block reports data below its cumulative ACK: a
        duplicate the peer received (RFC 2883 4)."""
        if not seg.sack:
            return False
        una = self.snd_una
        right = seg.sack[0][1]
        return una + ((right - self.iss - una + _HALF) & _MASK) - _HALF <= ack

    def transmit(self, seq: int, flags: int, payload: Buffer, now: float) -> None:
        """Build and queue one segment; every one but a bare RST carries ACK, our window,
        timestamps (RFC 7323 3.2) and SACK blocks (RFC 2018 4)."""
        rcv = self._rcv
        options = b""
        if rcv.ts_ok:
            options = timestamp_option(self.ts_now(now), rcv.ts_recent)
        if self.sack_ok and rcv.ooo.size:
            # As many blocks as fit (RFC 2018 3): the MSS bounds data and options together
            # (RFC 9293 3.7.1), so a full data segment has no room for any.
            room = (self.smss - len(payload) - 4) // 8
            count = min(room, 3 if rcv.ts_ok else 4)
            if count > 0:
                options += sack_option(rcv.sack_blocks(count))
        ack = 0
        window = 0
        if flags & ACK:
            ack = (rcv.irs + rcv.rcv_nxt) & _MASK
            window = rcv.ack_sent(seq >= self.snd_max)
        self._put((self.iss + seq) & _MASK, ack, flags, window, options, payload)

    def _put(
        self, seq: int, ack: int, flags: int, window: int, options: bytes, payload: Buffer
    ) -> None:
        """Build a segment from wire values and queue it on the layer's outbox."""
        conn = self._conn
        fields = (conn.local_ip, conn.remote_ip, conn.local_port, conn.remote_port, seq, ack)
        segment: bytes | bytearray
        if len(payload) <= self.smss:
            segment = build_segment(*fields, flags, window, options, payload)
        else:  # for the link to cut (TSO): built once, its data never summed here
            segment = build_large_segment(*fields, flags, window, options, payload, self.smss)
        self._layer.outbox.append((conn.remote_ip, conn.local_ip, segment))

    def send_ack(self, now: float) -> None:
        if self._conn.state == SYN_RECEIVED:
            self.send_syn(now)
        else:
            # From SND.MAX, not SND.NXT: after a timeout SND.NXT goes back, and an ACK from
            # there would look like an old duplicate to the peer, which would ignore it (BSD
            # does the same).
            self.transmit(self.snd_max, ACK, b"", now)

    # Timers firing.

    def retransmit_timeout(self, now: float) -> bool:
        """RFC 6298 5.4 to 5.6, RFC 5681 3.1; False when R2 of RFC 9293 3.8.3 says to give
        up: this many timeouts in a row."""
        rto = self.rto
        config = self._config
        if self._conn.state in (SYN_SENT, SYN_RECEIVED):
            if rto.backoffs >= config.syn_retries:
                return False
            self.retransmits += 1
            self.rtt_seq = -1
            self.rtx_tsval = self.ts_now(now)
            rto.backoffs += 1
            self.send_syn(now)
            return True
        if rto.backoffs >= config.retries:
            return False
        una = self.snd_una
        if self.snd_max == una:
            return True  # nothing outstanding after all
        self._layer.stats["timeouts"] += 1
        self.cc.on_timeout(self.snd_max - una, self.snd_max, repeated=rto.backoffs > 0)
        if rto.backoffs:
            # A second timeout for the same data: the peer may have reneged on what it
            # SACKed (RFC 2018 8), so resend everything from SND.UNA.
            self.sacked.clear()
        rto.backoffs += 1
        self.dupacks = 0
        self.rtx_marks.clear()
        self.tlp_high = -1  # a timeout ends a probe's episode (RFC 8985 7.4)
        self.rtx_tsval = self.ts_now(now)
        self.snd_nxt = una + self._retransmit(una, now)  # then go back N as ACKs come
        self._timers.arm_rtx(now + rto.rto)
        return True

    def probe_window(self, now: float) -> bool:
        """The persist timer fired (RFC 9293 3.8.6.1; RFC 1122 4.2.2.17): send what the window
        allows even if small, else a probe one below SND.UNA that the peer must answer with
        its window. Probes back off; a peer that answers them is never given up on. False
        when `retries` probes in a row went unanswered."""
        rto = self.rto
        if self.probes >= self._config.retries:
            return False
        una = self.snd_una
        nxt = self.snd_nxt
        usable = una + self.snd_wnd - nxt
        buf_end = self.buf_seq + len(self.buf)
        rto.backoffs += 1
        self.probes += 1
        self.rtx_tsval = self.ts_now(now)
        if usable > 0 and buf_end > nxt:
            size = min(usable, self.smss, buf_end - nxt)
            offset = nxt - self.buf_seq
            self.transmit(nxt, ACK | PSH, self.buf[offset : offset + size], now)
            self._sent(nxt, size, now)
        else:
            self.transmit(una - 1, ACK, b"", now)
            self._timers.arm_persist(now + rto.rto)
        return True

    # Ending.

    def release(self) -> None:
        """Drop the send buffer: nothing more will be sent or resent."""
        freed = len(self.buf)
        self.buf_seq += freed
        self.buf = bytearray()
        if self.charged:
            self._layer.memory_used -= freed

    def uncharge(self) -> None:
        self.charged = False
