"""ring: io/ring.h's shared rings, sans-IO, over one granted 4 KiB page.

The page starts with four 32-bit indices, {req_prod, req_event, rsp_prod, rsp_event}, and 48
bytes of padding; slots follow from byte 64, as many as the largest power of two that fits
(`ring_size`). Requests and responses share the slots: a response goes where a request was.
The front end produces requests and consumes responses (`FrontRing`); the back end does the
opposite (`BackRing`, which the tests' fake back ends use).

Free-running indices: each counts up modulo 2**32 and `index & (size - 1)` picks the slot.

Memory ordering. The other end runs on another CPU, so every index is read and written as one
aligned 32-bit load or store, through a `cast("I")` view: a torn req_prod is an "impossible
number of requests" to netback, which then disables the vif. Slot bodies are written before
the producer index, and the producer index is read before the slots. What x86 may still
reorder is a store followed by a load; ring.h puts a full barrier there. Python has none, but
`full_barrier()` makes one: `push_requests` uses it between storing req_prod and loading
req_event, so the front end notifies only when the back end asked (ring.h's rule), and
`FrontRing.arm_response_event` leaves it to the caller, whose next step is a system call.

Nothing here makes a system call: the driver notifies the other end when a method says so.
"""

from __future__ import annotations

import _thread

PAGE_SIZE = 4096
HEADER_SIZE = 64  # the four indices and 48 bytes of padding
_MASK = 0xFFFFFFFF  # indices are u32 and wrap
_REQ_PROD, _REQ_EVENT, _RSP_PROD, _RSP_EVENT = range(4)  # 32-bit words of the header

TYPE_CHECKING = False
if TYPE_CHECKING:
    Buffer = bytearray | memoryview


_FENCE = _thread.allocate_lock()


def full_barrier() -> None:
    """A full memory barrier, which Python has no word for: acquiring and releasing an
    uncontended lock are each a locked read-modify-write in glibc (sem_trywait's compare-and-
    exchange, sem_post's atomic add behind CPython's lock), and on x86 a locked instruction
    orders every load and store around it. Well under a microsecond, against a system call's
    several, or a hypercall's many more under nested emulation. A blocking acquire: a try
    that finds the lock taken may return without any locked instruction."""
    _FENCE.acquire()
    _FENCE.release()


class RingError(Exception):
    """The other end broke the ring's protocol (an impossible index, a response to no
    request): nothing it writes can be trusted any more, and Linux's front ends then disable
    the device."""


def ring_size(slot_size: int) -> int:
    """How many slots of `slot_size` bytes a page holds: a power of two, as io/ring.h says."""
    room = (PAGE_SIZE - HEADER_SIZE) // slot_size if slot_size > 0 else 0
    if room < 1:
        raise ValueError(f"a ring slot of {slot_size} bytes does not fit a page")
    return 1 << (room.bit_length() - 1)


def notify_due(old: int, new: int, event: int) -> bool:
    """io/ring.h's rule: moving a producer index from `old` to `new` must notify the other end
    when it passes its `event` index, that is when event is in (old, new], modulo 2**32."""
    return (new - event) & _MASK < (new - old) & _MASK


class _Ring:
    __slots__ = ("_index", "_slots", "mask", "region", "size", "slot_size")

    def __init__(self, page: Buffer, slot_size: int) -> None:
        view = memoryview(page).cast("B")
        if view.readonly or view.nbytes < PAGE_SIZE:
            raise ValueError(f"a ring needs a writable page of {PAGE_SIZE} bytes")
        self.slot_size = slot_size
        self.size = ring_size(slot_size)
        self.mask = self.size - 1
        self._index = view[:16].cast("I")
        if self._index.itemsize != 4:
            raise RuntimeError("this platform's unsigned int is not 32 bits")
        # Every slot, side by side: for callers that read or write a run of slots at once.
        self.region = view[HEADER_SIZE : HEADER_SIZE + self.size * slot_size]
        self._slots = [
            view[HEADER_SIZE + i * slot_size : HEADER_SIZE + (i + 1) * slot_size]
            for i in range(self.size)
        ]

    def slot(self, index: int) -> memoryview:
        """The slot that ring index `index` (any u32) lands in."""
        return self._slots[index & self.mask]

    def close(self) -> None:
        """Release the views into the page, so that its mapping can be closed (an mmap
        refuses while views exist). The ring is unusable after."""
        for view in self._slots:
            view.release()
        self.region.release()
        self._index.release()


