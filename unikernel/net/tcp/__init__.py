"""TCP (RFC 9293), sans-IO: the engine that stack.py feeds and tcp_sockets.py wraps.

Interface with the IP layer
---------------------------
    tcp = TcpLayer(isn=random_u32, config=TcpConfig(mtu=1500), local_ip=our_address)

- Input: for every IPv4 datagram with protocol 6 addressed to one of our unicast addresses
  (never broadcast or multicast: RFC 1122 4.2.3.10), once reassembled:

      tcp.input(source_ip, destination_ip, segment, now)

  `source_ip` and `destination_ip` are 4-byte bytes, `segment` the IPv4 payload (TCP header
  and data; a memoryview into the frame is fine, the engine copies what it keeps) and `now`
  the monotonic time in seconds. The engine verifies the checksum with the IPv4 pseudo-header
  (segment.residue()); a segment that is malformed or fails it is dropped and counted in
  `tcp.stats`.
- Output: after any call into the engine (input, tick, or an application call on a
  Connection), send

      for destination_ip, source_ip, segment in tcp.take_output(): ...

  each as an IPv4 datagram with protocol 6. Segments come with their checksum filled in and
  are at most MSS + 60 bytes: the IP layer never needs to fragment them (we offer and use an
  MSS of config.mtu - 40).
- Time: call `tcp.tick(now)` once `now >= tcp.next_deadline()` (None: no timer armed). The
  engine never sleeps, never reads a clock, and starts no thread.
- Events: `tcp.take_events()` lists (Connection or Listener, EV_* bits) since the last call.
- Entropy: `isn` is called for each initial sequence number, timestamp offset and the first
  ephemeral port: unikernel.core.entropy.random_u32 in the image, a seeded generator in tests.

These fit stack.py's register_protocol(6, receive, tick=..., next_deadline=...) as they are;
tcp_sockets.TcpSockets adds the flushing of output and events after each call (its docstring
shows the wiring).

The application side: TcpLayer.connect() and TcpLayer.listen() give a Connection (send, recv,
shutdown, close, abort, keepalive) and a Listener (accept, close). tcp_sockets.py wraps them in
blocking calls for cooperative threads.

Modules: segment (wire format, checksum), states (the states and their transition table),
connection (one connection: runs the state machine, coordinates the three pieces that follow),
sender (send buffer, segmentation, retransmission, recovery), receiver (received data, the
window we offer, ACK decisions), timers (a connection's timers and their deadline), layer
(table, listeners, resets, timer heap, memory), congestion (NewReno), rto (RFC 6298), buffers
(reorder queue, SACK scoreboard).
"""

from unikernel.net.tcp.connection import Connection, TcpConfig
from unikernel.net.tcp.layer import Listener, TcpLayer
from unikernel.net.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Segment,
    build_segment,
    checksum,
    parse_segment,
)
from unikernel.net.tcp.states import (
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    EV_ACCEPTABLE,
    EV_CLOSED,
    EV_CONNECTED,
    EV_PEER_CLOSED,
    EV_READABLE,
    EV_RESET,
    EV_TIMED_OUT,
    EV_WRITABLE,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    REFUSED,
    RESET,
    STATE_NAMES,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    TIMED_OUT,
)

__all__ = [
    "ACK",
    "CLOSED",
    "CLOSE_WAIT",
    "CLOSING",
    "ESTABLISHED",
    "EV_ACCEPTABLE",
    "EV_CLOSED",
    "EV_CONNECTED",
    "EV_PEER_CLOSED",
    "EV_READABLE",
    "EV_RESET",
    "EV_TIMED_OUT",
    "EV_WRITABLE",
    "FIN",
    "FIN_WAIT_1",
    "FIN_WAIT_2",
    "LAST_ACK",
    "LISTEN",
    "PSH",
    "REFUSED",
    "RESET",
    "RST",
    "STATE_NAMES",
    "SYN",
    "SYN_RECEIVED",
    "SYN_SENT",
    "TIMED_OUT",
    "TIME_WAIT",
    "Connection",
    "Listener",
    "Segment",
    "TcpConfig",
    "TcpLayer",
    "build_segment",
    "checksum",
    "parse_segment",
]
