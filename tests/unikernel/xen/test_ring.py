"""io/ring.h's rings: the page layout, the notification rule, wraparound at 2**32, and a front
and back end passing requests and responses through one page in arbitrary interleavings."""

from __future__ import annotations

import mmap
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unikernel.drivers.xen.ring import (
    BackRing,
    FrontRing,
    RingError,
    notify_due,
    ring_size,
)

U32 = 2**32
SLOT = 8  # a 256-slot ring, as netif's rx
HEADER = struct.Struct("<4I")  # req_prod, req_event, rsp_prod, rsp_event


def header(page: bytearray) -> tuple[int, ...]:
    return HEADER.unpack_from(page)


def test_ring_sizes_are_powers_of_two_that_fit_the_page() -> None:
    assert ring_size(12) == 256  # netif tx: 336 fit
    assert ring_size(8) == 256  # netif rx: 504 fit
    assert ring_size(112) == 32  # blkif: 36 fit
    assert ring_size(4032) == 1
    with pytest.raises(ValueError, match="does not fit"):
        ring_size(4033)


def test_the_front_initialises_the_header_and_places_slots_from_byte_64() -> None:
    page = bytearray(b"\xff" * 4096)
    ring = FrontRing(page, 12)
    assert header(page) == (0, 1, 0, 1)
    ring.next_request()[:] = b"A" * 12
    ring.next_request()[:] = b"B" * 12
    assert page[64:88] == b"A" * 12 + b"B" * 12
    assert ring.slot(256 + 1).tobytes() == b"B" * 12  # indices wrap onto slots
    assert ring.region.nbytes == 256 * 12 and ring.region[:24] == page[64:88]  # every slot
    assert header(page)[0] == 0, "nothing is published before push_requests()"
    ring.push_requests()
    assert header(page)[0] == 2


def test_the_indices_are_one_32_bit_view() -> None:
    # A torn req_prod disables a vif: the stores must be whole words, never bytes.
    ring = FrontRing(bytearray(4096), 8)
    assert ring._index.format == "I" and ring._index.itemsize == 4


def test_a_page_too_small_or_read_only_is_refused() -> None:
    with pytest.raises(ValueError, match="writable page"):
        FrontRing(bytearray(4095), 8)
    with pytest.raises(ValueError, match="writable page"):
        FrontRing(bytes(4096), 8)  # type: ignore[arg-type]


@given(st.integers(0, U32 - 1), st.integers(0, 300), st.integers(0, 600))
def test_the_notify_rule_fires_when_the_event_index_is_passed(
    old: int, moved: int, event_ahead: int
) -> None:
    new = (old + moved) % U32
    event = (old + event_ahead) % U32
    assert notify_due(old, new, event) == (1 <= event_ahead <= moved)


def test_a_full_ring_refuses_more_requests() -> None:
    ring = FrontRing(bytearray(4096), 112)
    for _ in range(32):
        ring.next_request()
    assert ring.free_requests() == 0
    with pytest.raises(IndexError, match="full"):
        ring.next_request()


def test_push_notifies_only_when_the_back_end_asked() -> None:
    page = bytearray(4096)
    front = FrontRing(page, SLOT, start=U32 - 2)
    back = BackRing(page, SLOT)
    front.next_request()
    assert front.push_requests() is True  # req_event starts at start + 1
    assert front.push_requests() is False  # nothing new
    front.next_request()
    assert front.push_requests() is False  # the back end is busy: it did not re-arm
    assert back.unconsumed_requests() == 2
    while back.take_request() is not None:
        pass
    back.arm_request_event()  # the back end goes to sleep, across 2**32
    front.next_request()
    assert front.push_requests() is True
    assert header(page)[0] == 1  # 2**32 - 2 + 3


