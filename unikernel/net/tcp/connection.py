"""One TCP connection: the state machine of RFC 9293 3.3.2 and 3.10, sans-IO.

The layer (layer.py) hands it parsed segments and the time, and calls on_timer() once its
`deadline` has passed; the application calls send(), recv(), shutdown(), close() and abort().
Segments to send go to the layer's outbox, events for the application to the layer's event
list. Nothing here reads a clock or does I/O.

Sequence numbers are unwrapped: SND.* count from our initial sequence number (the SYN is 0, the
first data byte 1) and RCV.* from the peer's, as plain ints that never wrap. Only the wire
values wrap, and the conversion happens once per segment, so every comparison below is an
ordinary one.
"""

from __future__ import annotations

from unikernel.net.tcp.buffers import ReorderQueue, Scoreboard
from unikernel.net.tcp.congestion import NewReno, initial_window
from unikernel.net.tcp.rto import RttEstimator
from unikernel.net.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    build_segment,
    sack_option,
    syn_options,
    timestamp_option,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.net.tcp.layer import Listener, TcpLayer
    from unikernel.net.tcp.segment import Buffer, Segment

# States (RFC 9293 3.3.2). A Listener stands for LISTEN.
CLOSED = 0
LISTEN = 1
SYN_SENT = 2
SYN_RECEIVED = 3
ESTABLISHED = 4
FIN_WAIT_1 = 5
FIN_WAIT_2 = 6
CLOSE_WAIT = 7
CLOSING = 8
LAST_ACK = 9
TIME_WAIT = 10
STATE_NAMES = (
    "CLOSED",
    "LISTEN",
    "SYN-SENT",
    "SYN-RECEIVED",
    "ESTABLISHED",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "CLOSE-WAIT",
    "CLOSING",
    "LAST-ACK",
    "TIME-WAIT",
)
# States in which we may (re)send data or our FIN, as a bit mask over the states.
_SENDING = 1 << ESTABLISHED | 1 << CLOSE_WAIT | 1 << FIN_WAIT_1 | 1 << CLOSING | 1 << LAST_ACK
# States in which the peer's data is still welcome (it has not sent its FIN).
_RECEIVING = 1 << ESTABLISHED | 1 << FIN_WAIT_1 | 1 << FIN_WAIT_2

# Events for the application, a bit mask; the layer reports each subject once per batch.
EV_CONNECTED = 0x01  # the handshake completed
EV_READABLE = 0x02  # data arrived (or the peer's FIN: recv() then returns b"")
EV_WRITABLE = 0x04  # room in the send buffer again after a send() was cut short
EV_PEER_CLOSED = 0x08  # the peer's FIN: no more data will come
EV_RESET = 0x10  # reset by the peer (or refused, while connecting): see `error`
EV_TIMED_OUT = 0x20  # retransmissions or keep-alive probes went unanswered: see `error`
EV_CLOSED = 0x40  # the connection is gone from the layer's table
EV_ACCEPTABLE = 0x80  # (on a Listener) an established connection waits in accept()

# Why a connection ended, in `error`.
REFUSED = "connection refused"
RESET = "connection reset"
TIMED_OUT = "connection timed out"

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_INF = float("inf")
_DEFAULT_MSS = 536  # RFC 9293 3.7.1: assumed when the peer sends no MSS option
_MIN_MSS = 64  # below this a peer's MSS only makes us burn CPU on tiny segments
_TS_LEN = 12  # NOP, NOP, timestamps: in every segment once negotiated (RFC 7323 3.2)
_PAWS_IDLE = 24 * 24 * 3600.0  # RFC 7323 5.5: TS.Recent goes stale after 24 days idle
_DUP_THRESH = 3  # RFC 5681 3.2
_ANSWER_INTERVAL = 0.5  # between ACKs to refused segments (Linux: tcp_invalid_ratelimit)
_PTO_MIN = 0.01  # the shortest tail loss probe timeout (as Linux's, about two jiffies)
_WC_DEL_ACK = 0.2  # RFC 8985 7.2 WCDelAckT: how long a peer may delay its ACK at worst


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
    ) -> None:
        self.mtu = mtu  # of the link under IPv4: our MSS is mtu - 40
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


def _wscale_for(buffer: int) -> int:
    """The smallest shift that lets a 16-bit window field cover `buffer` (RFC 7323 2.3)."""
    shift = 0
    while buffer >> shift > 0xFFFF and shift < 14:
        shift += 1
    return shift


