"""One TCP connection, sans-IO: the coordinator of its send side, receive side and timers.

The layer (layer.py) hands it parsed segments and the time, and calls on_timer() once its
`deadline` has passed; the application calls send(), recv(), shutdown(), close() and abort().
Segments to send go to the layer's outbox, events for the application to the layer's event
list. Nothing here reads a clock or does I/O.

A connection is four pieces, each the only writer of its own fields:

- Connection (here): the state, which moves only by the table in states.py; the steps of
  segment arrival (RFC 9293 3.10.7) in their order; the handshake and the close; the events
  for the application; and the dispatch of timers that fire.
- Sender (sender.py): SND.*, the send buffer, segmentation, retransmission, SACK, recovery,
  tail loss probes; it builds every segment we send.
- Receiver (receiver.py): RCV.*, the received data and reorder queue, the window we offer,
  when an ACK is owed, the peer's FIN.
- Timers (timers.py): the times at which each timer fires, and their earliest, `deadline`.

Sequence numbers are unwrapped: SND.* count from our initial sequence number (the SYN is 0, the
first data byte 1) and RCV.* from the peer's, as plain ints that never wrap. Only the wire
values wrap, and the conversion happens once per segment, so every comparison is an ordinary
one.
"""

from __future__ import annotations

from unikernel.net.tcp.receiver import Receiver
from unikernel.net.tcp.segment import (
    ACK,
    FIN,
    HEADER_TS,
    RST,
    SYN,
    TS_HEADER_LEN,
    TS_OFFSET,
    TS_PREFIX,
    URG,
    pseudo_sum,
    residue,
)
from unikernel.net.tcp.sender import Sender
from unikernel.net.tcp.states import (
    CLOSE,
    CLOSE_WAIT,
    CLOSED,
    CONNECT,
    DELETE,
    ESTABLISHED,
    EV_CLOSED,
    EV_CONNECTED,
    EV_PEER_CLOSED,
    EV_READABLE,
    EV_RESET,
    EV_TIMED_OUT,
    FIN_ACKED,
    FIN_IN,
    FIN_WAIT_1,
    FIN_WAIT_2,
    RECEIVING,
    REFUSED,
    RESET,
    SENDING,
    STATE_NAMES,
    SYN_ACKED,
    SYN_IN,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    TIMED_OUT,
    TRANSITIONS,
    Subject,
)
from unikernel.net.tcp.timers import Timers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from unikernel.net.tcp.layer import Listener, TcpLayer
    from unikernel.net.tcp.segment import Buffer, Segment

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_INF = float("inf")
# Segments received together are ACKed together, as one super-packet from a link that
# coalesces (GRO) is: at most this much data under one ACK, as Linux's GRO limit.
_STRETCH_ACK_BYTES = 65536
_UNPREDICTED = SYN | FIN | RST | URG | ACK  # of these, only ACK is set on a predicted segment