def test_the_final_check_sees_a_response_that_came_after_the_last_event() -> None:
    page = bytearray(4096)
    front = FrontRing(page, SLOT, start=U32 - 1)
    back = BackRing(page, SLOT)
    for _ in range(3):
        front.next_request()
    front.push_requests()
    for _ in range(3):
        back.take_request()
    back.next_response()
    assert back.push_responses() is True  # rsp_event starts armed
    assert front.take_response() is not None
    back.next_response()
    assert back.push_responses() is False  # the front did not re-arm: no event
    front.arm_response_event()
    assert header(page)[3] == (U32 - 1 + 1 + 1) % U32  # rsp_cons + 1
    assert front.has_responses(), "without an event, the re-check must find the response"
    assert front.take_response() is not None
    front.arm_response_event()
    assert not front.has_responses()
    back.next_response()
    assert back.push_responses() is True  # armed: the next response notifies


def test_a_response_producer_running_ahead_is_refused() -> None:
    page = bytearray(4096)
    front = FrontRing(page, SLOT, start=U32 - 3)
    for _ in range(2):
        front.next_request()
    front.push_requests()
    struct.pack_into("<I", page, 8, (U32 - 3 + 3) % U32)  # 3 responses to 2 requests
    with pytest.raises(RingError, match="in flight"):
        front.take_response()
    struct.pack_into("<I", page, 8, (U32 - 3 - 1) % U32)  # behind rsp_cons: 2**32 - 1 ahead
    with pytest.raises(RingError):
        front.has_responses()


def test_a_request_producer_running_ahead_is_refused_by_the_back_end() -> None:
    page = bytearray(4096)
    FrontRing(page, SLOT)
    back = BackRing(page, SLOT)
    struct.pack_into("<I", page, 0, 257)
    with pytest.raises(RingError, match="impossible number of requests"):
        back.take_request()


@settings(max_examples=200)
@given(
    start=st.sampled_from([0, U32 - 5, U32 - 256, U32 - 300, 12345]),
    steps=st.lists(st.tuples(st.sampled_from("PpTRrCa"), st.integers(1, 40)), max_size=80),
)
def test_requests_and_responses_pass_exactly_once_in_order(
    start: int, steps: list[tuple[str, int]]
) -> None:
    """P: the front fills requests, p: pushes, T: the back end takes, R: it responds, r: it
    pushes, C: the front consumes, a: the front arms and re-checks."""
    page = bytearray(4096)
    front = FrontRing(page, SLOT, start=start)
    back = BackRing(page, SLOT)
    made = taken = answered = consumed = 0
    published = back_published = 0
    for action, count in steps:
        if action == "P":
            n = min(count, front.free_requests())
            for _ in range(n):
                struct.pack_into("<Q", front.next_request(), 0, made)
                made += 1
            if n < count:
                assert front.free_requests() == 0
                with pytest.raises(IndexError):
                    front.next_request()
        elif action == "p":
            front.push_requests()
            published = made
        elif action == "T":
            for _ in range(count):
                slot = back.take_request()
                if slot is None:
                    assert taken == published, "a published request was not seen"
                    break
                assert struct.unpack_from("<Q", slot)[0] == taken
                taken += 1
        elif action == "R":
            for _ in range(min(count, taken - answered)):
                struct.pack_into("<Q", back.next_response(), 0, answered + 10**6)
                answered += 1
        elif action == "r":
            back.push_responses()
            back_published = answered
        elif action == "C":
            for _ in range(count):
                slot = front.take_response()
                if slot is None:
                    assert consumed == back_published
                    break
                assert struct.unpack_from("<Q", slot)[0] == consumed + 10**6
                consumed += 1
        else:
            front.arm_response_event()
            assert front.has_responses() == (consumed < back_published)
        assert 0 <= front.free_requests() <= 256
        assert made - consumed == 256 - front.free_requests()
    assert header(page)[0] == (start + published) % U32
    assert header(page)[2] == (start + back_published) % U32


def test_closing_releases_the_page_so_that_its_mapping_can_close() -> None:
    mapping = mmap.mmap(-1, 4096)
    page = memoryview(mapping)
    ring = FrontRing(page, 12)
    with pytest.raises(BufferError):
        mapping.close()
    ring.close()
    page.release()
    mapping.close()
    assert mapping.closed
