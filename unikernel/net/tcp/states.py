"""TCP's states and the one table of how a connection moves between them (RFC 9293 3.3.2).

A connection is always in one of the states below; `TRANSITIONS[state][event]` is the state
an event leads to, in the manner of h11's _state.py. Only connection.py changes a connection's
state, and only through this table: to see where a connection can go, read the table; to see
why it goes there (the side effects, such as entering TIME-WAIT), read connection.py.

Events are what happens to the connection, not the EV_* bits the application is told of:
the application opens, closes or aborts; the peer's SYN, FIN or reset arrives; our SYN or
FIN is acknowledged; a timer gives up. A combination missing from the table cannot happen:
looking it up raises KeyError, which makes a broken invariant loud instead of silent.

This module also holds the other names the application sees: the EV_* event bits and the
reasons in Connection.error.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.net.tcp.layer import TcpLayer

# States (RFC 9293 3.3.2). A Listener stands for LISTEN: a connection never is in it.
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
# States in which we may (re)send data or our FIN, as a bit mask over the states: a mask
# because the per-segment path tests it, and `1 << state & SENDING` is the cheapest test.
SENDING = 1 << ESTABLISHED | 1 << CLOSE_WAIT | 1 << FIN_WAIT_1 | 1 << CLOSING | 1 << LAST_ACK
# States in which the peer's data is still welcome (it has not sent its FIN).
RECEIVING = 1 << ESTABLISHED | 1 << FIN_WAIT_1 | 1 << FIN_WAIT_2

# Events that move a connection (the keys of each row of TRANSITIONS).
CONNECT = 0  # the application's active open: our SYN goes out
SYN_IN = 1  # the peer's SYN opens us: at a listener, or crossing ours (simultaneous open)
SYN_ACKED = 2  # the handshake completed: our SYN is acknowledged
CLOSE = 3  # the application shut down its side: our FIN is queued
FIN_IN = 4  # the peer's FIN arrived in order
FIN_ACKED = 5  # the peer acknowledged our FIN
DELETE = 6  # the connection ends: reset, abort, time-out, TIME-WAIT over (RFC 9293 3.10.8)
EVENT_NAMES = ("CONNECT", "SYN_IN", "SYN_ACKED", "CLOSE", "FIN_IN", "FIN_ACKED", "DELETE")

# state -> {event -> next state}. Self-loops are events that may come again, or that a
# hostile peer may send, in a state where they change nothing (RFC 9293 3.10.7.4).
TRANSITIONS: dict[int, dict[int, int]] = {
    # A connection starts CLOSED; a Listener's child opens from there on the peer's SYN.
    # Deleting twice is harmless (a timer and the layer may both end a connection).
    CLOSED: {CONNECT: SYN_SENT, SYN_IN: SYN_RECEIVED, DELETE: CLOSED},
    # The FIN of a close() during the handshake waits for it (RFC 9293 3.10.4).
    SYN_SENT: {SYN_IN: SYN_RECEIVED, SYN_ACKED: ESTABLISHED, CLOSE: SYN_SENT, DELETE: CLOSED},
    SYN_RECEIVED: {
        SYN_ACKED: ESTABLISHED,
        CLOSE: SYN_RECEIVED,
        FIN_IN: CLOSE_WAIT,
        DELETE: CLOSED,
    },
    ESTABLISHED: {CLOSE: FIN_WAIT_1, FIN_IN: CLOSE_WAIT, DELETE: CLOSED},
    # FIN_IN here is a simultaneous close: our FIN is not acknowledged yet.
    FIN_WAIT_1: {FIN_ACKED: FIN_WAIT_2, FIN_IN: CLOSING, DELETE: CLOSED},
    FIN_WAIT_2: {FIN_ACKED: FIN_WAIT_2, FIN_IN: TIME_WAIT, DELETE: CLOSED},
    CLOSE_WAIT: {CLOSE: LAST_ACK, FIN_IN: CLOSE_WAIT, DELETE: CLOSED},
    CLOSING: {FIN_ACKED: TIME_WAIT, FIN_IN: CLOSING, DELETE: CLOSED},
    LAST_ACK: {FIN_ACKED: CLOSED, FIN_IN: LAST_ACK, DELETE: CLOSED},
    TIME_WAIT: {FIN_ACKED: TIME_WAIT, FIN_IN: TIME_WAIT, DELETE: CLOSED},
}

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


class Subject:
    """What the application hears from: a Connection or a Listener, which gather EV_* bits
    until the layer's take_events() collects them, each subject once per batch."""

    __slots__ = ("_events", "_layer")

    _layer: TcpLayer
    _events: int

    def emit(self, event: int) -> None:
        """Report EV_* bits to the application, with the layer's next take_events()."""
        if not self._events:
            self._layer.notify(self)
        self._events |= event

    def take_event_bits(self) -> int:
        """The EV_* bits since the last call (the layer's take_events() collects them)."""
        events = self._events
        self._events = 0
        return events