class TcpConfig:
    """Tunables, shared by every connection of a layer. Times are seconds, sizes bytes."""

    __slots__ = (
        "delayed_ack",
        "fin_wait_2_timeout",
        "initial_window",
        "max_connections",
        "max_reorder_chunks",
        "max_time_wait",
        "memory_limit",
        "mtu",
        "recv_buffer",
        "retries",
        "rto_initial",
        "rto_max",
        "rto_min",
        "sack",
        "segmentation",
        "send_buffer",
        "syn_retries",
        "tail_loss_probe",
        "time_wait",
        "timestamps",
        "window_scaling",
    )

    def __init__(
        self,
        *,
        mtu: int = 1500,
        recv_buffer: int = 256 * 1024,
        send_buffer: int = 256 * 1024,
        memory_limit: int = 64 * 1024 * 1024,
        max_connections: int = 16384,
        max_time_wait: int = 4096,
        max_reorder_chunks: int = 128,
        window_scaling: bool = True,
        timestamps: bool = True,
        sack: bool = True,
        tail_loss_probe: bool = True,
        initial_window: int = 10,
        rto_initial: float = 1.0,
        rto_min: float = 0.2,
        rto_max: float = 60.0,
        retries: int = 15,
        syn_retries: int = 6,
        delayed_ack: float = 0.04,
        time_wait: float = 60.0,
        fin_wait_2_timeout: float = 60.0,
        segmentation: bool = False,
    ) -> None:
        self.mtu = mtu  # of the link under IPv4: our MSS is mtu - 40
        # The link cuts large segments itself (TSO, see unikernel.net.segmentation): new data
        # then leaves in segments of up to 64 KiB, each built and handed on once.
        self.segmentation = segmentation
        self.recv_buffer = recv_buffer  # per connection, bounds the window we offer
        self.send_buffer = send_buffer  # per connection, bounds what send() takes
        self.memory_limit = memory_limit  # all buffers of all connections together
        self.max_connections = max_connections  # TIME-WAIT included
        self.max_time_wait = max_time_wait  # the oldest beyond this are recycled early
        self.max_reorder_chunks = max_reorder_chunks
        self.window_scaling = window_scaling  # RFC 7323 2
        self.timestamps = timestamps  # RFC 7323 3
        self.sack = sack  # RFC 2018
        # RFC 8985 7 (Linux: net.ipv4.tcp_early_retrans): with SACK, a lost tail costs a
        # probe after about two round trips rather than a retransmission timeout.
        self.tail_loss_probe = tail_loss_probe
        self.initial_window = initial_window  # segments (RFC 6928)
        self.rto_initial = rto_initial  # RFC 6298 2.1
        # RFC 6298 2.4 asks for at least 1 s; like Linux we take 200 ms, which RFC 6298 allows
        # as a local choice once timestamps give an RTT sample per ACK.
        self.rto_min = rto_min
        self.rto_max = rto_max  # RFC 6298 2.5: at least 60 s
        self.retries = retries  # RFC 9293 3.8.3 R2, counted in timeouts (Linux: 15)
        self.syn_retries = syn_retries  # R2 for SYNs (Linux: 6)
        self.delayed_ack = delayed_ack  # RFC 5681 4.2: under 500 ms (Linux: 40 ms)
        self.time_wait = time_wait  # 2 MSL (RFC 9293 3.4.2; Linux: 60 s)
        self.fin_wait_2_timeout = fin_wait_2_timeout  # for connections the app has closed