class FrontRing(_Ring):
    """The front end's side: requests out, responses in.

    Requests: `next_request()` hands out slots to fill, `push_requests()` publishes them all
    at once. Responses: `take_response()` until None. A caller that works on runs of slots
    instead loads rsp_prod with `unconsumed_responses()`, reads and writes `region` itself,
    and moves `rsp_cons` and `req_prod_pvt` on: rsp_cons never past the responses that call
    counted, req_prod_pvt never more than `size` past rsp_cons. Before sleeping on the event
    channel, `arm_response_event()`, a barrier (a system call), then `has_responses()`: if
    True, a response came in between and no event may come for it, so take it now.
    """

    __slots__ = ("_published", "_rsp_prod", "req_prod_pvt", "rsp_cons")

    def __init__(self, page: Buffer, slot_size: int, *, start: int = 0) -> None:
        """Initialise the shared page's header (a front end owns the ring). `start` is where
        the indices begin: 0 as in ring.h; tests start near 2**32 to see them wrap."""
        super().__init__(page, slot_size)
        start &= _MASK
        index = self._index
        index[_REQ_PROD] = start
        index[_RSP_PROD] = start
        index[_REQ_EVENT] = (start + 1) & _MASK
        index[_RSP_EVENT] = (start + 1) & _MASK
        self.req_prod_pvt = start  # the next request's index, not yet published
        self.rsp_cons = start  # the next response's index
        self._published = start  # req_prod as we last stored it (the other end never does)
        self._rsp_prod = start  # rsp_prod as we last loaded it

    def free_requests(self) -> int:
        """How many more requests fit before responses are taken."""
        return self.size - ((self.req_prod_pvt - self.rsp_cons) & _MASK)

    def in_flight(self) -> int:
        """Published requests whose responses are not taken yet."""
        return (self._published - self.rsp_cons) & _MASK

    def next_request(self) -> memoryview:
        """The slot for the next request, which `push_requests()` publishes. The slot may
        hold the last response taken: read that first."""
        if self.free_requests() <= 0:
            raise IndexError("the ring is full: take responses first")
        index = self.req_prod_pvt
        self.req_prod_pvt = (index + 1) & _MASK
        return self._slots[index & self.mask]

    def push_requests(self) -> bool:
        """Publish the requests filled since the last push; whether the back end asked to be
        notified (ring.h's rule against req_event, loaded after a full barrier: else x86 may
        load it before req_prod is stored, and a back end going to sleep in between would
        never hear of these requests)."""
        old = self._published
        new = self.req_prod_pvt
        if old == new:
            return False
        self._index[_REQ_PROD] = new  # after the slots: Python keeps the stores in order
        self._published = new
        full_barrier()
        return notify_due(old, new, self._index[_REQ_EVENT])

    def unpublished(self) -> int:
        """Requests filled but not pushed yet."""
        return (self.req_prod_pvt - self._published) & _MASK

    def unconsumed_responses(self) -> int:
        """Load rsp_prod: how many responses wait. Raises RingError if the back end claims
        more responses than there are requests in flight."""
        prod = self._index[_RSP_PROD]
        waiting = (prod - self.rsp_cons) & _MASK
        if waiting > (self._published - self.rsp_cons) & _MASK:  # in_flight(), inlined
            raise RingError(
                f"rsp_prod {prod} is {waiting} past rsp_cons {self.rsp_cons}, "
                f"with only {self.in_flight()} requests in flight"
            )
        self._rsp_prod = prod
        return waiting

    def take_response(self) -> memoryview | None:
        """The next response's slot, now consumed, or None when none waits. The view stays
        valid until the next request is written: the back end writes there no more."""
        cons = self.rsp_cons
        if cons == self._rsp_prod and not self.unconsumed_responses():
            return None
        self.rsp_cons = (cons + 1) & _MASK
        return self._slots[cons & self.mask]

    def arm_response_event(self) -> None:
        """Ask for an event at the next response (rsp_event = rsp_cons + 1). A full barrier
        must follow before `has_responses()`, or that load may pass this store and a response
        arriving in between is never signalled."""
        self._index[_RSP_EVENT] = (self.rsp_cons + 1) & _MASK

    def has_responses(self) -> bool:
        """Whether responses wait (a fresh load of rsp_prod)."""
        return self.unconsumed_responses() > 0


class BackRing(_Ring):
    """The back end's side: requests in, responses out. It attaches to a page whose front end
    has initialised it, starting where the indices stand."""

    __slots__ = ("_published", "req_cons", "rsp_prod_pvt")

    def __init__(self, page: Buffer, slot_size: int) -> None:
        super().__init__(page, slot_size)
        start = self._index[_RSP_PROD]
        self.req_cons = start
        self.rsp_prod_pvt = start
        self._published = start

    def unconsumed_requests(self) -> int:
        """Load req_prod: how many requests wait. Raises RingError, as netback does, when the
        front end claims more requests than the ring holds."""
        prod = self._index[_REQ_PROD]
        if (prod - self.rsp_prod_pvt) & _MASK > self.size:
            raise RingError(f"impossible number of requests: req_prod {prod}")
        return (prod - self.req_cons) & _MASK

    def take_request(self) -> memoryview | None:
        """The next request's slot, now consumed, or None when none waits."""
        if not self.unconsumed_requests():
            return None
        cons = self.req_cons
        self.req_cons = (cons + 1) & _MASK
        return self._slots[cons & self.mask]

    def next_response(self) -> memoryview:
        """The slot for the next response, which `push_responses()` publishes."""
        if (self.req_cons - self.rsp_prod_pvt) & _MASK == 0:
            raise IndexError("every request taken has its response")
        index = self.rsp_prod_pvt
        self.rsp_prod_pvt = (index + 1) & _MASK
        return self._slots[index & self.mask]

    def push_responses(self) -> bool:
        """Publish the responses written; whether the front end asked to be notified."""
        old = self._published
        new = self.rsp_prod_pvt
        if old == new:
            return False
        self._index[_RSP_PROD] = new
        self._published = new
        return notify_due(old, new, self._index[_RSP_EVENT])

    def arm_request_event(self) -> None:
        """Ask for an event at the next request (then a barrier, then `unconsumed_requests`)."""
        self._index[_REQ_EVENT] = (self.req_cons + 1) & _MASK
