"""The send side of a connection: SND.* (RFC 9293 3.3.1), the send buffer, and loss repair.

Sender holds the bytes the application queued until the peer acknowledges them, and decides
what goes out when: segmentation within the peer's window and the congestion window (Nagle,
sender SWS avoidance, limited transmit), the RTT estimate and retransmission timeout (rto.py),
NewReno congestion control (congestion.py) with SACK (the scoreboard of buffers.py), fast
retransmit and recovery, tail loss probes (RFC 8985 7), window probes and our FIN.

Where SACK is negotiated, losses are found by RACK (rack.py, RFC 8985 6): by time, from which
segments sent later were delivered, rather than by counting duplicate ACKs; and a recovery that
D-SACK or timestamps prove needless is undone (RFC 3708, RFC 3522). Without SACK, the duplicate
ACK threshold (RFC 5681 3.2) and NewReno's partial ACKs (RFC 6582) find them.

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
from unikernel.net.tcp.rack import Rack, Undo
from unikernel.net.tcp.rto import RttEstimator
from unikernel.net.tcp.segment import (
    ACK,
    FIN,
    FLAGS_OFFSET,
    MAX_HEADER_LEN,
    PSH,
    SEQ_FIELD,
    SEQ_OFFSET,
    SYN,
    build_header,
    build_ts_segment,
    large_segment,
    sack_option,
    seal,
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
        "rack",
        "retransmits",
        "rto",
        "rto_recovery",
        "rtt_seq",
        "rtt_time",
        "rtx_hint",
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
        "undo",
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
        self.rtx_hint = 0  # NewReno's recovery: holes below this were retransmitted already
        self.rack: Rack | None = None  # RACK's loss detection, once SACK is negotiated
        self.undo = Undo()  # the current recovery's retransmissions, to undo it if needless
        self.rto_recovery = False  # after a timeout, until `recover` is acknowledged
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
        self.rack = Rack(1) if sack_ok else None  # data starts at 1, after the SYN
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
        conn = self._conn
        segment = build_header(
            conn.local_port, conn.remote_port, self.iss, ack, flags, window, options
        )
        seal(segment, conn.pseudo)
        self._layer.outbox.append((conn.remote_ip, conn.local_ip, segment))
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
        rack = self.rack
        fresh: list[tuple[int, int]] = []  # what this ACK delivers first, for RACK
        if rack is not None and ack > una:
            fresh = self.sacked.uncovered(una, ack)
        sacked = self.sack_ok and seg.sack is not None and self._take_sack(seg.sack, ack, fresh)
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
            self._new_ack(seg, ack, now)
            if sacked and not cc.in_recovery:
                self._dup_ack(now)  # with new SACK information it counts too (RFC 6675 5)
        elif duplicate:
            self._dup_ack(now)
        if rack is not None:
            self._rack_ack(seg, ack, fresh, duplicate, now)
        if cc.in_recovery and self.sack_ok:
            cc.limit_unsacked(self.sacked.total)

    def take_late_ack(self, seg: Segment, ack: int) -> None:
        """An ACK that a later one overtook (`ack` is below SND.UNA, or its timestamp older
        than the last): all it says the later one said again, but for a D-SACK, which is sent
        once only (RFC 2883 4). That one counts, for RACK's reordering window and to undo a
        needless recovery; the rest is not worth the time (on a path that reorders, these are
        a good share of all ACKs)."""
        rack = self.rack
        if rack is None or not seg.sack:
            return
        dsack = self._dsack_range(seg, ack)
        if dsack is not None:
            rack.dsack(self.snd_una, self.snd_max, True)
            if self.undo.dsack(*dsack):
                self._undo()

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
            return ack == una and self.take_same_ack(seg.window, seq)
        if not una < ack <= self.snd_max:
            return False
        self.take_ack(seg, seq, ack, ACK, 0, now)
        return True

    def take_same_ack(self, window: int, seq: int) -> bool:
        """In-order data at `seq` acknowledging SND.UNA, as header prediction takes it: with
        `window` (as sent, unscaled) the window we hold, the window update rule holds (WL2 <=
        SND.UNA always) and only moves WL1 and WL2 on. False, nothing changed, for another
        window, or where a segment out of order took WL1 past `seq` (take_ack() keeps them)."""
        if window << self.snd_scale != self.snd_wnd or self.wl1 > seq:
            return False
        self.wl1 = seq
        self.wl2 = self.snd_una
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
            rtt = now - self.rtt_time
            self.rtt_seq = -1
            self.rto.sample(rtt)
            if self.rack is not None:
                # RFC 8985 6.2 step 1; not from timestamps, whose millisecond ticks make
                # a fast path's RTT look like zero.
                self.rack.sample_rtt(rtt)
        elif (
            self._rcv.ts_ok
            and self.rto.backoffs
            and seg.has_ts
            and (seg.tsecr - self.rtx_tsval) & _MASK < _HALF  # echoes the retransmission
        ):
            self.rto.sample(((self.ts_now(now) - seg.tsecr) & _MASK) / 1000)

    def _take_sack(
        self, blocks: list[tuple[int, int]], ack: int, fresh: list[tuple[int, int]]
    ) -> bool:
        """Record the peer's SACK blocks (RFC 2018 3), ignoring any outside what we sent and
        not acknowledged by `ack` (a D-SACK, RFC 2883, reports a duplicate there); whether
        they SACKed anything new. With RACK, what they SACK first is added to `fresh`."""
        una = self.snd_una
        base = self.iss + una
        low = max(una, ack)
        new = False
        sacked = self.sacked
        rack = self.rack
        for left, right in blocks:
            start = una + ((left - base + _HALF) & _MASK) - _HALF
            end = una + ((right - base + _HALF) & _MASK) - _HALF
            if low < start < end <= self.snd_max:
                if rack is not None:
                    parts = sacked.uncovered(start, end)
                    if sacked.add(start, end) > 0:
                        fresh += parts
                        new = True
                elif sacked.add(start, end) > 0:
                    new = True
        return new

    def _new_ack(self, seg: Segment, ack: int, now: float) -> None:
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
        sacked = self.sacked
        sacked.prune(ack)
        if sacked.ranges and sacked.ranges[0][0] <= ack:
            # The peer acknowledges only up to data it SACKed: it dropped that since, as RFC
            # 2018 8 allows. Its SACK blocks no longer say what arrived: forget them, and RACK
            # finds what is missing by time, rather than our waiting for the RTO.
            sacked.clear()
        rack = self.rack
        if rack is not None:
            rack.acked(ack)
        self.rto.backoffs = 0
        cc = self.cc
        restart_timer = True
        if cc.in_recovery:
            if cc.is_full_ack(ack):
                cc.on_full_ack(self.snd_max - ack)
                self.dupacks = 0
                if rack is not None:
                    rack.recovery_ended()
                    self._try_undo(seg, ack)
            elif rack is not None and self._try_undo(seg, ack):
                pass  # what the episode resent had arrived already: it is over, undone
            else:
                # A partial ACK: with NewReno the next hole is at `ack`: retransmit it unless
                # done already (RFC 6582 3.2 step 3). With SACK, RACK judges what is lost. RFC
                # 6582 resets the timer on the first partial ACK only.
                cc.on_partial_ack(acked)
                if rack is None and ack >= self.rtx_hint:
                    self.rtx_hint = ack + self._retransmit(ack, now)
                self.partial_acks += 1
                restart_timer = self.partial_acks == 1
        else:
            if self.rto_recovery and ack >= cc.recover:
                self.rto_recovery = False  # what was outstanding at the timeout arrived
                if rack is not None:
                    rack.recovery_ended()
            self.dupacks = 0
            cc.on_ack(max(freed, 0), self.snd_max - una)
        if self.snd_max == ack:
            self._timers.stop_rtx()  # everything acknowledged (RFC 6298 5.2)
        elif restart_timer and not self._timers.persist:
            self._start_timer(now)  # RFC 6298 5.3; RFC 8985 7.2

    def _dup_ack(self, now: float) -> None:
        """A duplicate ACK (RFC 5681 2 defines which, and RFC 6675 2 with SACK): limited
        transmit, and without SACK fast retransmit, or another segment gone from the network
        during recovery. With SACK, RACK decides what is lost (_rack_ack())."""
        self.dupacks += 1
        if self.rack is not None:
            return
        cc = self.cc
        una = self.snd_una
        if cc.in_recovery:
            cc.on_dup_ack_in_recovery()
        elif self.dupacks >= _DUP_THRESH and cc.may_enter_recovery(una):
            # Fast retransmit (RFC 5681 3.2; RFC 6582 3.2 step 2). After a timeout, RFC 6582
            # 4 waits for `recover` to be acknowledged, lest the duplicates that go-back-N's
            # needless retransmissions cause count as losses.
            cc.enter_recovery(self.snd_max - una, self.snd_max)
            self.partial_acks = 0
            self.rtx_hint = una + self._retransmit(una, now)
        # Below the threshold, output() sends new data for limited transmit (RFC 3042).

    # RACK (RFC 8985 6), with SACK.

    def _rack_ack(
        self, seg: Segment, ack: int, fresh: list[tuple[int, int]], duplicate: bool, now: float
    ) -> None:
        """RFC 8985 6.2 for an acceptable ACK that delivered `fresh` (cumulatively or by SACK,
        not SACKed before), once the rest of the ACK has been taken."""
        rack = self.rack
        assert rack is not None
        dsack = self._dsack_range(seg, ack)
        if fresh:
            fresh.sort()
            echo = -1  # the ACK's TSecr on our clock, in whole milliseconds
            if self._rcv.ts_ok and seg.has_ts:
                age = (self.ts_now(now) - seg.tsecr) & _MASK
                if age < _HALF:
                    echo = int(now * 1000) - age
            rack.delivered(fresh, now, echo)  # steps 1 to 3
        rack.dsack(self.snd_una, self.snd_max, dsack is not None)  # step 4
        if dsack is not None and self.undo.dsack(*dsack):
            # RFC 3708: each retransmission of the episode so far was a duplicate. Undone
            # at once, in recovery too, as Linux does: a loss found later starts another.
            self._undo()
        if fresh:
            # Step 5. An ACK that delivers nothing new leaves RACK's state as it was: what
            # time alone would add, the reordering timer finds.
            self._rack_detect(sum(end - start for start, end in fresh), duplicate, now)
        elif duplicate and self.cc.in_recovery:
            self.cc.on_dup_ack_in_recovery()  # another segment left the network (RFC 5681 3.2)

    def _rack_detect(self, budget: int, duplicate: bool, now: float) -> None:
        """RACK_detect_loss_and_arm_timer (RFC 8985 6.2 step 5), then repair: in fast recovery
        (started here when the first loss is found), up to `budget` bytes of what is lost, as
        many as left the network."""
        rack = self.rack
        assert rack is not None
        una = self.snd_una
        if self.snd_max == una:
            return
        cc = self.cc
        sacked = self.sacked
        smss = self.smss
        reo_wnd = rack.reo_wnd(
            cc.in_recovery or self.rto_recovery, sacked.total // smss, self.rto.srtt
        )
        timeout = rack.detect_loss(sacked.ranges, now, reo_wnd)  # when to look again
        start, end = rack.next_lost(una, sacked.ranges)
        repaired = False
        if start >= 0:
            if not cc.in_recovery and (cc.may_enter_recovery(una) or sacked.highest > cc.recover):
                # Fast recovery (RFC 8985 8: a loss RACK found starts it). After a timeout,
                # RFC 6582 4 waits for `recover`, unless the peer SACKs data sent since.
                self.undo.start(cc.cwnd, cc.ssthresh)
                cc.enter_recovery(self.snd_max - una, self.snd_max)
                self.partial_acks = 0
                self.rto_recovery = False
                self.tlp_high = -1  # a probe's episode ends in the reduction made here
                if self._timers.tlp:
                    self._start_timer(now)  # no probe during recovery: the RTO again
            if cc.in_recovery:
                while budget > 0 and start >= 0:
                    size = self._retransmit(start, now, end)
                    if size <= 0:
                        break
                    repaired = True
                    budget -= size
                    start, end = rack.next_lost(start + size, sacked.ranges)
            # Otherwise, after a timeout, output() resends what is lost from SND.NXT on, and
            # what lies below waits for fast recovery: RFC 6582 4 keeps it from starting while
            # the duplicates may echo the go-back-N resends.
        if duplicate and cc.in_recovery and not repaired:
            cc.on_dup_ack_in_recovery()  # another segment left the network (RFC 5681 3.2)
        if timeout > 0 and not self._timers.persist:
            self._timers.arm_reo(timeout)

    def reordering_timeout(self, now: float) -> None:
        """RACK's reordering timer fired (RFC 8985 6.2 step 5): what it waited for and is
        still missing is lost by now. Then the retransmission timer runs again."""
        if self.rack is None or self.snd_max == self.snd_una:
            return
        self._rack_detect(1, False, now)
        if self._timers.rtx_at == _INF:
            self._start_timer(now)

    def _try_undo(self, seg: Segment, ack: int) -> bool:
        """An ACK of new data that ends fast recovery, or acknowledges all it resent so far:
        undo it if every retransmission is known to have been needless, by D-SACK (RFC 3708)
        or by an echoed timestamp older than the first (RFC 3522; Linux undoes on such a
        partial ACK too). Whether it did."""
        undo = self.undo
        if not undo.active:
            return False
        older = (
            self._rcv.ts_ok
            and seg.has_ts
            and undo.first_tsval >= 0
            and (seg.tsecr - undo.first_tsval) & _MASK >= _HALF
        )
        if undo.all_spurious or undo.eifel(ack, older):
            rack = self.rack
            if rack is not None and self.cc.in_recovery:
                rack.unmark_lost()  # as Linux does on such a partial ACK
            self._undo()
            return True
        return False

    def _undo(self) -> None:
        """Give back the window a needless recovery took (RFC 3708 5). The peer received the
        first copies after later data: that is reordering (RFC 8985 6.2 step 3's aim), and
        the reordering window was too small, as a D-SACK would say (step 4): widen it as for
        one, which matters where only timestamps tell (a peer that sends no D-SACK)."""
        undo = self.undo
        cc = self.cc
        if cc.in_recovery:
            # The reduction was for nothing: a loss found from here on may start another,
            # where RFC 6582's `recover` would hold it off for the rest of this window.
            cc.recover = self.snd_una
        cc.undo(undo.cwnd, undo.ssthresh)
        undo.cancel()
        rack = self.rack
        if rack is not None:
            rack.reordering_seen = True
            rack.dsack(self.snd_una, self.snd_max, True)
        self._layer.stats["undos"] += 1

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
        rack = self.rack
        dupacks = self.dupacks
        if dupacks and not cc.in_recovery:
            if rack is not None and dupacks >= _DUP_THRESH:
                dupacks = _DUP_THRESH - 1  # RACK may wait for more: two segments at most
            cwnd += dupacks * smss  # limited transmit (RFC 3042)
        wnd_edge = una + self.snd_wnd
        edge = min(wnd_edge, una + cwnd)
        sacked = self.sacked
        sent = new = False
        lost_end = 0
        while True:
            nxt = self.snd_nxt
            if nxt < self.snd_max:
                if rack is not None:
                    # After a timeout, resend only what RACK judges lost (RFC 8985 6.3), not
                    # what SACK says arrived nor what left too recently to tell.
                    nxt, lost_end = rack.next_lost(nxt, sacked.ranges)
                    if nxt < 0:
                        nxt = self.snd_max
                    self.snd_nxt = nxt
                elif sacked:
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
            if nxt == self.snd_max and self._send_run(
                nxt, min(edge, buf_end - 1 if fin_pending else buf_end), now
            ):
                sent = new = True
                continue
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
            if nxt < self.snd_max:
                if rack is not None:
                    size = min(size, lost_end - nxt)
                elif sacked:
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
            if size > smss:
                # A view, not a slice: a large segment copies its data once, into its frame
                # (the view goes with the call, before anything resizes the buffer).
                self.transmit(nxt, flags, memoryview(buf)[offset : offset + size], now)
            else:
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

    def _send_run(self, seq: int, limit: int, now: float) -> bool:
        """Output's fast path: new data from `seq` (SND.MAX) up to `limit` at most, in segments
        of a full MSS each (a bulk transfer's), when two or more fit; False when they do not,
        or when the link segments (TSO), and then nothing was done.

        Such segments differ only in sequence number, PSH and checksum: their header is made
        once and copied, and they are accounted for at once, where output()'s loop would take
        each through transmit() and _account(). The outcome is the same: a full segment is no
        runt (neither Nagle nor SWS avoidance holds it back), has no room for SACK blocks, and
        does not carry the FIN (`limit` stops short of it); the ACK, window and timestamps are
        the same for all (nothing arrives in between), and so is the receiver's state after
        the first ACK sent; _account() of the whole is the sum of its parts, RACK's record
        included (it merges what goes out together)."""
        smss = self.smss
        count = (limit - seq) // smss
        if count < 2 or self._burst != smss:
            return False
        template = self._build(seq, ACK, None, now)
        assert isinstance(template, bytearray)  # a header alone, to append to
        conn = self._conn
        remote_ip = conn.remote_ip
        local_ip = conn.local_ip
        outbox = self._layer.outbox
        pseudo = conn.pseudo
        iss = self.iss
        buf = self.buf
        buf_seq = self.buf_seq
        buf_end = buf_seq + len(buf)
        end = seq + count * smss
        for start in range(seq, end, smss):
            offset = start - buf_seq
            segment = template + buf[offset : offset + smss]
            SEQ_FIELD.pack_into(segment, SEQ_OFFSET, (iss + start) & _MASK)
            if start + smss == buf_end:
                segment[FLAGS_OFFSET] = ACK | PSH
            seal(segment, pseudo)
            outbox.append((remote_ip, local_ip, segment))
        self._account(seq, end - seq, now)
        return True

    def _sent(self, seq: int, length: int, now: float) -> None:
        """Bookkeeping after sending [seq, seq + length) from snd_nxt."""
        self._arm_after_sending(self._account(seq, length, now), now)

    def _account(self, seq: int, length: int, now: float) -> bool:
        """_sent() without the timer: whether the segment carried new data."""
        end = seq + length
        self.snd_nxt = end
        new = end > self.snd_max
        rack = self.rack
        if new:
            if self.rtt_seq < 0 and seq == self.snd_max:
                self.rtt_seq = seq
                self.rtt_time = now
            self.snd_max = end
            if rack is not None:
                rack.sent(seq, end, now, False)
        else:
            self.retransmits += 1
            self.rtt_seq = -1  # Karn: no sample from a retransmission
            if rack is not None:
                rack.sent(seq, end, now, True)
                self.undo.retransmitted(seq, end, self.ts_now(now))
        self.last_send = now
        return new

    def _arm_after_sending(self, new: bool, now: float) -> None:
        timers = self._timers
        if timers.persist or timers.rtx_at == _INF:
            self._start_timer(now)  # RFC 6298 5.1
        elif new:
            self._start_timer(now, restart=False)  # a probe's timeout restarts (RFC 8985 7.2)

    def _retransmit(self, seq: int, now: float, limit: int = -1) -> int:
        """Resend one segment from `seq`, stopping before SACKed data and before `limit` if
        given; return the sequence space it covered (0 if nothing was left to send)."""
        buf_seq = self.buf_seq
        buf_end = buf_seq + len(self.buf)
        size = min(self.smss, buf_end - seq, self.snd_max - seq)  # never past what was sent
        if 0 <= limit < seq + size:
            size = limit - seq
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
        rack = self.rack
        if rack is not None:
            rack.sent(seq, seq + size + fin, now, True)
            self.undo.retransmitted(seq, seq + size + fin, self.ts_now(now))
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
            and not self._timers.reo  # RACK's timer runs: it re-arms the others when done
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
        """Whether the segment reports a duplicate the peer received (RFC 2883 4)."""
        return self._dsack_range(seg, ack) is not None

    def _dsack_range(self, seg: Segment, ack: int) -> tuple[int, int] | None:
        """The duplicate a D-SACK reports (RFC 2883 4): the first SACK block when it lies
        below the cumulative ACK `ack`, or within the second block; None if there is none."""
        blocks = seg.sack
        if not blocks:
            return None
        una = self.snd_una
        base = self.iss + una
        left = una + ((blocks[0][0] - base + _HALF) & _MASK) - _HALF
        right = una + ((blocks[0][1] - base + _HALF) & _MASK) - _HALF
        if right <= ack:
            return left, right
        if len(blocks) > 1:
            outer_left = una + ((blocks[1][0] - base + _HALF) & _MASK) - _HALF
            outer_right = una + ((blocks[1][1] - base + _HALF) & _MASK) - _HALF
            if outer_left <= left and right <= outer_right:
                return left, right
        return None

    def transmit(self, seq: int, flags: int, payload: Buffer, now: float) -> None:
        """Build and queue one segment from `seq` (unwrapped)."""
        conn = self._conn
        segment = self._build(seq, flags, payload, now)
        self._layer.outbox.append((conn.remote_ip, conn.local_ip, segment))

    def _build(self, seq: int, flags: int, payload: Buffer | None, now: float) -> bytes | bytearray:
        """The segment from `seq` (unwrapped) with `payload`, checksummed; for the link to cut
        (TSO: a LargeSegment) if `payload` is over one MSS. Every segment but a bare RST
        carries ACK and our window (the receiver counts the ACK as sent), timestamps (RFC 7323
        3.2) and SACK blocks (RFC 2018 4). Without `payload`: the header alone for a full
        segment, its checksum field zero, to append the payload to and seal() (_send_run())."""
        rcv = self._rcv
        size = self.smss if payload is None else len(payload)
        blocks = b""
        if self.sack_ok and (rcv.ooo.size or rcv.dsack is not None):
            # As many blocks as fit (RFC 2018 3): the MSS bounds data and options together
            # (RFC 9293 3.7.1), so a full data segment has no room for any.
            room = (self.smss - size - 4) // 8
            count = min(room, 3 if rcv.ts_ok else 4)
            if count > 0:
                blocks = sack_option(rcv.sack_blocks(count))
        ack = 0
        window = 0
        if flags & ACK:
            ack = (rcv.irs + rcv.rcv_nxt) & _MASK
            window = rcv.ack_sent(seq >= self.snd_max)
        conn = self._conn
        port = conn.local_port
        peer_port = conn.remote_port
        wire_seq = (self.iss + seq) & _MASK
        options = blocks
        if rcv.ts_ok:
            tsval = self.ts_now(now)
            tsecr = rcv.ts_recent
            if not blocks and payload is not None and size <= self.smss:
                # Most segments: timestamps alone, made in one step.
                return build_ts_segment(
                    port,
                    peer_port,
                    wire_seq,
                    ack,
                    flags,
                    window,
                    tsval,
                    tsecr,
                    payload,
                    conn.pseudo,
                )
            options = timestamp_option(tsval, tsecr) + blocks
        segment = build_header(port, peer_port, wire_seq, ack, flags, window, options)
        if payload is None:
            return segment
        if size > self.smss:  # built once, its data never summed here
            return large_segment(conn.local_ip, conn.remote_ip, segment, payload, self.smss)
        segment += payload
        seal(segment, conn.pseudo)
        return segment

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
        self.undo.cancel()  # a timeout's reduction is never undone here
        self.tlp_high = -1  # a timeout ends a probe's episode (RFC 8985 7.4)
        self.rtx_tsval = self.ts_now(now)
        rack = self.rack
        if rack is not None:
            # RFC 8985 6.3: what was sent longer ago than RACK.rtt + reo_wnd is lost; the
            # rest may still arrive, and is resent only if RACK later finds it lost.
            self.rto_recovery = True
            rack.mark_lost_on_timeout(now, rack.reo_wnd(True, 0, rto.srtt))
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