class Connection(Subject):
    """A connection, from the first SYN to CLOSED. Made by TcpLayer.connect() or by a Listener.

    `user` is free for the application (the socket layer keeps its socket there).
    """

    __slots__ = (
        "_app_closed",
        "_config",
        "_listener",
        "_rcv",
        "_snd",
        "_timers",
        "error",
        "heap_deadline",
        "key",
        "local_ip",
        "local_port",
        "nodelay",
        "pseudo",
        "remote_ip",
        "remote_port",
        "state",
        "user",
    )

    def __init__(
        self,
        layer: TcpLayer,
        local_ip: bytes,
        local_port: int,
        remote_ip: bytes,
        remote_port: int,
        iss: int,
        ts_offset: int,
        listener: Listener | None = None,
    ) -> None:
        self._layer = layer
        self._config = layer.config
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.key = (remote_ip, remote_port, local_ip, local_port)
        self.pseudo = pseudo_sum(local_ip, remote_ip)  # for every checksum, either way
        self.state = CLOSED
        self.error: str | None = None
        self.user: object = None
        self.nodelay = False  # True turns Nagle's algorithm (RFC 896) off
        self._listener = listener  # the Listener whose child this is, until established
        self._events = 0
        self._app_closed = False  # close(): the application reads no more
        self._timers = timers = Timers()
        self._rcv = rcv = Receiver(layer, timers)
        self._snd = Sender(self, layer, rcv, timers, iss, ts_offset)
        # The layer's, written by it alone: the time of its earliest heap entry for us.
        self.heap_deadline = _INF

    def __repr__(self) -> str:
        remote = ".".join(str(b) for b in self.remote_ip)
        return (
            f"<Connection :{self.local_port} -> {remote}:{self.remote_port} "
            f"{STATE_NAMES[self.state]}>"
        )

    def _to(self, event: int) -> int:
        """Move to the state that `event` leads to (states.TRANSITIONS); return it."""
        state = self.state = TRANSITIONS[self.state][event]
        return state

    # What the application sees.

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    @property
    def readable(self) -> int:
        """Bytes recv() can return now."""
        return len(self._rcv.buf)

    @property
    def at_eof(self) -> bool:
        """The peer's FIN has arrived and every byte before it has been read."""
        return self._rcv.peer_fin and not self._rcv.buf

    @property
    def send_space(self) -> int:
        """Bytes send() would take now."""
        if self._snd.fin_queued or self.state in (CLOSED, TIME_WAIT):
            return 0
        return self._snd.space()

    @property
    def unacked(self) -> int:
        """Bytes sent or queued that the peer has not acknowledged yet."""
        return len(self._snd.buf)

    @property
    def iss(self) -> int:
        return self._snd.iss

    @property
    def irs(self) -> int:
        return self._rcv.irs

    @property
    def snd_una(self) -> int:
        return self._snd.snd_una

    @property
    def snd_nxt(self) -> int:
        return self._snd.snd_nxt

    @property
    def snd_max(self) -> int:
        """Highest sequence sent + 1: snd_nxt goes back below it after a timeout."""
        return self._snd.snd_max

    @property
    def snd_wnd(self) -> int:
        return self._snd.snd_wnd

    @property
    def rcv_nxt(self) -> int:
        return self._rcv.rcv_nxt

    @property
    def smss(self) -> int:
        return self._snd.smss

    @property
    def retransmits(self) -> int:
        return self._snd.retransmits

    @property
    def deadline(self) -> float:
        """When on_timer() next has work (inf: no timer armed)."""
        return self._timers.deadline

    @property
    def rto(self) -> float:
        return self._snd.rto.rto

    @property
    def srtt(self) -> float:
        return self._snd.rto.srtt

    @property
    def cwnd(self) -> int:
        return self._snd.cc.cwnd

    @property
    def ssthresh(self) -> int:
        return self._snd.cc.ssthresh

    @property
    def in_recovery(self) -> bool:
        return self._snd.cc.in_recovery

    @property
    def snd_scale(self) -> int:
        return self._snd.snd_scale

    @property
    def rcv_scale(self) -> int:
        return self._rcv.rcv_scale

    @property
    def timestamps(self) -> bool:
        return self._rcv.ts_ok

    @property
    def sack(self) -> bool:
        return self._snd.sack_ok

    @property
    def rcv_window(self) -> int:
        """The window we offer now: bytes past rcv_nxt the peer may send."""
        return max(0, self._rcv.rcv_adv - self._rcv.rcv_nxt)

    @property
    def memory(self) -> int:
        """Bytes this connection holds in its buffers."""
        rcv = self._rcv
        return len(self._snd.buf) + len(rcv.buf) + rcv.ooo.size

    @property
    def listener(self) -> Listener | None:
        """The Listener that made this connection, until the handshake completes."""
        return self._listener

    # The application's calls.

    def send(self, data: Buffer, now: float) -> int:
        """Queue as much of `data` as the buffers take and send what the windows allow;
        return the number of bytes taken (0 when full: wait for EV_WRITABLE)."""
        snd = self._snd
        if snd.fin_queued or self.state not in (
            SYN_SENT,
            SYN_RECEIVED,
            ESTABLISHED,
            CLOSE_WAIT,
        ):
            raise self._closed_error()
        taken = snd.queue(data)
        if taken:
            snd.output(now)
            self._rearm()
        return taken

    def recv(self, max_bytes: int, now: float) -> bytes:
        """Up to `max_bytes` of received data; b"" if there is none (see at_eof)."""
        if not self._data_waiting():
            return b""
        data = self._rcv.read(max_bytes)
        self._after_read(now)
        return data

    def discard(self, max_bytes: int, now: float) -> int:
        """recv() for an application that only counts what it receives: up to `max_bytes`
        are removed unread, never copied; return how many (0 if none: see at_eof)."""
        if not self._data_waiting():
            return 0
        size = self._rcv.skip(max_bytes)
        self._after_read(now)
        return size

    def _data_waiting(self) -> bool:
        """Whether there is data to read; raises if the connection failed with none left."""
        rcv = self._rcv
        if rcv.buf:
            return True
        if self.error is not None and not rcv.peer_fin:
            raise self._closed_error()
        return False

    def _after_read(self, now: float) -> None:
        # The Mirage stall: a window closed by a slow reader must reopen once it reads, or the
        # peer waits for its persist timer. Tell the peer as soon as the window has grown by
        # the SWS threshold (RFC 9293 3.8.6.2.2).
        if 1 << self.state & RECEIVING and self._rcv.window_grows():
            self._snd.send_ack(now)
            self._rearm()

    def shutdown(self, now: float) -> None:
        """Send our FIN after the queued data (half-close); recv() still works."""
        snd = self._snd
        if snd.fin_queued or self.state in (CLOSED, TIME_WAIT):
            return
        snd.queue_fin()
        # In SYN-SENT and SYN-RECEIVED the FIN waits for the handshake (RFC 9293 3.10.4).
        self._to(CLOSE)
        snd.output(now)
        self._rearm()

    def close(self, now: float) -> None:
        """Close both directions. Unread or later data makes it a reset (RFC 1122 4.2.2.13)."""
        if self.state == CLOSED:
            return
        self._app_closed = True
        if self.state == SYN_SENT:
            self._free(EV_CLOSED)  # RFC 9293 3.10.4: delete the TCB
        elif self._rcv.buf:
            self.abort(now)
        else:
            self.shutdown(now)
            if self.state == FIN_WAIT_2:
                self._timers.arm_close(now + self._config.fin_wait_2_timeout)
                self._rearm()

    def abort(self, now: float) -> None:
        """Reset the connection (RFC 9293 3.10.5) and forget it."""
        if self.state == CLOSED:
            return
        if self.state not in (SYN_SENT, TIME_WAIT):
            snd = self._snd
            snd.transmit(snd.snd_max, RST | ACK, b"", now)  # where the peer expects us
            self._layer.stats["rst_sent"] += 1
        self._app_closed = True
        self._free(EV_CLOSED)

    def keepalive(self, idle: float, interval: float, count: int, now: float) -> None:
        """Probe an idle connection (RFC 1122 4.2.3.6): after `idle` seconds of silence, every
        `interval` seconds; time out after `count` unanswered probes. idle 0 turns it off."""
        self._timers.keepalive(idle, interval, count, now)
        self._rearm()

    def failure(self) -> OSError | None:
        """Why the connection failed, as the exception a socket call raises; None if it
        did not (still open, or closed gracefully)."""
        return None if self.error is None else self._closed_error()

    def _closed_error(self) -> OSError:
        if self.error == REFUSED:
            return ConnectionRefusedError(self.error)
        if self.error == RESET:
            return ConnectionResetError(self.error)
        if self.error == TIMED_OUT:
            return TimeoutError(self.error)
        return BrokenPipeError("connection closed for sending")

    # The layer's calls.

    def drop(self) -> None:
        """Leave the layer's table silently: a TIME-WAIT recycled or replaced by a new
        incarnation, a half-open child evicted from its listener's queue."""
        self._free(EV_CLOSED)

    def reopened_by(self, seg: Segment) -> bool:
        """Whether the SYN `seg` may end our TIME-WAIT for a new incarnation (RFC 6191)."""
        return self._rcv.reopened_by(seg)

    # Opening.

    def open_active(self, now: float) -> None:
        """Send our SYN (RFC 9293 3.10.1)."""
        self._to(CONNECT)
        self._rcv.offer_scale(self._config.window_scaling)
        self._snd.send_syn(now)
        self._rearm()

    def open_passive(self, seg: Segment, now: float) -> None:
        """A SYN reached our listener: answer with a SYN-ACK (RFC 9293 3.10.7.2)."""
        self._to(SYN_IN)
        self._take_syn(seg, now)
        self._snd.send_syn(now)
        self._rearm()

    def open_from_cookie(self, syn: Segment, now: float) -> None:
        """A SYN cookie came back (layer.py): be as open_passive() would have left us, our
        SYN-ACK sent, from `syn` as the cookie restores it; its ACK comes next."""
        self._to(SYN_IN)
        self._take_syn(syn, now)
        self._snd.cookie_syn_sent()
        self._rcv.syn_ack_sent()

    def _take_syn(self, seg: Segment, now: float) -> None:
        """Learn the peer's ISN and negotiate the options its SYN offers: window scaling and
        timestamps only if both sides send them (RFC 7323 2.2, 3.2), SACK likewise (RFC 2018)."""
        config = self._config
        wscale_ok = config.window_scaling and seg.wscale >= 0
        ts_ok = config.timestamps and seg.has_ts
        self._rcv.take_syn(seg, wscale_ok, ts_ok, now)
        self._snd.take_syn(seg, wscale_ok, config.sack and seg.sack_ok, ts_ok)

    def _establish(self) -> None:
        """The handshake is over (RFC 9293 3.10.7.3 and 3.10.7.4, fifth step)."""
        self._to(SYN_ACKED)
        if self._snd.fin_queued:
            self._to(CLOSE)  # the FIN that waited for the handshake
        self.emit(EV_CONNECTED)
        listener = self._listener
        if listener is not None:
            self._listener = None
            listener.established(self)

    # Segments arriving.

    def input(self, seg: Segment, now: float) -> None:
        """Process one segment for this connection (RFC 9293 3.10.7)."""
        state = self.state
        if state == ESTABLISHED and self._input_predicted(seg, now):
            pass  # header prediction took it
        elif state == SYN_SENT:
            self._input_syn_sent(seg, now)
        elif state != CLOSED:
            self._input(seg, now)
        if self.state != CLOSED and self._answers_now(False):
            self.answer(now)

    def _answers_now(self, deferred: bool) -> bool:
        """Whether input's answer goes now. Within a batch (TcpLayer.begin_batch) it waits
        for the batch's end, unless something odd calls for it now, or the data
        unacknowledged reaches what one super-packet from the link could hold or half the
        window we last offered (beyond which the peer would stall, waiting for the window to
        open). `deferred`: this connection waits in the batch already."""
        rcv = self._rcv
        last_ack = rcv.last_ack_sent
        unacked = rcv.rcv_nxt - last_ack
        return (
            rcv.ack_now
            or unacked >= _STRETCH_ACK_BYTES
            or unacked >= (rcv.rcv_adv - last_ack) >> 1
            or not (deferred or self._layer.defer_answer(self))
        )

    def _input_syn_sent(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.3."""
        flags = seg.flags
        snd = self._snd
        if flags & ACK and seg.ack != (snd.iss + 1) & _MASK:
            # It acknowledges something we never sent: an old duplicate, or a stale half.
            if not flags & RST:
                self._layer.send_rst(self.local_ip, self.remote_ip, seg, now)
            return
        if flags & RST:
            if flags & ACK:  # acceptable, checked above: the peer refuses
                self.error = REFUSED
                self._free(EV_RESET)
            return
        if not flags & SYN:
            return
        self._take_syn(seg, now)
        if flags & ACK:
            snd.syn_acked(seg, now)
            self._establish()
            rcv = self._rcv
            rcv.owe_ack()
            # Data on a SYN-ACK: carry on at the sixth step. (No FIN can wait for it yet.)
            if seg.payload and rcv.receive(1, seg.payload):
                self.emit(EV_READABLE)
        else:
            # Simultaneous open (RFC 9293 figure 8): answer with a SYN-ACK from our same ISN.
            self._to(SYN_IN)
            snd.send_syn(now)

    def _input_predicted(self, seg: Segment, now: float) -> bool:
        """Header prediction (Jacobson's, RFC 1323 appendix A): the two segments a bulk
        transfer is made of - the next data in order, acknowledging nothing new, and a pure
        ACK of new data - taken in fewer steps than _input(), with the same outcome. False:
        the segment is not one of them (or anything about the connection is unusual), and
        nothing was done."""
        if seg.flags & _UNPREDICTED != ACK or self._app_closed:
            return False
        rcv = self._rcv
        seq = rcv.rcv_nxt
        if (rcv.irs + seq) & _MASK != seg.seq or self._timers.ka_idle or rcv.ooo_fin >= 0:
            return False
        size = len(seg.payload)
        if size > rcv.rcv_adv - seq:
            return False  # past the window: trimmed on the general way
        if rcv.ts_ok:
            # Not older than TS.Recent (PAWS would look at it), so taken if seq <= last ACK.
            if not seg.has_ts or (seg.tsval - rcv.ts_recent) & _MASK >= _HALF:
                return False
            if seq <= rcv.last_ack_sent:
                rcv.take_ts(seg.tsval, now)
        if not self._snd.take_predicted_ack(seg, seq, size, now):
            return False  # the timestamp taken is what _input() takes for it too
        if size and rcv.receive(seq, seg.payload):
            self.emit(EV_READABLE)
        return True

    def input_run(self, segments: Sequence[Buffer], start: int, vouched: int, now: float) -> int:
        """Header prediction over a run (TcpLayer.input_run): of `segments` (TCP header and
        payload each) from `start` on, read together from the link, take the leading ones
        that are this connection's next data in order, acknowledging nothing new, with the
        timestamps option alone; bit i of `vouched`: the link vouched for segments[i]'s
        checksum. Each is taken with the same checks and outcome as input() through
        _input_predicted() would have, in fewer steps. How many it took: 0 leaves the first
        to input(), and it stops after one that it had to answer at once."""
        rcv, snd, timers = self._rcv, self._snd, self._timers
        if (
            self.state != ESTABLISHED
            or self._app_closed
            or not rcv.ts_ok
            or timers.ka_idle
            or timers.persist
            or rcv.ooo_fin >= 0
            or rcv.ooo.size
            or snd.tlp_high >= 0
            or snd.cc.in_recovery
        ):
            return 0
        pseudo = self.pseudo
        local_port, remote_port, irs = self.local_port, self.remote_port, rcv.irs
        same_ack = (snd.iss + snd.snd_una) & _MASK
        unpack = HEADER_TS.unpack_from
        deferred = readable = False
        index, count = start, len(segments)
        while index < count:
            data = segments[index]
            size = len(data) - TS_HEADER_LEN
            if size <= 0:
                break
            src_port, dst_port, seq, ack, offset, flags, window, _, _, prefix, tsval, _ = unpack(
                data
            )
            nxt = rcv.rcv_nxt
            if (
                seq != (irs + nxt) & _MASK
                or ack != same_ack
                or flags & _UNPREDICTED != ACK
                or src_port != remote_port
                or dst_port != local_port
                or offset & 0xF0 != TS_OFFSET
                or prefix != TS_PREFIX
                or (tsval - rcv.ts_recent) & _MASK >= _HALF  # PAWS would look at it
                or size > rcv.rcv_adv - nxt
                or (not vouched >> index & 1 and residue(data, pseudo))  # input() drops it
                or not snd.take_same_ack(window, nxt)
            ):
                break
            index += 1
            if nxt <= rcv.last_ack_sent:
                rcv.take_ts(tsval, now)
            if rcv.receive(nxt, data[TS_HEADER_LEN:]) and not readable:
                readable = True
                self.emit(EV_READABLE)
            if self._answers_now(deferred):
                self.answer(now)  # which may send, and change what the checks above read
                break
            deferred = True
        return index - start

    def _input(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.4, for every state from SYN-RECEIVED on."""
        flags = seg.flags
        rcv = self._rcv
        rcv_nxt = rcv.rcv_nxt
        seq = rcv_nxt + ((seg.seq - rcv.irs - rcv_nxt + _HALF) & _MASK) - _HALF
        if flags & SYN and self.state == SYN_RECEIVED and seq == 0 and not flags & RST:
            if flags & ACK and seg.ack == (self._snd.iss + 1) & _MASK:
                # The peer's SYN-ACK of a simultaneous open: take it as the ACK it carries.
                flags &= ~SYN
                seq = 1
            else:
                self._snd.send_syn(now)  # our SYN-ACK was lost: the peer repeats its SYN
                return
        timers = self._timers
        if timers.ka_idle:  # most connections run without keep-alive: spare them a call
            timers.heard_from_peer(now)

        # PAWS (RFC 7323 5.3): a timestamp older than TS.Recent marks an old duplicate,
        # unless TS.Recent itself has gone stale. On a path that reorders most such segments
        # are only late: an ACK that a later one overtook may carry a D-SACK no other ACK
        # will (_late_ack()), and data whose retransmission came first gets the D-SACK any
        # duplicate gets (Linux does both).
        ts_ok = rcv.ts_ok and seg.has_ts
        if ts_ok and not flags & RST and (seg.tsval - rcv.ts_recent) & _MASK >= _HALF:
            if self._late_ack(seg, seq, flags):
                return
            if rcv.paws_drop(seg, now):
                if seg.payload and seq < rcv_nxt:
                    rcv.duplicate(seq, min(seq + len(seg.payload), rcv_nxt))
                return

        # First: is the segment in the window (RFC 9293 3.10.7.4)?
        payload = seg.payload
        size = len(payload)
        seg_len = size + (flags & SYN) // SYN + (flags & FIN)
        rcv_adv = rcv.rcv_adv
        window = rcv_adv - rcv_nxt
        if seg_len == 0:
            acceptable = seq == rcv_nxt if window <= 0 else rcv_nxt <= seq < rcv_nxt + window
        else:
            last = seq + seg_len - 1
            acceptable = window > 0 and (
                rcv_nxt <= seq < rcv_nxt + window or rcv_nxt <= last < rcv_nxt + window
            )
        if not acceptable:
            if window <= 0 and seq == rcv_nxt:
                # A zero window takes no data, but the ACK and RST still count.
                payload = b""
                flags &= ~FIN
                rcv.owe_ack()
            else:
                if not flags & RST:
                    rcv.answer_unacceptable(seg, now)
                    if size and seq < rcv_nxt:
                        rcv.duplicate(seq, min(seq + size, rcv_nxt))  # all of it came before
                    if self.state == TIME_WAIT and flags & FIN:
                        # The peer did not hear our last ACK: answer, restart 2 MSL.
                        self._timers.arm_close(now + self._config.time_wait)
                return

        # Second: RST. Only an exact match resets; others in the window get a challenge ACK
        # (RFC 5961 3.2), so that a blind attacker must guess the exact sequence number.
        if flags & RST:
            if seq == rcv_nxt:
                self._reset_by_peer()
            else:
                rcv.answer_unacceptable(seg, now)
            return
        # Fourth: a SYN on a synchronized connection gets a challenge ACK (RFC 5961 4.2).
        if flags & SYN:
            rcv.answer_unacceptable(seg, now)
            return
        if not flags & ACK:
            return

        # Keep only the part inside the window.
        if seq < rcv_nxt:
            cut = rcv_nxt - seq
            if size:
                rcv.duplicate(seq, min(seq + size, rcv_nxt))  # the part that came before
            if cut >= size:
                if seq + size < rcv_nxt:
                    flags &= ~FIN  # a FIN we had already
                payload = b""
            else:
                payload = payload[cut:]
            seq = rcv_nxt
        if seq + len(payload) > rcv_adv:
            payload = payload[: max(0, rcv_adv - seq)]
            flags &= ~FIN

        # RFC 7323 4.3: the timestamp to echo comes from segments up to what we acknowledged.
        if ts_ok and seq <= rcv.last_ack_sent and (seg.tsval - rcv.ts_recent) & _MASK < _HALF:
            rcv.take_ts(seg.tsval, now)

        # Fifth: the acknowledgment.
        if not self._input_ack(seg, seq, flags, len(payload), now):
            return
        # Seventh: the data.
        # (Data after the peer's FIN is ignored: RFC 9293 3.10.7.4, seventh step.)
        if payload and 1 << self.state & RECEIVING:
            if self._app_closed:
                # Nobody will read it: say so with a reset (RFC 1122 4.2.2.13).
                self.abort(now)
                return
            if rcv.receive(seq, payload):
                if rcv.ooo_fin == rcv.rcv_nxt:
                    self._receive_fin(rcv.rcv_nxt, now)  # the FIN was waiting for this data
                self.emit(EV_READABLE)
        # Eighth: the FIN.
        if flags & FIN:
            self._receive_fin(seq + len(payload), now)

    def _late_ack(self, seg: Segment, seq: int, flags: int) -> bool:
        """Whether `seg`, whose timestamp PAWS finds older than TS.Recent, is an ACK that a
        later one overtook, and then take what it may say that no other ACK does: a D-SACK
        (take_late_ack()). Such an ACK carries no data and nothing but ACK, sits at RCV.NXT,
        acknowledges nothing new, and is behind TS.Recent by less than an RTO of millisecond
        ticks: harmless, since its window and acknowledgment are not taken. Linux makes the
        same exception to RFC 7323 5.3 (tcp_disordered_ack())."""
        rcv = self._rcv
        snd = self._snd
        if flags & _UNPREDICTED != ACK or seg.payload or seg.sack is None:
            return False
        if seq != rcv.rcv_nxt or (rcv.ts_recent - seg.tsval) & _MASK > snd.rto.rto * 1000:
            return False
        una = snd.snd_una
        ack = una + ((seg.ack - snd.iss - una + _HALF) & _MASK) - _HALF
        if not una - snd.max_snd_wnd <= ack <= una:
            return False
        snd.take_late_ack(seg, ack)
        return True

    def _reset_by_peer(self) -> None:
        """RFC 9293 3.10.7.4, second step, state by state."""
        state = self.state
        if state == SYN_RECEIVED and self._listener is not None:
            self._free(EV_CLOSED)  # back to LISTEN: the listener just forgets this child
        elif state == SYN_RECEIVED:
            self.error = REFUSED  # our simultaneous open was refused
            self._free(EV_RESET)
        elif state in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self.error = RESET
            self._rcv.discard()
            self._free(EV_RESET)
        else:  # CLOSING, LAST-ACK, TIME-WAIT: the peer is done anyway
            self._free(EV_CLOSED)

    def _input_ack(self, seg: Segment, seq: int, flags: int, size: int, now: float) -> bool:
        """RFC 9293 3.10.7.4, fifth step; False if the segment goes no further."""
        snd = self._snd
        una = snd.snd_una
        ack = una + ((seg.ack - snd.iss - una + _HALF) & _MASK) - _HALF
        state = self.state
        if state == SYN_RECEIVED:
            if not una < ack <= snd.snd_max:
                self._layer.send_rst(self.local_ip, self.remote_ip, seg, now)
                return False
            snd.established(seg, seq, ack)
            self._establish()
        if ack > snd.snd_max:
            self._rcv.answer_unacceptable(seg, now)  # it acknowledges what we never sent
            return False
        if ack < una:
            # An old duplicate ACK, ignored; one from further back than any window we were
            # offered is likely forged (RFC 5961 5.2): challenge it and drop the segment.
            if ack < una - snd.max_snd_wnd:
                self._rcv.answer_unacceptable(seg, now)
                return False
            if seg.sack is not None:
                snd.take_late_ack(seg, ack)  # overtaken by a later ACK: its D-SACK
            return True
        snd.take_ack(seg, seq, ack, flags, size, now)
        if snd.fin_acked(ack):
            state = self.state
            new = self._to(FIN_ACKED)
            if new == state:
                return True  # acknowledged again
            if new == FIN_WAIT_2:
                if self._app_closed:
                    # RFC 9293 leaves FIN-WAIT-2 unbounded; a peer that never closes must not
                    # hold a connection nobody can use any more (Linux: tcp_fin_timeout).
                    self._timers.arm_close(now + self._config.fin_wait_2_timeout)
            elif new == TIME_WAIT:
                self._enter_time_wait(now)
            else:  # CLOSED, from LAST-ACK
                self._free(EV_CLOSED)
                return False
        return True

    def _receive_fin(self, fin_seq: int, now: float) -> None:
        """RFC 9293 3.10.7.4, eighth step."""
        if not self._rcv.take_fin(fin_seq):
            return
        state = self.state
        new = self._to(FIN_IN)
        if new == TIME_WAIT:
            if state == TIME_WAIT:
                self._timers.arm_close(now + self._config.time_wait)
            else:
                self._enter_time_wait(now)
        self.emit(EV_PEER_CLOSED | EV_READABLE)

    def answer(self, now: float) -> None:
        """After input: send what the segments allow or call for, then the ACK if owed."""
        snd = self._snd
        # Mostly there is nothing new to send (the receiving side's common case): tested
        # here, as output() would, to spare the per-segment call.
        if 1 << self.state & SENDING and (
            snd.snd_nxt < snd.buf_seq + len(snd.buf) or snd.fin_queued
        ):
            snd.output(now)
        if self._rcv.ack_due(now, self._config.delayed_ack):
            snd.send_ack(now)
        self._rearm()

    # Timers.

    def _rearm(self) -> None:
        """Recompute `deadline` and tell the layer if it came earlier: its heap keeps a
        later entry, which fires harmlessly, rather than being searched for it."""
        deadline = self._timers.rearm()
        if deadline < self.heap_deadline:
            self._layer.schedule(self, deadline)

    def on_timer(self, now: float) -> None:
        """Fire every timer that is due."""
        timers = self._timers
        if timers.close_at <= now:
            self._free(EV_CLOSED)  # TIME-WAIT over (RFC 9293 3.10.8), or FIN-WAIT-2 given up
            return
        snd = self._snd
        if timers.rtx_at <= now:
            timers.fire_rtx()
            if timers.persist:
                alive = snd.probe_window(now)
            elif timers.tlp:
                snd.tail_loss_probe(now)
                alive = True
            elif timers.reo:
                snd.reordering_timeout(now)
                alive = True
            else:
                alive = snd.retransmit_timeout(now)
            if not alive:
                self._time_out()
                return
        if timers.ka_at <= now:
            self._keepalive_probe(now)
            if self.state == CLOSED:
                return
        if timers.dack_at <= now:
            snd.send_ack(now)
        self._rearm()

    def _keepalive_probe(self, now: float) -> None:
        """RFC 1122 4.2.3.6: a segment one below SND.UNA, which the peer must ACK."""
        snd = self._snd
        timers = self._timers
        if snd.snd_max > snd.snd_una or self.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2):
            timers.keepalive_later(now)  # busy, or not synchronized: nothing to probe
        elif timers.keepalive_probe(now):
            snd.transmit(snd.snd_una - 1, ACK, b"", now)
        else:
            self._time_out()

    def _time_out(self) -> None:
        self.error = TIMED_OUT
        self._free(EV_TIMED_OUT)

    # Closing.

    def _enter_time_wait(self, now: float) -> None:
        """Stay 2 MSL to answer a retransmitted FIN (RFC 9293 3.4.2); hold no buffers."""
        self._timers.time_wait(now + self._config.time_wait)
        self._release_buffers()
        self._layer.entered_time_wait(self)

    def _release_buffers(self) -> None:
        self._snd.release()
        self._rcv.drop_reordered()

    def _free(self, event: int) -> None:
        """Leave the layer's table for good. Unread data stays readable, off the budget."""
        self._to(DELETE)
        self._release_buffers()
        self._snd.uncharge()
        self._rcv.uncharge()
        self._timers.stop()
        self._layer.forget(self)
        self.emit(event | EV_CLOSED | EV_READABLE)
