"""The TCP layer: every connection of one stack, its listeners, its timers and its memory.

See the package docstring (unikernel/net/tcp/__init__.py) for how the IP layer drives it, and
Listener for how a listening port holds out against a SYN flood (syn_cookies.py).
"""

from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush
from struct import Struct

from unikernel.net.tcp.connection import Connection, TcpConfig
from unikernel.net.tcp.receiver import wscale_for
from unikernel.net.tcp.segment import (
    ACK,
    RST,
    SYN,
    Segment,
    build_segment,
    parse_segment,
    pseudo_sum,
    residue,
    syn_options,
)
from unikernel.net.tcp.sender import DEFAULT_MSS
from unikernel.net.tcp.states import CLOSED, EV_ACCEPTABLE, EV_WRITABLE, TIME_WAIT, Subject
from unikernel.net.tcp.syn_cookies import (
    LIFETIME,
    NO_OPTIONS,
    OPTION_MASK,
    SynCookies,
    cookie_timestamp,
    decode_options,
    encode_options,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from unikernel.net.tcp.segment import Buffer

    Key = tuple[bytes, int, bytes, int]  # remote ip, remote port, local ip, local port
    Datagram = tuple[bytes, bytes, bytes | bytearray]  # destination ip, source ip, segment

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_PORTS = Struct("!HH")  # a segment's source and destination ports
_INF = float("inf")
_EPHEMERAL_FIRST = 49152  # RFC 6335 6: the dynamic port range, 49152 to 65535
_EPHEMERAL_COUNT = 16384
# A SYN queue whose oldest child has waited this long for its ACK, and is full still, is taken
# for flooded: most real handshakes are over by then (it is Linux's minimum RTO).
_YOUNG = 0.2
# A half-open child whose SYN-ACK went out this many times more without an answer (at 1 s and
# 3 s, with the initial RTO of 1 s) is past any real round trip: a SYN may take its place.
_EVICT_AFTER = 2


class Listener(Subject):
    """A port in LISTEN (RFC 9293 3.10.1 passive OPEN), with a bounded backlog.

    Connections in SYN-RECEIVED (the SYN queue) plus those established and not accepted yet
    (the accept queue) never exceed `backlog`, but for connections made from SYN cookies, which
    never sat in the SYN queue and need room in the accept queue only (as in Linux). A SYN
    that finds no room is, in this order:

    - dropped, if the accept queue alone is full: the application is behind, and neither state
      nor a cookie would help; the peer's SYN retransmission tries again later (as in Linux);
    - given the place of the oldest half-open child, if that one's SYN-ACK has gone out
      1 + _EVICT_AFTER times unanswered (Linux prunes such old requests too): evicted silently,
      as its peer is most likely spoofed, and a real one learns from our reset to its ACK;
    - answered with a SYN cookie (syn_cookies.py), if the queue looks flooded: its oldest
      child has waited _YOUNG seconds or more, or cookies went out in the last LIFETIME;
    - dropped otherwise: the queue is full of handshakes just begun, a burst of real clients
      more likely than a flood, and their retransmitted SYNs find room a second later. This is
      the one place where we wait before using cookies, which Linux sends at once: mistaking
      a burst for a flood would only cost the burst its own options.

    Why not evict on every SYN, or sooner: a flood would push real clients' children out
    before their ACKs came back, and would cost state for each spoofed SYN, where cookies cost
    none. But stale children still leave as new SYNs come (and their SYN-ACKs to spoofed
    addresses stop), so that the queue holds full-option handshakes again once a flood is
    over. A layer at its connection or memory limit answers any SYN it cannot keep with a
    cookie.

    An ACK for no connection on the port, while cookies of ours may be out, is checked as one:
    if it holds a valid cookie, the connection is made, established, and queued for accept();
    if not, it is answered with a reset, as any ACK to a port in LISTEN (RFC 9293 3.10.7.2)."""

    __slots__ = (
        "_cookies_until",
        "_pending",
        "_ready",
        "backlog",
        "local_ip",
        "port",
        "user",
    )

    def __init__(self, layer: TcpLayer, port: int, backlog: int, local_ip: bytes | None) -> None:
        self._layer = layer
        self.port = port
        self.backlog = max(1, backlog)
        self.local_ip = local_ip  # None: every address of the stack
        self.user: object = None
        self._events = 0
        self._pending: dict[Connection, float] = {}  # SYN-RECEIVED children -> their SYN's time
        self._ready: deque[Connection] = deque()  # established, waiting for accept()
        self._cookies_until = -_INF  # a cookie of ours may come back until then

    def __repr__(self) -> str:
        return f"<Listener :{self.port} {len(self._ready)} ready, {len(self._pending)} pending>"

    @property
    def queued(self) -> int:
        """Connections counted against the backlog."""
        return len(self._pending) + len(self._ready)

    @property
    def ready(self) -> int:
        """Established connections waiting for accept()."""
        return len(self._ready)

    @property
    def listening(self) -> bool:
        return self._layer._listeners.get(self.port) is self

    def accept(self) -> Connection | None:
        """The oldest established connection not accepted yet, if any."""
        return self._ready.popleft() if self._ready else None

    def close(self, now: float) -> None:
        """Stop listening; reset the connections nobody accepted."""
        layer = self._layer
        if layer._listeners.get(self.port) is self:
            del layer._listeners[self.port]
        for conn in [*self._pending, *self._ready]:
            conn.abort(now)
        self._ready.clear()

    def established(self, conn: Connection) -> None:
        """Our child `conn` completed its handshake: on to the accept queue."""
        self._pending.pop(conn, None)
        if self.listening:
            self._ready.append(conn)
            self.emit(EV_ACCEPTABLE)


class TcpLayer:
    """Every TCP connection of one stack.

    `isn` gives initial sequence numbers (and the other values that must not be guessed:
    timestamp offsets, the first ephemeral port); pass unikernel.core.entropy.random_u32.
    """

    def __init__(
        self,
        isn: Callable[[], int],
        config: TcpConfig | None = None,
        local_ip: bytes = bytes(4),
    ) -> None:
        self.config = config if config is not None else TcpConfig()
        self.local_ip = local_ip  # the source address of connect() by default
        self._isn = isn
        self._conns: dict[Key, Connection] = {}
        self._listeners: dict[int, Listener] = {}
        self.outbox: list[Datagram] = []  # segments to send: connections append here
        self._events: list[Subject] = []  # Connections and Listeners, each once
        self._batch: dict[Connection, None] | None = None  # answers waiting (begin_batch)
        self._heap: list[tuple[float, int, Connection]] = []
        self._heap_seq = 0
        self._time_waits: deque[Connection] = deque()
        self._memory_waiters: dict[Connection, None] = {}
        self._next_port = _EPHEMERAL_FIRST + isn() % _EPHEMERAL_COUNT
        self._syn_cookies: SynCookies | None = None  # made at the first need (its secret)
        self.memory_used = 0  # bytes in every connection's buffers
        self.stats = {
            "segments_in": 0,
            "dropped_malformed": 0,
            "dropped_memory": 0,
            "rst_sent": 0,
            "syn_dropped": 0,
            "syn_recv_evicted": 0,  # stale half-open children a SYN took the place of
            "syn_cookies_sent": 0,
            "syn_cookies_validated": 0,  # connections made from them
            "syn_cookies_rejected": 0,  # ACKs whose cookie was forged or stale: reset
            "listen_overflows": 0,  # valid cookies with no room in the accept queue: dropped
            "retransmits": 0,
            "loss_probes": 0,
            "timeouts": 0,
            "undos": 0,  # recoveries found needless and undone (RFC 3708, RFC 3522)
        }

    def __len__(self) -> int:
        """Connections in the table, TIME-WAIT included."""
        return len(self._conns)

    @property
    def connections(self) -> list[Connection]:
        return list(self._conns.values())

    # The IP layer's side.

    def input(
        self, src_ip: Buffer, dst_ip: Buffer, segment: Buffer, now: float, vouched: bool = False
    ) -> None:
        """A TCP segment (header and payload) arrived in an IPv4 datagram from `src_ip` to
        `dst_ip`, one of our unicast addresses."""
        self.stats["segments_in"] += 1
        seg = parse_segment(src_ip, dst_ip, segment, True)  # its checksum is checked below
        if seg is None:
            self.stats["dropped_malformed"] += 1
            return
        src = src_ip if type(src_ip) is bytes else bytes(src_ip)
        dst = dst_ip if type(dst_ip) is bytes else bytes(dst_ip)
        conn = self._conns.get((src, seg.src_port, dst, seg.dst_port))
        # Checked once the connection is known, which has its pseudo-header's sum at hand.
        if not vouched and residue(segment, pseudo_sum(src, dst) if conn is None else conn.pseudo):
            self.stats["dropped_malformed"] += 1
            return
        if conn is not None:
            if conn.state != TIME_WAIT or not self._reopens(conn, seg):
                conn.input(seg, now)
                return
            conn.drop()  # a new incarnation replaces the TIME-WAIT one
        listener = self._listeners.get(seg.dst_port)
        if listener is not None and (listener.local_ip is None or listener.local_ip == dst):
            self._listen_input(listener, src, dst, seg, now)
        else:
            self.send_rst(dst, src, seg, now)

    def input_run(
        self, src_ip: bytes, dst_ip: bytes, segments: Sequence[Buffer], vouched: int, now: float
    ) -> None:
        """Segments from `src_ip` to `dst_ip` read together, in order of arrival, as input()
        takes each (bit i of `vouched` its `vouched` for segments[i]); but a connection's
        in-order data is taken in runs (Connection.input_run), in fewer steps a segment."""
        conns, stats = self._conns, self.stats
        index, count = 0, len(segments)
        while index < count:
            data = segments[index]
            if len(data) >= 4:
                src_port, dst_port = _PORTS.unpack_from(data)
                conn = conns.get((src_ip, src_port, dst_ip, dst_port))
                if conn is not None:
                    taken = conn.input_run(segments, index, vouched, now)
                    if taken:
                        stats["segments_in"] += taken
                        index += taken
                        continue
            self.input(src_ip, dst_ip, data, now, vouched >> index & 1 == 1)
            index += 1

    def begin_batch(self) -> None:
        """Segments that arrive together (the frames of one read from the link) are answered
        together at end_batch(): one ACK for the in-order data of a connection rather than
        one every second segment, and what their ACKs let it send in as few segments as it
        can. That is what Linux gets from a link that coalesces them (GRO), and it spares
        building and writing most ACKs. Anything odd (data out of order, a FIN) is still
        answered at once."""
        if self._batch is None:
            self._batch = {}

    @property
    def batching(self) -> bool:
        """Between begin_batch() and end_batch()."""
        return self._batch is not None

    def defer_answer(self, conn: Connection) -> bool:
        """Whether `conn`'s answer waits for end_batch() (False: no batch, answer now)."""
        batch = self._batch
        if batch is None:
            return False
        batch[conn] = None
        return True

    def end_batch(self, now: float) -> None:
        """Answer, in order of arrival, every connection that received in the batch."""
        batch = self._batch
        self._batch = None
        if batch:
            for conn in batch:
                if conn.state != CLOSED:
                    conn.answer(now)

    def tick(self, now: float) -> None:
        """Fire every timer due by `now`."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, conn = heappop(heap)
            if deadline != conn.heap_deadline:
                continue  # superseded by an earlier entry
            conn.heap_deadline = _INF
            if conn.state != CLOSED:
                conn.on_timer(now)

    def next_deadline(self) -> float | None:
        """When tick() next has work, or None if no timer is armed."""
        heap = self._heap
        while heap and heap[0][0] != heap[0][2].heap_deadline:
            heappop(heap)
        return heap[0][0] if heap else None

    def take_output(self) -> list[Datagram]:
        """The segments to send since the last call, as (destination, source, segment)."""
        out = self.outbox
        self.outbox = []
        return out

    def take_events(self) -> list[tuple[Connection | Listener, int]]:
        """What happened since the last call: each subject once, with its EV_* bits."""
        if self._memory_waiters and self.memory_used <= self.config.memory_limit * 3 // 4:
            waiters = self._memory_waiters
            self._memory_waiters = {}
            for conn in waiters:
                conn.emit(EV_WRITABLE)
        subjects = self._events
        if not subjects:
            return []
        self._events = []
        events: list[tuple[Connection | Listener, int]] = []
        for subject in subjects:
            assert isinstance(subject, (Connection, Listener))  # the only kinds of Subject
            events.append((subject, subject.take_event_bits()))
        return events

    # The application's side.

    def connect(
        self,
        remote_ip: bytes,
        remote_port: int,
        now: float,
        *,
        local_ip: bytes | None = None,
        local_port: int = 0,
    ) -> Connection:
        """Active open (RFC 9293 3.10.1): send a SYN; EV_CONNECTED follows, or EV_RESET
        (refused) or EV_TIMED_OUT."""
        local = self.local_ip if local_ip is None else local_ip
        if not self._make_room():
            raise OSError(f"too many connections ({len(self._conns)})")
        if local_port == 0:
            local_port = self._ephemeral_port(remote_ip, remote_port, local)
        elif (remote_ip, remote_port, local, local_port) in self._conns:
            raise OSError(f"port {local_port} already connected to that peer")
        conn = Connection(self, local, local_port, remote_ip, remote_port, self._isn(), self._isn())
        self._conns[conn.key] = conn
        conn.open_active(now)
        return conn

    def listen(self, port: int, backlog: int = 128, local_ip: bytes | None = None) -> Listener:
        """Passive open on `port`; EV_ACCEPTABLE on the Listener when accept() has one."""
        if port in self._listeners:
            raise OSError(f"port {port} is already listening")
        listener = Listener(self, port, backlog, local_ip)
        self._listeners[port] = listener
        return listener

    def listener(self, port: int) -> Listener | None:
        return self._listeners.get(port)

    # Inside.

    def _listen_input(
        self, listener: Listener, src: bytes, dst: bytes, seg: Segment, now: float
    ) -> None:
        """RFC 9293 3.10.7.2, a segment for a port in LISTEN."""
        flags = seg.flags
        if flags & RST:
            return
        if flags & ACK:
            if not flags & SYN and now < listener._cookies_until:
                if self._cookie_ack(listener, src, dst, seg, now):
                    return
                self.stats["syn_cookies_rejected"] += 1
            self.send_rst(dst, src, seg, now)
            return
        if not flags & SYN:
            return
        # What a SYN without room meets is Listener's docstring.
        if listener.ready >= listener.backlog:
            self.stats["syn_dropped"] += 1
            return
        if listener.queued >= listener.backlog:
            # The oldest child (there is one, the accept queue having room).
            oldest, since = next(iter(listener._pending.items()))
            if oldest.retransmits >= _EVICT_AFTER:
                oldest.drop()
                self.stats["syn_recv_evicted"] += 1
            elif now - since >= _YOUNG or now < listener._cookies_until:
                self._send_cookie(listener, src, dst, seg, now)
                return
            else:
                self.stats["syn_dropped"] += 1
                return
        if self.memory_used >= self.config.memory_limit or not self._make_room():
            self._send_cookie(listener, src, dst, seg, now)
            return
        conn = Connection(
            self, dst, seg.dst_port, src, seg.src_port, self._isn(), self._isn(), listener
        )
        listener._pending[conn] = now
        self._conns[conn.key] = conn
        conn.open_passive(seg, now)

    @property
    def _cookies(self) -> SynCookies:
        cookies = self._syn_cookies
        if cookies is None:
            secret = b"".join((self._isn() & 0xFFFFFFFF).to_bytes(4, "big") for _ in range(8))
            cookies = self._syn_cookies = SynCookies(secret)
        return cookies

    def _send_cookie(
        self, listener: Listener, src: bytes, dst: bytes, seg: Segment, now: float
    ) -> None:
        """Answer a SYN with a SYN-ACK whose ISN is a cookie, keeping nothing (RFC 4987 3.6).
        Window scaling and SACK only with timestamps, whose echo brings them back."""
        config = self.config
        cookies = self._cookies
        timestamps = config.timestamps and seg.has_ts
        wscale = seg.wscale if timestamps and config.window_scaling else -1
        sack = timestamps and config.sack and seg.sack_ok
        options = encode_options(wscale, sack) if timestamps else NO_OPTIONS
        local_port, remote_port = seg.dst_port, seg.src_port
        mss = seg.mss if seg.mss > 0 else DEFAULT_MSS
        iss = cookies.make(src, remote_port, dst, local_port, seg.seq, mss, options, now)
        ts = None
        if timestamps:
            offset = cookies.ts_offset(src, remote_port, dst, local_port)
            clock = (int(now * 1000) + offset) & _MASK  # as Sender.ts_now() will run on
            ts = (cookie_timestamp(clock, options), seg.tsval)
        our_wscale = wscale_for(config.recv_buffer) if wscale >= 0 else -1
        segment = build_segment(
            dst,
            src,
            local_port,
            remote_port,
            iss,
            (seg.seq + 1) & _MASK,
            SYN | ACK,
            min(config.recv_buffer, 0xFFFF),
            syn_options(config.mtu - 40, our_wscale, sack, ts),
        )
        self.outbox.append((src, dst, segment))
        listener._cookies_until = now + LIFETIME
        self.stats["syn_cookies_sent"] += 1

    def _cookie_ack(
        self, listener: Listener, src: bytes, dst: bytes, seg: Segment, now: float
    ) -> bool:
        """An ACK for no connection, on a port whose cookies may be out: make the connection
        its cookie stands for, established. False if it holds no valid cookie of ours."""
        cookies = self._cookies
        local_port, remote_port = seg.dst_port, seg.src_port
        options = seg.tsecr & OPTION_MASK if seg.has_ts else NO_OPTIONS
        peer_isn = (seg.seq - 1) & _MASK
        iss = (seg.ack - 1) & _MASK
        mss = cookies.check(src, remote_port, dst, local_port, peer_isn, iss, options, now)
        if mss < 0:
            return False
        if listener.ready >= listener.backlog or not self._make_room():
            # As Linux: dropped; the peer's next segment brings the cookie back.
            self.stats["listen_overflows"] += 1
            return True
        # The SYN that the cookie stands for, as far as the connection needs it.
        timestamps, wscale, sack = decode_options(options)
        syn = Segment(remote_port, local_port, peer_isn, 0, SYN, 0, b"")
        syn.mss = mss
        syn.wscale = wscale
        syn.sack_ok = sack
        syn.has_ts = timestamps
        syn.tsval = seg.tsval
        offset = cookies.ts_offset(src, remote_port, dst, local_port)
        conn = Connection(self, dst, local_port, src, remote_port, iss, offset, listener)
        self._conns[conn.key] = conn
        conn.open_from_cookie(syn, now)
        self.stats["syn_cookies_validated"] += 1
        conn.input(seg, now)  # SYN-RECEIVED to ESTABLISHED, into the accept queue
        return True

    def _reopens(self, conn: Connection, seg: Segment) -> bool:
        """Whether a SYN may end TIME-WAIT early for a new connection: its timestamp, or else
        its sequence number, is past the old connection's (RFC 9293 3.10.7.4; RFC 6191)."""
        if seg.flags & (SYN | ACK | RST) != SYN:
            return False
        return conn.reopened_by(seg)

    def send_rst(self, local_ip: bytes, remote_ip: bytes, seg: Segment, now: float) -> None:
        """The reset for a segment that belongs to no connection (RFC 9293 3.10.7.1): never
        in answer to a reset."""
        flags = seg.flags
        if flags & RST:
            return
        if flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seq, ack, flags = 0, (seg.seq + seg.seg_len) & _MASK, RST | ACK
        segment = build_segment(local_ip, remote_ip, seg.dst_port, seg.src_port, seq, ack, flags, 0)
        self.outbox.append((remote_ip, local_ip, segment))
        self.stats["rst_sent"] += 1

    def notify(self, subject: Subject) -> None:
        """`subject` has EV_* bits for the next take_events() (called once per batch)."""
        self._events.append(subject)

    def schedule(self, conn: Connection, deadline: float) -> None:
        """Call conn.on_timer() at `deadline`, earlier than any entry it has already."""
        conn.heap_deadline = deadline
        self._heap_seq += 1
        heappush(self._heap, (deadline, self._heap_seq, conn))
        self._sweep()

    def _sweep(self) -> None:
        """Superseded entries pile up when deadlines move earlier or connections go: drop
        them once they could outnumber the live ones."""
        heap = self._heap
        if len(heap) > 2 * len(self._conns) + 64:
            heap[:] = [entry for entry in heap if entry[0] == entry[2].heap_deadline]
            heapify(heap)

    def forget(self, conn: Connection) -> None:
        """`conn` is CLOSED: out of the table, and its heap entries are stale now."""
        conn.heap_deadline = _INF
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
            self._sweep()
        listener = conn.listener
        if listener is not None:
            listener._pending.pop(conn, None)
        self._memory_waiters.pop(conn, None)

    def entered_time_wait(self, conn: Connection) -> None:
        """Bound TIME-WAIT: past max_time_wait, the oldest go early (as Linux's
        tcp_max_tw_buckets does); the ISN and timestamp checks protect their successors."""
        waits = self._time_waits
        waits.append(conn)
        while len(waits) > self.config.max_time_wait:
            old = waits.popleft()
            if old.state == TIME_WAIT:
                old.drop()

    def _make_room(self) -> bool:
        """Whether one more connection fits, recycling a TIME-WAIT one if need be."""
        if len(self._conns) < self.config.max_connections:
            return True
        waits = self._time_waits
        while waits:
            old = waits.popleft()
            if old.state == TIME_WAIT:
                old.drop()
                return True
        return False

    def wait_for_memory(self, conn: Connection) -> None:
        """`conn` could not queue data because all connections together hold the limit."""
        self._memory_waiters[conn] = None

    def _ephemeral_port(self, remote_ip: bytes, remote_port: int, local_ip: bytes) -> int:
        for _ in range(_EPHEMERAL_COUNT):
            port = self._next_port
            self._next_port = _EPHEMERAL_FIRST + (port - _EPHEMERAL_FIRST + 1) % _EPHEMERAL_COUNT
            if port not in self._listeners and (
                (remote_ip, remote_port, local_ip, port) not in self._conns
            ):
                return port
        raise OSError("no ephemeral port is free")
