"""Random numbers from the kernel's entropy pool, for whatever must not be guessed: TCP initial
sequence numbers, DHCP transaction ids, ephemeral ports, DNS query ids.

os.urandom() is getrandom(2) underneath, which waits until the pool is first seeded and never
afterwards.
"""

from __future__ import annotations

import os


def entropy_ready() -> bool:
    """Whether the kernel's pool is seeded, i.e. random_bytes() will not block."""
    try:
        os.getrandom(1, os.GRND_NONBLOCK)
    except BlockingIOError:
        return False
    return True


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def random_u32() -> int:
    return int.from_bytes(os.urandom(4), "little")


def random_below(n: int) -> int:
    """A uniform integer in [0, n)."""
    if n <= 0:
        raise ValueError(f"need a positive bound, not {n}")
    bits = (n - 1).bit_length()
    size = (bits + 7) // 8
    while True:
        # Keep only `bits` bits, then reject values past the bound: no modulo bias.
        value = int.from_bytes(os.urandom(size), "little") >> (size * 8 - bits)
        if value < n:
            return value