class Connection:
    """A connection, from the first SYN to CLOSED. Made by TcpLayer.connect() or by a Listener.

    `user` is free for the application (the socket layer keeps its socket there).
    """

    __slots__ = (
        "_ack_now",
        "_answered_at",
        "_app_closed",
        "_buf_seq",
        "_cc",
        "_charged",
        "_close_at",
        "_config",
        "_dack_at",
        "_dupacks",
        "_events",
        "_fin_queued",
        "_fin_sent",
        "_heap_deadline",
        "_ka_at",
        "_ka_count",
        "_ka_idle",
        "_ka_interval",
        "_ka_probes",
        "_last_ack_sent",
        "_last_send",
        "_layer",
        "_listener",
        "_max_snd_wnd",
        "_ooo",
        "_ooo_fin",
        "_partial_acks",
        "_peer_fin",
        "_persist",
        "_probes",
        "_rcv_adv",
        "_rcv_buf",
        "_rcv_mss",
        "_rcv_scale",
        "_rcv_size",
        "_rmss_threshold",
        "_rto",
        "_rtt_seq",
        "_rtt_time",
        "_rtx_at",
        "_rtx_hint",
        "_rtx_marks",
        "_rtx_tsval",
        "_sack_ok",
        "_sacked",
        "_snd_buf",
        "_snd_scale",
        "_snd_size",
        "_tlp",
        "_tlp_high",
        "_tlp_retrans",
        "_ts_offset",
        "_ts_ok",
        "_ts_recent",
        "_ts_recent_at",
        "_unacked_segs",
        "_want_write",
        "_wl1",
        "_wl2",
        "_wscale_ok",
        "deadline",
        "error",
        "irs",
        "iss",
        "key",
        "local_ip",
        "local_port",
        "nodelay",
        "rcv_nxt",
        "remote_ip",
        "remote_port",
        "retransmits",
        "smss",
        "snd_max",
        "snd_nxt",
        "snd_una",
        "snd_wnd",
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
    ) -> None:
        config = layer.config
        self._layer = layer
        self._config = config
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.key = (remote_ip, remote_port, local_ip, local_port)
        self.state = CLOSED
        self.error: str | None = None
        self.user: object = None
        self.nodelay = False  # True turns Nagle's algorithm (RFC 896) off
        self.retransmits = 0
        self._listener: Listener | None = None
        self._events = 0
        self._app_closed = False  # close(): the application reads no more
        self._charged = True  # our buffers still count towards the layer's memory

        # Send side (RFC 9293 3.3.1), unwrapped.
        self.iss = iss & _MASK
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_max = 0  # highest sequence sent + 1: snd_nxt goes back below it after a timeout
        self.snd_wnd = 0
        self._max_snd_wnd = 0
        self._wl1 = 0
        self._wl2 = 0
        self._snd_buf = bytearray()  # unacknowledged and unsent data
        self._buf_seq = 1  # sequence number of _snd_buf[0]
        self._snd_size = config.send_buffer
        self._fin_queued = False  # the FIN follows the last byte of _snd_buf
        self._fin_sent = False
        self._want_write = False  # a send() was cut short: report EV_WRITABLE
        self._snd_scale = 0
        self._wscale_ok = False
        self._sack_ok = False
        self._sacked = Scoreboard(16)
        self._rtx_hint = 0  # in recovery, holes below this were retransmitted already
        # In recovery, each hole retransmitted -> SND.MAX when it was: SACKs for data beyond
        # that (sent later, arrived first) mean the retransmission was lost too.
        self._rtx_marks: dict[int, int] = {}
        self._dupacks = 0
        self._partial_acks = 0
        self._last_send = -1.0  # when data last left (-1: never)
        our_mss = config.mtu - 40
        self.smss = our_mss
        self._rcv_mss = our_mss

        # Receive side, unwrapped.
        self.irs = 0
        self.rcv_nxt = 0
        self._rcv_size = config.recv_buffer
        self._rcv_adv = 0  # right edge of the window offered: never moves left (RFC 9293 3.8.6)
        self._rcv_buf = bytearray()
        self._ooo = ReorderQueue(config.max_reorder_chunks)
        self._ooo_fin = -1  # sequence number of a FIN that came ahead of data
        self._peer_fin = False
        self._rcv_scale = 0
        # Receiver SWS avoidance (RFC 9293 3.8.6.2.2): open the window in steps of at least
        # min(buffer / 2, MSS).
        self._rmss_threshold = min(self._rcv_size // 2, our_mss)
        self._unacked_segs = 0  # segments received since our last ACK (delayed ACK)
        self._ack_now = False
        self._answered_at = -_INF
        self._last_ack_sent = 0

        # Timestamps (RFC 7323 3, 4, 5).
        self._ts_ok = False
        self._ts_offset = ts_offset  # a random offset per connection (RFC 7323 5.4)
        self._ts_recent = 0
        self._ts_recent_at = 0.0

        self._rto = RttEstimator(config.rto_initial, config.rto_min, config.rto_max)
        self._rtt_seq = -1  # without timestamps: the segment being timed (Karn, RFC 6298 3)
        self._rtt_time = 0.0
        self._rtx_tsval = 0  # our timestamp when the retransmission timer last fired
        self._cc = NewReno(our_mss, config.initial_window)

        # Timers, as absolute times (inf: not armed); `deadline` is the earliest.
        self._rtx_at = _INF  # retransmission, or the persist timer when _persist
        self._persist = False
        self._tlp = False  # _rtx_at is the tail loss probe's timeout (RFC 8985 7.2)
        self._tlp_high = -1  # SND.MAX after our probe, until its episode ends (7.4)
        self._tlp_retrans = False  # the probe resent data rather than sending new data
        self._probes = 0  # window probes in a row the peer did not answer
        self._dack_at = _INF
        self._ka_at = _INF
        self._close_at = _INF  # TIME-WAIT, or FIN-WAIT-2 of a closed connection
        self._ka_idle = 0.0  # keep-alive off until keepalive()
        self._ka_interval = 0.0
        self._ka_count = 0
        self._ka_probes = 0
        self.deadline = _INF
        self._heap_deadline = _INF  # the layer's earliest heap entry for us

    def __repr__(self) -> str:
        remote = ".".join(str(b) for b in self.remote_ip)
        return (
            f"<Connection :{self.local_port} -> {remote}:{self.remote_port} "
            f"{STATE_NAMES[self.state]}>"
        )

    # What the application sees.

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    @property
    def readable(self) -> int:
        """Bytes recv() can return now."""
        return len(self._rcv_buf)

    @property
    def at_eof(self) -> bool:
        """The peer's FIN has arrived and every byte before it has been read."""
        return self._peer_fin and not self._rcv_buf

    @property
    def send_space(self) -> int:
        """Bytes send() would take now."""
        if self._fin_queued or self.state in (CLOSED, TIME_WAIT):
            return 0
        layer = self._layer
        room = self._snd_size - len(self._snd_buf)
        return max(0, min(room, layer.config.memory_limit - layer.memory_used))

    @property
    def unacked(self) -> int:
        """Bytes sent or queued that the peer has not acknowledged yet."""
        return len(self._snd_buf)

    @property
    def rto(self) -> float:
        return self._rto.rto

    @property
    def srtt(self) -> float:
        return self._rto.srtt

    @property
    def cwnd(self) -> int:
        return self._cc.cwnd

    @property
    def ssthresh(self) -> int:
        return self._cc.ssthresh

    @property
    def in_recovery(self) -> bool:
        return self._cc.in_recovery

    @property
    def snd_scale(self) -> int:
        return self._snd_scale

    @property
    def rcv_scale(self) -> int:
        return self._rcv_scale

    @property
    def timestamps(self) -> bool:
        return self._ts_ok

    @property
    def sack(self) -> bool:
        return self._sack_ok

    @property
    def rcv_window(self) -> int:
        """The window we offer now: bytes past rcv_nxt the peer may send."""
        return max(0, self._rcv_adv - self.rcv_nxt)

    @property
    def memory(self) -> int:
        """Bytes this connection holds in its buffers."""
        return len(self._snd_buf) + len(self._rcv_buf) + self._ooo.size

    # The application's calls.

    def send(self, data: Buffer, now: float) -> int:
        """Queue as much of `data` as the buffers take and send what the windows allow;
        return the number of bytes taken (0 when full: wait for EV_WRITABLE)."""
        if self._fin_queued or self.state not in (
            SYN_SENT,
            SYN_RECEIVED,
            ESTABLISHED,
            CLOSE_WAIT,
        ):
            raise self._closed_error()
        size = len(data)
        layer = self._layer
        room = self._snd_size - len(self._snd_buf)
        spare = layer.config.memory_limit - layer.memory_used
        taken = max(0, min(size, room, spare))
        if taken < size:
            self._want_write = True
            if spare < room:
                layer._wait_for_memory(self)
        if taken:
            self._snd_buf += data if taken == size else memoryview(data)[:taken]
            layer.memory_used += taken
            self._output(now)
            self._rearm()
        return taken

    def recv(self, max_bytes: int, now: float) -> bytes:
        """Up to `max_bytes` of received data; b"" if there is none (see at_eof)."""
        buf = self._rcv_buf
        if not buf:
            if self.error is not None and not self._peer_fin:
                raise self._closed_error()
            return b""
        if max_bytes >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            with memoryview(buf) as view:
                data = bytes(view[:max_bytes])
            del buf[:max_bytes]
        if self._charged:
            self._layer.memory_used -= len(data)
        # The Mirage stall: a window closed by a slow reader must reopen once it reads, or the
        # peer waits for its persist timer. Tell the peer as soon as the window has grown by
        # the SWS threshold (RFC 9293 3.8.6.2.2).
        if 1 << self.state & _RECEIVING and self._window_grows():
            self._send_ack(now)
            self._rearm()
        return data

    def shutdown(self, now: float) -> None:
        """Send our FIN after the queued data (half-close); recv() still works."""
        if self._fin_queued or self.state in (CLOSED, TIME_WAIT):
            return
        self._fin_queued = True
        if self.state == ESTABLISHED:
            self.state = FIN_WAIT_1
        elif self.state == CLOSE_WAIT:
            self.state = LAST_ACK
        # In SYN-SENT and SYN-RECEIVED the FIN waits for the handshake (RFC 9293 3.10.4).
        self._output(now)
        self._rearm()

    def close(self, now: float) -> None:
        """Close both directions. Unread or later data makes it a reset (RFC 1122 4.2.2.13)."""
        if self.state == CLOSED:
            return
        self._app_closed = True
        if self.state == SYN_SENT:
            self._free(EV_CLOSED)  # RFC 9293 3.10.4: delete the TCB
        elif self._rcv_buf:
            self.abort(now)
        else:
            self.shutdown(now)
            if self.state == FIN_WAIT_2:
                self._close_at = now + self._config.fin_wait_2_timeout
                self._rearm()

    def abort(self, now: float) -> None:
        """Reset the connection (RFC 9293 3.10.5) and forget it."""
        if self.state == CLOSED:
            return
        if self.state not in (SYN_SENT, TIME_WAIT):
            self._send(self.snd_max, RST | ACK, b"", now)  # where the peer expects us
            self._layer.stats["rst_sent"] += 1
        self._app_closed = True
        self._free(EV_CLOSED)

    def keepalive(self, idle: float, interval: float, count: int, now: float) -> None:
        """Probe an idle connection (RFC 1122 4.2.3.6): after `idle` seconds of silence, every
        `interval` seconds; time out after `count` unanswered probes. idle 0 turns it off."""
        self._ka_idle = idle
        self._ka_interval = interval
        self._ka_count = count
        self._ka_probes = 0
        self._ka_at = now + idle if idle > 0 else _INF
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

    # Opening.

    def _open_active(self, now: float) -> None:
        """Send our SYN (RFC 9293 3.10.1)."""
        self.state = SYN_SENT
        config = self._config
        self._rcv_scale = _wscale_for(self._rcv_size) if config.window_scaling else 0
        self._send_syn(now)
        self._rearm()

    def _open_passive(self, seg: Segment, now: float) -> None:
        """A SYN reached our listener: answer with a SYN-ACK (RFC 9293 3.10.7.2)."""
        self.state = SYN_RECEIVED
        self._take_syn(seg, now)
        self._send_syn(now)
        self._rearm()

    def _open_from_cookie(self, syn: Segment, now: float) -> None:
        """A SYN cookie came back (layer.py): be as _open_passive() would have left us, our
        SYN-ACK sent, from `syn` as the cookie restores it; its ACK comes next."""
        self.state = SYN_RECEIVED
        self._take_syn(syn, now)
        self.snd_nxt = self.snd_max = 1
        self._last_ack_sent = 1

    def _take_syn(self, seg: Segment, now: float) -> None:
        """Learn the peer's ISN and negotiate the options its SYN offers: window scaling and
        timestamps only if both sides send them (RFC 7323 2.2, 3.2), SACK likewise (RFC 2018)."""
        config = self._config
        self.irs = seg.seq
        self.rcv_nxt = 1
        self._wl1 = 0
        self._wscale_ok = config.window_scaling and seg.wscale >= 0
        if self._wscale_ok:
            self._snd_scale = seg.wscale
            self._rcv_scale = _wscale_for(self._rcv_size)
        else:
            self._snd_scale = self._rcv_scale = 0
        self._sack_ok = config.sack and seg.sack_ok
        self._ts_ok = config.timestamps and seg.has_ts
        if self._ts_ok:
            self._ts_recent = seg.tsval
            self._ts_recent_at = now
        peer_mss = seg.mss if seg.mss > 0 else _DEFAULT_MSS
        # RFC 9293 3.7.1: options in every segment come out of the MSS.
        mss = min(peer_mss, self._config.mtu - 40) - (_TS_LEN if self._ts_ok else 0)
        self.smss = max(mss, _MIN_MSS)
        self._cc = NewReno(self.smss, config.initial_window)
        # The window our SYN offered counts from the peer's ISN + 1, unscaled (RFC 7323 2.2).
        self._rcv_adv = 1 + min(self._rcv_size, 0xFFFF)

    def _send_syn(self, now: float) -> None:
        """SYN or SYN-ACK, with the options we offer or accept. Our window there is unscaled."""
        config = self._config
        active = self.state == SYN_SENT
        flags = SYN if active else SYN | ACK
        offer = config.window_scaling if active else self._wscale_ok
        wscale = self._rcv_scale if offer else -1
        ts = None
        if (active and config.timestamps) or self._ts_ok:
            ts = (self._ts_now(now), self._ts_recent)
        sack_ok = config.sack if active else self._sack_ok
        options = syn_options(self._rcv_mss, wscale, sack_ok, ts)
        window = min(self._rcv_size, 0xFFFF)
        ack = 0
        if flags & ACK:
            ack = (self.irs + self.rcv_nxt) & _MASK
            self._last_ack_sent = self.rcv_nxt
        segment = build_segment(
            self.local_ip,
            self.remote_ip,
            self.local_port,
            self.remote_port,
            self.iss,
            ack,
            flags,
            window,
            options,
        )
        self._layer._out.append((self.remote_ip, self.local_ip, segment))
        self.snd_nxt = self.snd_max = 1
        if self._rtt_seq < 0 and self.retransmits == 0:
            self._rtt_seq = 0  # time the SYN, unless it is a retransmission (Karn)
            self._rtt_time = now
        if self._rtx_at == _INF:
            self._rtx_at = now + self._rto.rto

    def _establish(self, seg: Segment, seq: int, ack: int, now: float) -> None:
        """The handshake is over (RFC 9293 3.10.7.3 and 3.10.7.4, fifth step)."""
        self.snd_wnd = seg.window << self._snd_scale if not seg.flags & SYN else seg.window
        self._max_snd_wnd = self.snd_wnd
        self._wl1 = seq
        self._wl2 = ack
        if self.retransmits and not self._rto.has_sample:
            self._rto.reset(3.0)  # RFC 6298 5.7
        self.state = FIN_WAIT_1 if self._fin_queued else ESTABLISHED
        self._emit(EV_CONNECTED)
        listener = self._listener
        if listener is not None:
            listener._established(self)

    # Segments arriving.

    def input(self, seg: Segment, now: float) -> None:
        """Process one segment for this connection (RFC 9293 3.10.7)."""
        state = self.state
        if state == SYN_SENT:
            self._input_syn_sent(seg, now)
        elif state != CLOSED:
            self._input(seg, now)
        if self.state != CLOSED:
            self._after_input(now)

    def _input_syn_sent(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.3."""
        flags = seg.flags
        if flags & ACK and seg.ack != (self.iss + 1) & _MASK:
            # It acknowledges something we never sent: an old duplicate, or a stale half.
            if not flags & RST:
                self._layer._send_rst(self.local_ip, self.remote_ip, seg, now)
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
            self.snd_una = 1
            self._rtt_ack(seg, 1, now)
            self._establish(seg, 0, 1, now)
            self._rto.backoffs = 0  # the SYN is acknowledged: its timeouts are over
            self._rtx_at = _INF
            self._ack_now = True
            if seg.payload:  # data on a SYN-ACK: carry on at the sixth step
                self._receive_data(1, seg.payload, now)
        else:
            # Simultaneous open (RFC 9293 figure 8): answer with a SYN-ACK from our same ISN.
            self.state = SYN_RECEIVED
            self._send_syn(now)

    def _input(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.4, for every state from SYN-RECEIVED on."""
        flags = seg.flags
        rcv_nxt = self.rcv_nxt
        seq = rcv_nxt + ((seg.seq - self.irs - rcv_nxt + _HALF) & _MASK) - _HALF
        if flags & SYN and self.state == SYN_RECEIVED and seq == 0 and not flags & RST:
            if flags & ACK and seg.ack == (self.iss + 1) & _MASK:
                # The peer's SYN-ACK of a simultaneous open: take it as the ACK it carries.
                flags &= ~SYN
                seq = 1
            else:
                self._send_syn(now)  # our SYN-ACK was lost: the peer repeats its SYN
                return
        if self._ka_idle:
            self._ka_at = now + self._ka_idle
            self._ka_probes = 0

        # PAWS (RFC 7323 5.3): a timestamp older than TS.Recent marks an old duplicate,
        # unless TS.Recent itself has gone stale.
        ts_ok = self._ts_ok and seg.has_ts
        if ts_ok and not flags & RST and (seg.tsval - self._ts_recent) & _MASK >= _HALF:
            if now - self._ts_recent_at <= _PAWS_IDLE:
                self._answer_unacceptable(seg, now)
                return
            self._ts_recent_at = now

        # First: is the segment in the window (RFC 9293 3.10.7.4)?
        payload = seg.payload
        size = len(payload)
        seg_len = size + (flags & SYN) // SYN + (flags & FIN)
        window = self._rcv_adv - rcv_nxt
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
                self._ack_now = True
            else:
                if not flags & RST:
                    self._answer_unacceptable(seg, now)
                    if self.state == TIME_WAIT and flags & FIN:
                        # The peer did not hear our last ACK: answer, restart 2 MSL.
                        self._close_at = now + self._config.time_wait
                return

        # Second: RST. Only an exact match resets; others in the window get a challenge ACK
        # (RFC 5961 3.2), so that a blind attacker must guess the exact sequence number.
        if flags & RST:
            if seq == rcv_nxt:
                self._reset_by_peer()
            else:
                self._answer_unacceptable(seg, now)
            return
        # Fourth: a SYN on a synchronized connection gets a challenge ACK (RFC 5961 4.2).
        if flags & SYN:
            self._answer_unacceptable(seg, now)
            return
        if not flags & ACK:
            return

        # Keep only the part inside the window.
        if seq < rcv_nxt:
            cut = rcv_nxt - seq
            if cut >= size:
                if seq + size < rcv_nxt:
                    flags &= ~FIN  # a FIN we had already
                payload = b""
            else:
                payload = payload[cut:]
            seq = rcv_nxt
        if seq + len(payload) > self._rcv_adv:
            payload = payload[: max(0, self._rcv_adv - seq)]
            flags &= ~FIN

        # RFC 7323 4.3: the timestamp to echo comes from segments up to what we acknowledged.
        if ts_ok and seq <= self._last_ack_sent and (seg.tsval - self._ts_recent) & _MASK < _HALF:
            self._ts_recent = seg.tsval
            self._ts_recent_at = now

        # Fifth: the acknowledgment.
        if not self._input_ack(seg, seq, flags, len(payload), now):
            return
        # Seventh: the data.
        # (Data after the peer's FIN is ignored: RFC 9293 3.10.7.4, seventh step.)
        if payload and 1 << self.state & _RECEIVING:
            if self._app_closed:
                # Nobody will read it: say so with a reset (RFC 1122 4.2.2.13).
                self.abort(now)
                return
            self._receive_data(seq, payload, now)
        # Eighth: the FIN.
        if flags & FIN:
            self._receive_fin(seq + len(payload), now)

    def _answer_unacceptable(self, seg: Segment, now: float) -> None:
        """ACK a segment we refuse, so that a peer out of step learns where we are (RFC 9293
        3.10.7.4) or so that a forger is challenged (RFC 5961). Two ends that both disagree
        would ACK each other forever: answers to segments without data, or with SYN (what such
        a loop is made of), go out at most every _ANSWER_INTERVAL (Linux does the same)."""
        if not seg.payload or seg.flags & SYN:
            if now - self._answered_at < _ANSWER_INTERVAL:
                return
            self._answered_at = now
        self._ack_now = True

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
            self._discard_received()
            self._free(EV_RESET)
        else:  # CLOSING, LAST-ACK, TIME-WAIT: the peer is done anyway
            self._free(EV_CLOSED)

    def _input_ack(self, seg: Segment, seq: int, flags: int, size: int, now: float) -> bool:
        """RFC 9293 3.10.7.4, fifth step; False if the segment goes no further."""
        una = self.snd_una
        ack = una + ((seg.ack - self.iss - una + _HALF) & _MASK) - _HALF
        state = self.state
        if state == SYN_RECEIVED:
            if not una < ack <= self.snd_max:
                self._layer._send_rst(self.local_ip, self.remote_ip, seg, now)
                return False
            self._establish(seg, seq, ack, now)
        if ack > self.snd_max:
            self._answer_unacceptable(seg, now)  # it acknowledges what we never sent
            return False
        if ack < una:
            # An old duplicate ACK, ignored; one from further back than any window we were
            # offered is likely forged (RFC 5961 5.2): challenge it and drop the segment.
            if ack < una - self._max_snd_wnd:
                self._answer_unacceptable(seg, now)
                return False
            return True

        if self._persist:
            self._probes = 0  # the peer answers our window probes: never give up on it
        window = seg.window << self._snd_scale
        # RFC 5681 2 counts an ACK as a duplicate only if it changes nothing, the window
        # included; with SACK, an ACK that SACKs new data counts whatever else it changes
        # (RFC 6675 2). That matters with Linux, whose window grows with almost every ACK as
        # it tunes its receive buffer: by RFC 5681 alone its duplicate ACKs would hardly ever
        # count, and nearly every loss would wait for the retransmission timer.
        sacked = self._sack_ok and seg.sack is not None and self._take_sack(seg.sack, ack)
        duplicate = (
            ack == una
            and self.snd_max > una
            and (sacked or (size == 0 and not flags & FIN and window == self.snd_wnd))
        )
        if self._wl1 < seq or (self._wl1 == seq and self._wl2 <= ack):
            # The window update rule: only segments newer than the last one that set it.
            self.snd_wnd = window
            self._wl1 = seq
            self._wl2 = ack
            if window > self._max_snd_wnd:
                self._max_snd_wnd = window
        if self._tlp_high >= 0:
            self._tlp_episode(seg, ack)
        cc = self._cc
        if ack > una:
            self._rtt_ack(seg, ack, now)
            self._new_ack(ack, now)
            if sacked and not cc.in_recovery:
                self._dup_ack(now)  # with new SACK information it counts too (RFC 6675 5)
        elif duplicate:
            self._dup_ack(now)
        if cc.in_recovery and self._sack_ok:
            cc.limit_unsacked(self._sacked.total)

        # Our FIN acknowledged?
        if self._fin_sent and ack == self._buf_seq + len(self._snd_buf) + 1:
            state = self.state
            if state == FIN_WAIT_1:
                self.state = FIN_WAIT_2
                if self._app_closed:
                    # RFC 9293 leaves FIN-WAIT-2 unbounded; a peer that never closes must not
                    # hold a connection nobody can use any more (Linux: tcp_fin_timeout).
                    self._close_at = now + self._config.fin_wait_2_timeout
            elif state == CLOSING:
                self._enter_time_wait(now)
            elif state == LAST_ACK:
                self._free(EV_CLOSED)
                return False
        return True

    def _rtt_ack(self, seg: Segment, ack: int, now: float) -> None:
        """An RTT sample from an ACK of new data.

        The timed segment (RFC 6298 3, one per round trip, never a retransmission) comes
        first, as Linux prefers it too: an echoed timestamp deliberately overstates the RTT
        when a hole or a lost ACK delays it (RFC 7323 4.3), and on a lossy path those samples
        would drive the RTO up by seconds. Timestamps serve where Karn's rule leaves nothing
        to time: after a timeout, they measure the retransmission (RFC 7323 4.1) - if they
        echo it, and not an earlier segment whose ACK was lost, which would feed the backoff
        itself into the estimate."""
        if 0 <= self._rtt_seq < ack:
            self._rto.sample(now - self._rtt_time)
            self._rtt_seq = -1
        elif (
            self._ts_ok
            and self._rto.backoffs
            and seg.has_ts
            and (seg.tsecr - self._rtx_tsval) & _MASK < _HALF  # echoes the retransmission
        ):
            self._rto.sample(((self._ts_now(now) - seg.tsecr) & _MASK) / 1000)

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
            if low < start < end <= self.snd_max and self._sacked.add(start, end) > 0:
                new = True
        return new

    def _new_ack(self, ack: int, now: float) -> None:
        """SND.UNA advances (RFC 9293 3.10.7.4; RFC 5681; RFC 6582; RFC 6298 5.2, 5.3)."""
        una = self.snd_una
        acked = ack - una
        buf = self._snd_buf
        data_end = min(ack, self._buf_seq + len(buf))
        freed = data_end - self._buf_seq
        if freed > 0:
            del buf[:freed]
            self._buf_seq = data_end
            if self._charged:
                self._layer.memory_used -= freed
            if not buf or (self._want_write and len(buf) <= self._snd_size * 3 // 4):
                # Room for a writer that was cut short, or everything acknowledged (drain).
                self._want_write = False
                self._emit(EV_WRITABLE)
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        self._sacked.prune(ack)
        marks = self._rtx_marks
        if marks:
            for seq in [seq for seq in marks if seq < ack]:
                del marks[seq]
        self._rto.backoffs = 0
        cc = self._cc
        restart_timer = True
        if cc.in_recovery:
            if cc.is_full_ack(ack):
                cc.on_full_ack(self.snd_max - ack)
                self._dupacks = 0
                marks.clear()
            else:
                # A partial ACK: the next hole is at `ack`. Retransmit it unless the SACK
                # logic did already (and that retransmission is not lost); RFC 6582 resets
                # the timer on the first one only.
                cc.on_partial_ack(acked)
                if ack >= self._rtx_hint:
                    self._rtx_hint = ack + self._recovery_retransmit(ack, now)
                elif self._retransmission_lost():
                    self._recovery_retransmit(ack, now)
                self._partial_acks += 1
                restart_timer = self._partial_acks == 1
        else:
            self._dupacks = 0
            cc.on_ack(max(freed, 0), self.snd_max - una)
        if self.snd_max == ack:
            self._rtx_at = _INF  # everything acknowledged (RFC 6298 5.2)
            self._persist = self._tlp = False
        elif restart_timer and not self._persist:
            self._start_timer(now)  # RFC 6298 5.3; RFC 8985 7.2

    def _dup_ack(self, now: float) -> None:
        """A duplicate ACK (RFC 5681 2 defines which): limited transmit, fast retransmit,
        or another segment gone from the network during recovery."""
        self._dupacks += 1
        cc = self._cc
        una = self.snd_una
        if cc.in_recovery:
            if self._retransmission_lost():
                self._recovery_retransmit(una, now)  # in place of new data, as below
                return
            hole = self._next_hole()
            if hole >= 0:
                # SACK says it is lost: resend it in place of new data (RFC 6675 spirit).
                self._rtx_hint = hole + self._recovery_retransmit(hole, now)
            else:
                cc.on_dup_ack_in_recovery()
        elif self._loss_detected(una) and (
            cc.may_enter_recovery(una) or self._sacked.highest > cc.recover
        ):
            # Fast retransmit (RFC 5681 3.2; RFC 6582 3.2 step 2). After a timeout, RFC 6582
            # 4 waits for `recover` to be acknowledged, lest the duplicates that go-back-N's
            # needless retransmissions cause count as losses; the peer SACKing data first
            # sent after the timeout is no such echo but a new loss.
            cc.enter_recovery(self.snd_max - una, self.snd_max)
            self._partial_acks = 0
            self._tlp_high = -1  # a probe's episode ends in the reduction made here
            self._rtx_hint = una + self._recovery_retransmit(una, now)
            if self._tlp:
                self._start_timer(now)  # no probe during recovery: the RTO again
        # Below the threshold, _output() sends new data for limited transmit (RFC 3042).

    def _loss_detected(self, una: int) -> bool:
        """Whether the segment at SND.UNA is lost: DupThresh duplicate ACKs, or sooner when
        SACK shows DupThresh segments above it though some of their ACKs were lost (RFC 6675
        5), or a hole below a tail loss probe."""
        return self._dupacks >= _DUP_THRESH or self._is_lost(una) or self._probe_found_loss()

    def _recovery_retransmit(self, seq: int, now: float) -> int:
        """_retransmit() for fast recovery, remembering how far we had sent by then."""
        self._rtx_marks[seq] = self.snd_max
        return self._retransmit(seq, now)

    def _retransmission_lost(self) -> bool:
        """Whether the hole at SND.UNA was retransmitted in this recovery and the peer has
        since SACKed data first sent after that: then the retransmission was lost as well
        (RACK's insight, RFC 8985 2), and only the retransmission timer would resend it."""
        mark = self._rtx_marks.get(self.snd_una)
        return mark is not None and self._sacked.highest > mark

    def _probe_found_loss(self) -> bool:
        """Whether the peer SACKed our tail loss probe (or the tail it probed) while data
        below stays missing: that data left at least a probe timeout (two round trips)
        before, too long ago to be merely reordered, so it is lost (RFC 8985 7.4: the
        probe's ACK lets RACK start fast recovery)."""
        return self._tlp_high >= 0 and self._sacked.highest >= self._tlp_high

    def _is_lost(self, seq: int) -> bool:
        """RFC 6675 IsLost: at least DupThresh segments' worth SACKed above `seq`."""
        above = 0
        for start, end in self._sacked.ranges:
            if start > seq:
                above += end - start
        return above >= _DUP_THRESH * self.smss

    def _next_hole(self) -> int:
        """The first unacknowledged byte not SACKed, not retransmitted yet in this recovery,
        that IsLost (RFC 6675); -1 if none."""
        sacked = self._sacked
        if not sacked:
            return -1
        seq = sacked.skip(max(self._rtx_hint, self.snd_una))
        return seq if self._is_lost(seq) else -1

    def _receive_data(self, seq: int, payload: Buffer, now: float) -> None:
        """RFC 9293 3.10.7.4, seventh step: `payload` starts at `seq` >= RCV.NXT and ends
        inside the window."""
        layer = self._layer
        size = len(payload)
        if layer.memory_used + size > layer.config.memory_limit:
            # Over the global budget: drop it, as if lost; the peer will retransmit.
            layer.stats["dropped_memory"] += 1
            self._ack_now = True
            return
        if seq == self.rcv_nxt:
            self._rcv_buf += payload
            layer.memory_used += size
            self.rcv_nxt = rcv_nxt = seq + size
            ooo = self._ooo
            if ooo.size:
                # This may fill a hole: take what now follows, and ACK at once (RFC 5681 4.2).
                held = ooo.size
                for piece in ooo.take(rcv_nxt):
                    self._rcv_buf += piece
                    rcv_nxt += len(piece)
                    held -= len(piece)
                layer.memory_used -= held - ooo.size  # held twice: the overlap goes
                self.rcv_nxt = rcv_nxt
                self._ack_now = True
            else:
                self._unacked_segs += 1
            if self._ooo_fin == rcv_nxt:
                self._receive_fin(rcv_nxt, now)  # the FIN was waiting for this data
            self._emit(EV_READABLE)
        else:
            # Out of order: keep it for later and send a duplicate ACK at once (RFC 5681 4.2),
            # which carries SACK blocks.
            layer.memory_used += self._ooo.add(seq, payload)
            self._ack_now = True

    def _receive_fin(self, fin_seq: int, now: float) -> None:
        """RFC 9293 3.10.7.4, eighth step."""
        if fin_seq != self.rcv_nxt:
            if fin_seq > self.rcv_nxt:
                self._ooo_fin = fin_seq  # data before it is missing: remember it
                self._ack_now = True
            return
        self.rcv_nxt += 1
        self._ooo_fin = -1
        self._peer_fin = True
        self._ack_now = True
        state = self.state
        if state in (SYN_RECEIVED, ESTABLISHED):
            self.state = CLOSE_WAIT
        elif state == FIN_WAIT_1:
            self.state = CLOSING  # simultaneous close: our FIN is not acknowledged yet
        elif state == FIN_WAIT_2:
            self._enter_time_wait(now)
        elif state == TIME_WAIT:
            self._close_at = now + self._config.time_wait
        self._emit(EV_PEER_CLOSED | EV_READABLE)

    def _after_input(self, now: float) -> None:
        """Send what the segment allows or calls for, then the ACK if still owed."""
        if 1 << self.state & _SENDING:
            self._output(now)
        if self._ack_now or self._unacked_segs >= 2:
            # At least every second segment, and at once when something is odd (RFC 5681 4.2).
            self._send_ack(now)
        elif self._unacked_segs and self._dack_at == _INF:
            self._dack_at = now + self._config.delayed_ack
        self._rearm()

    # Segments leaving.

    def _output(self, now: float) -> None:
        """Send new data (and our FIN) as the windows allow (RFC 9293 3.8.6, RFC 5681)."""
        if not 1 << self.state & _SENDING:
            return
        buf = self._snd_buf
        buf_seq = self._buf_seq
        buf_end = buf_seq + len(buf)
        # Our FIN is due if queued and not sent, or sent but due again after a timeout.
        fin_pending = self._fin_queued and self.snd_nxt <= buf_end
        if self.snd_nxt >= buf_end and not fin_pending:
            return  # nothing new to send: the common case on the receiving side
        una = self.snd_una
        smss = self.smss
        cc = self._cc
        if self.snd_max == una and 0 <= self._last_send < now - self._rto.rto:
            cc.on_idle(initial_window(smss, self._config.initial_window))
        cwnd = cc.cwnd
        if self._dupacks and not cc.in_recovery:
            cwnd += self._dupacks * smss  # limited transmit (RFC 3042)
        wnd_edge = una + self.snd_wnd
        edge = min(wnd_edge, una + cwnd)
        sacked = self._sacked
        while True:
            nxt = self.snd_nxt
            if nxt < self.snd_max and sacked:
                nxt = self.snd_nxt = min(sacked.skip(nxt), self.snd_max)
            avail = buf_end - nxt
            if avail <= 0:
                if fin_pending and nxt == buf_end and nxt < wnd_edge:
                    self._send(nxt, FIN | ACK, b"", now)  # the FIN alone
                    self._sent(nxt, 1, now)
                    self._fin_sent = True
                    fin_pending = False
                break
            size = min(avail, smss, edge - nxt)
            if size <= 0:
                break
            if size < smss:
                if size < avail:
                    # A runt the window cuts short: sender SWS avoidance (RFC 9293
                    # 3.8.6.2.1) waits for half the largest window the peer offered.
                    if wnd_edge > una + cwnd or size < self._max_snd_wnd // 2:
                        break
                elif (
                    not self.nodelay
                    and not self._fin_queued
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
                self._fin_sent = True
            offset = nxt - buf_seq
            self._send(nxt, flags, buf[offset : offset + size], now)
            self._sent(nxt, size + fin, now)
        if self.snd_max == una and self._rtx_at == _INF and (buf_end > una or fin_pending):
            # Data waits and nothing is in flight to bring an ACK: the persist timer
            # (RFC 9293 3.8.6.1) probes the window until it opens.
            self._persist = True
            self._tlp = False
            self._rtx_at = now + self._rto.rto

    def _sent(self, seq: int, length: int, now: float) -> None:
        """Bookkeeping after sending [seq, seq + length) from snd_nxt."""
        end = seq + length
        self.snd_nxt = end
        new = end > self.snd_max
        if new:
            if self._rtt_seq < 0 and seq == self.snd_max:
                self._rtt_seq = seq
                self._rtt_time = now
            self.snd_max = end
        else:
            self.retransmits += 1
            self._rtt_seq = -1  # Karn: no sample from a retransmission
        self._last_send = now
        if self._persist or self._rtx_at == _INF:
            self._start_timer(now)  # RFC 6298 5.1
        elif new:
            self._start_timer(now, restart=False)  # a probe's timeout restarts (RFC 8985 7.2)

    def _retransmit(self, seq: int, now: float) -> int:
        """Resend one segment from `seq`, stopping before SACKed data; return the sequence
        space it covered (0 if nothing was left to send)."""
        buf_seq = self._buf_seq
        buf_end = buf_seq + len(self._snd_buf)
        size = min(self.smss, buf_end - seq, self.snd_max - seq)  # never past what was sent
        stop = self._sacked.next_start(seq)
        if 0 <= stop < seq + size:
            size = stop - seq
        fin = self._fin_sent and seq + size == buf_end
        if size <= 0 and not fin:
            return 0
        flags = ACK | FIN if fin else ACK
        offset = seq - buf_seq
        self._send(seq, flags, self._snd_buf[offset : offset + size], now)
        self.retransmits += 1
        self._layer.stats["retransmits"] += 1
        self._rtt_seq = -1
        if self._rtx_at == _INF or self._persist:
            self._persist = self._tlp = False
            self._rtx_at = now + self._rto.rto
        return size + fin

    def _start_timer(self, now: float, restart: bool = True) -> None:
        """(Re)start the retransmission timer: as a tail loss probe's timeout when a probe
        may go (RFC 8985 7.2), else as the retransmission timeout; `restart` False leaves
        a retransmission timeout that runs already as it is (RFC 6298 5.1)."""
        rto = self._rto.rto
        if self._tlp_allowed():
            srtt = self._rto.srtt
            if self.snd_max - self.snd_una > self.smss:
                pto = max(2 * srtt, _PTO_MIN)
            else:
                pto = 2 * srtt + _WC_DEL_ACK  # one segment: its ACK may come delayed
            if pto < rto:
                self._persist = False
                self._tlp = True
                self._rtx_at = now + pto
                return
        if restart or self._tlp or self._persist or self._rtx_at == _INF:
            self._persist = self._tlp = False
            self._rtx_at = now + rto

    def _tlp_allowed(self) -> bool:
        """Whether a tail loss probe may be scheduled: SACK will show what it finds, no other
        recovery and no other probe is under way (RFC 8985 7.2)."""
        return (
            self._sack_ok
            and self._config.tail_loss_probe
            and self._tlp_high < 0
            and self.snd_max > self.snd_una
            and self._rto.has_sample
            and not self._rto.backoffs
            and not self._cc.in_recovery
            and bool(1 << self.state & _SENDING)
        )

    def _tail_loss_probe(self, now: float) -> None:
        """The probe timeout fired (RFC 8985 7.3): send one segment, new data if the peer's
        window takes it, else the last one again, to draw an ACK whose SACK blocks start fast
        recovery instead of waiting for the retransmission timeout. Then the RTO follows."""
        una = self.snd_una
        snd_max = self.snd_max
        if snd_max == una:
            return
        buf_end = self._buf_seq + len(self._snd_buf)
        self._layer.stats["loss_probes"] += 1
        size = min(self.smss, buf_end - snd_max, una + self.snd_wnd - snd_max)
        self._tlp_high = snd_max  # no new probe until the episode ends
        if size > 0 and self.snd_nxt == snd_max:
            self._tlp_retrans = False
            offset = snd_max - self._buf_seq
            flags = ACK | PSH if snd_max + size == buf_end else ACK
            self._send(snd_max, flags, self._snd_buf[offset : offset + size], now)
            self._sent(snd_max, size, now)
            self._tlp_high = self.snd_max
        else:
            self._tlp_retrans = True
            last = max(una, min(buf_end, snd_max) - self.smss)
            self._retransmit(last, now)
        self._rtx_at = now + self._rto.rto
        self._tlp = False

    def _tlp_episode(self, seg: Segment, ack: int) -> None:
        """The ACK `ack` (unwrapped) for a probe episode (RFC 8985 7.4): the episode ends once
        an ACK covers the probe. A probe that resent data repaired a loss, calling for the
        window reduction fast recovery would have made, unless a D-SACK (RFC 2883) says both
        copies arrived or the probe was needless; Linux judges the same way."""
        high = self._tlp_high
        if ack < high:
            return
        if self._tlp_retrans:
            if self._dsack(seg, ack):
                self._tlp_high = -1  # both copies arrived: only an ACK had been lost
            elif ack > high:
                self._tlp_high = -1
                self._cc.on_probe_repair()
            return  # ack == high without a D-SACK: wait for one, or for more acknowledged
        self._tlp_high = -1

    def _dsack(self, seg: Segment, ack: int) -> bool:
        """Whether the segment's first SACK block reports data below its cumulative ACK: a
        duplicate the peer received (RFC 2883 4)."""
        if not seg.sack:
            return False
        una = self.snd_una
        right = seg.sack[0][1]
        return una + ((right - self.iss - una + _HALF) & _MASK) - _HALF <= ack

    def _send(self, seq: int, flags: int, payload: Buffer, now: float) -> None:
        """Build and queue one segment; every one but a bare RST carries ACK, our window,
        timestamps (RFC 7323 3.2) and SACK blocks (RFC 2018 4)."""
        options = b""
        if self._ts_ok:
            options = timestamp_option(self._ts_now(now), self._ts_recent)
        if self._sack_ok and self._ooo.size:
            # As many blocks as fit (RFC 2018 3): the MSS bounds data and options together
            # (RFC 9293 3.7.1), so a full data segment has no room for any.
            room = (self.smss - len(payload) - 4) // 8
            count = min(room, 3 if self._ts_ok else 4)
            if count > 0:
                irs = self.irs
                blocks = [
                    ((irs + s) & _MASK, (irs + e) & _MASK) for s, e in self._ooo.blocks(count)
                ]
                options += sack_option(blocks)
        ack = 0
        window = 0
        if flags & ACK:
            ack = (self.irs + self.rcv_nxt) & _MASK
            window = self._window_field()
            self._last_ack_sent = self.rcv_nxt
            if seq >= self.snd_max:
                # The ACK owed has gone. Not so on a retransmission or a probe: the peer may
                # find it old and drop it, acknowledgment and all (RFC 9293 3.10.7.4).
                self._unacked_segs = 0
                self._ack_now = False
                self._dack_at = _INF
        segment = build_segment(
            self.local_ip,
            self.remote_ip,
            self.local_port,
            self.remote_port,
            (self.iss + seq) & _MASK,
            ack,
            flags,
            window,
            options,
            payload,
        )
        self._layer._out.append((self.remote_ip, self.local_ip, segment))

    def _send_ack(self, now: float) -> None:
        if self.state == SYN_RECEIVED:
            self._send_syn(now)
        else:
            # From SND.MAX, not SND.NXT: after a timeout SND.NXT goes back, and an ACK from
            # there would look like an old duplicate to the peer, which would ignore it (BSD
            # does the same).
            self._send(self.snd_max, ACK, b"", now)

    def _window_field(self) -> int:
        """The window to advertise, moving the right edge by the receiver's SWS rule
        (RFC 9293 3.8.6.2.2) and never to the left; scaled (RFC 7323 2.3)."""
        rcv_nxt = self.rcv_nxt
        free = self._rcv_size - len(self._rcv_buf)
        layer = self._layer
        spare = layer.config.memory_limit - layer.memory_used
        if spare < free:
            free = max(spare, 0)  # under global pressure the window stops opening
        scale = self._rcv_scale
        free = min(free, 0xFFFF << scale)
        if rcv_nxt + free - self._rcv_adv >= self._rmss_threshold:
            self._rcv_adv = rcv_nxt + free
        window = self._rcv_adv - rcv_nxt
        # Rounding down can show the edge up to 2**scale - 1 bytes short (RFC 7323 2.4).
        return window >> scale if window > 0 else 0

    def _window_grows(self) -> bool:
        """Whether a read has opened the window enough to tell the peer now rather than with
        the next ACK: the window offered is down to half the buffer or less, and would at
        least double (as Linux's tcp_cleanup_rbuf decides), by no less than the SWS step.
        A steady reader thus costs no extra ACKs; a window that had closed reopens at once."""
        offered = max(self._rcv_adv - self.rcv_nxt, 0)
        if 2 * offered > self._rcv_size:
            return False
        layer = self._layer
        free = self._rcv_size - len(self._rcv_buf)
        free = min(free, max(layer.config.memory_limit - layer.memory_used, 0))
        return free >= 2 * offered and free - offered >= self._rmss_threshold

    def _ts_now(self, now: float) -> int:
        """Our timestamp clock: milliseconds, offset per connection (RFC 7323 5.4)."""
        return (int(now * 1000) + self._ts_offset) & _MASK

    # Timers.

    def _rearm(self) -> None:
        """Recompute `deadline` and tell the layer if it came earlier."""
        deadline = min(self._rtx_at, self._dack_at, self._ka_at, self._close_at)
        self.deadline = deadline
        if deadline < self._heap_deadline:
            self._layer._schedule(self, deadline)

    def on_timer(self, now: float) -> None:
        """Fire every timer that is due."""
        if self._close_at <= now:
            self._free(EV_CLOSED)  # TIME-WAIT over (RFC 9293 3.10.8), or FIN-WAIT-2 given up
            return
        if self._rtx_at <= now:
            self._rtx_at = _INF
            if self._persist:
                self._probe_window(now)
            elif self._tlp:
                self._tail_loss_probe(now)
            else:
                self._retransmit_timeout(now)
            if self.state == CLOSED:
                return
        if self._ka_at <= now:
            self._keepalive_probe(now)
            if self.state == CLOSED:
                return
        if self._dack_at <= now:
            self._send_ack(now)
        self._rearm()

    def _retransmit_timeout(self, now: float) -> None:
        """RFC 6298 5.4 to 5.6, RFC 5681 3.1, and R2 of RFC 9293 3.8.3."""
        rto = self._rto
        config = self._config
        if self.state in (SYN_SENT, SYN_RECEIVED):
            if rto.backoffs >= config.syn_retries:
                self._time_out()
                return
            self.retransmits += 1
            self._rtt_seq = -1
            self._rtx_tsval = self._ts_now(now)
            rto.backoffs += 1
            self._send_syn(now)
            return
        if rto.backoffs >= config.retries:
            self._time_out()  # R2 (RFC 9293 3.8.3): this many timeouts in a row
            return
        una = self.snd_una
        if self.snd_max == una:
            return  # nothing outstanding after all
        self._layer.stats["timeouts"] += 1
        self._cc.on_timeout(self.snd_max - una, self.snd_max, repeated=rto.backoffs > 0)
        if rto.backoffs:
            # A second timeout for the same data: the peer may have reneged on what it
            # SACKed (RFC 2018 8), so resend everything from SND.UNA.
            self._sacked.clear()
        rto.backoffs += 1
        self._dupacks = 0
        self._rtx_marks.clear()
        self._tlp_high = -1  # a timeout ends a probe's episode (RFC 8985 7.4)
        self._rtx_tsval = self._ts_now(now)
        self.snd_nxt = una + self._retransmit(una, now)  # then go back N as ACKs come
        self._rtx_at = now + rto.rto
        self._persist = self._tlp = False

    def _probe_window(self, now: float) -> None:
        """The persist timer fired (RFC 9293 3.8.6.1; RFC 1122 4.2.2.17): send what the window
        allows even if small, else a probe one below SND.UNA that the peer must answer with
        its window. Probes back off; a peer that answers them is never given up on."""
        rto = self._rto
        if self._probes >= self._config.retries:
            self._time_out()
            return
        una = self.snd_una
        usable = una + self.snd_wnd - self.snd_nxt
        buf_end = self._buf_seq + len(self._snd_buf)
        rto.backoffs += 1
        self._probes += 1
        self._rtx_tsval = self._ts_now(now)
        if usable > 0 and buf_end > self.snd_nxt:
            size = min(usable, self.smss, buf_end - self.snd_nxt)
            offset = self.snd_nxt - self._buf_seq
            nxt = self.snd_nxt
            self._send(nxt, ACK | PSH, self._snd_buf[offset : offset + size], now)
            self._sent(nxt, size, now)
        else:
            self._send(una - 1, ACK, b"", now)
            self._persist = True
            self._tlp = False
            self._rtx_at = now + rto.rto

    def _keepalive_probe(self, now: float) -> None:
        """RFC 1122 4.2.3.6: a segment one below SND.UNA, which the peer must ACK."""
        if self.snd_max > self.snd_una or self.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2):
            self._ka_at = now + self._ka_idle  # busy, or not synchronized: nothing to probe
            return
        if self._ka_probes >= self._ka_count:
            self._time_out()
            return
        self._ka_probes += 1
        self._send(self.snd_una - 1, ACK, b"", now)
        self._ka_at = now + self._ka_interval

    def _time_out(self) -> None:
        self.error = TIMED_OUT
        self._free(EV_TIMED_OUT)

    # Closing.

    def _enter_time_wait(self, now: float) -> None:
        """Stay 2 MSL to answer a retransmitted FIN (RFC 9293 3.4.2); hold no buffers."""
        self.state = TIME_WAIT
        self._rtx_at = self._ka_at = _INF
        self._persist = False
        self._close_at = now + self._config.time_wait
        self._release_send_side()
        self._layer._time_wait(self)

    def _discard_received(self) -> None:
        """RFC 9293 3.10.7.4: a reset flushes the queues; recv() reports the reset."""
        if self._charged:
            self._layer.memory_used -= len(self._rcv_buf)
        self._rcv_buf.clear()

    def _release_send_side(self) -> None:
        freed = len(self._snd_buf) + self._ooo.clear()
        self._buf_seq += len(self._snd_buf)
        self._snd_buf = bytearray()
        if self._charged:
            self._layer.memory_used -= freed

    def _free(self, event: int) -> None:
        """Leave the layer's table for good. Unread data stays readable, off the budget."""
        self.state = CLOSED
        self._release_send_side()
        if self._charged:
            self._charged = False
            self._layer.memory_used -= len(self._rcv_buf)
        self._rtx_at = self._dack_at = self._ka_at = self._close_at = _INF
        self.deadline = self._heap_deadline = _INF  # its heap entries are stale now
        self._layer._forget(self)
        self._emit(event | EV_CLOSED | EV_READABLE)

    def _emit(self, event: int) -> None:
        if not self._events:
            self._layer._events.append(self)
        self._events |= event
