"""Helpers for the network tests: addresses, and stacks joined by a sans-IO wire."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from unikernel.net.config import static
from unikernel.net.ipv4 import parse_address
from unikernel.net.stack import Stack


def ip(text: str) -> bytes:
    return parse_address(text)


def mac(n: int) -> bytes:
    return bytes((2, 0, 0, 0, 0, n))


def make_stack(n: int, cidr: str | None = None, gateway: str | None = None) -> Stack:
    """Stack number n: MAC 02:00:00:00:00:0n, statically configured if `cidr` is given."""
    config = None if cidr is None else static(cidr, gateway)
    return Stack(mac(n), config=config)


def pump(
    stacks: Sequence[Stack],
    now: float,
    *,
    lose: Callable[[bytes], bool] = lambda frame: False,
    seen: list[bytes] | None = None,
) -> int:
    """Carry frames between the stacks as a hub does (each to every other stack) until none
    is left; `lose` drops the frames it says yes to. Returns how many frames were sent."""
    sent = 0
    while True:
        moved = False
        for sender in stacks:
            for frame in sender.take_frames():
                moved = True
                sent += 1
                if seen is not None:
                    seen.append(frame)
                if lose(frame):
                    continue
                for receiver in stacks:
                    if receiver is not sender:
                        receiver.receive(frame, now)
        if not moved:
            return sent
