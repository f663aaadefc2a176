"""Drivers: the only code that does device I/O, under sans-IO protocol engines.

A network driver is a `Netif`: it moves whole Ethernet frames (no FCS) in batches, never
blocks, and tells the scheduler when it is ready through a file descriptor.
`unikernel.net.interface.Interface` runs a Netif under a `unikernel.net.stack.Stack`.

- `tap`: a TAP device (hosted target); `packet`: an AF_PACKET socket on the raw interface
  (inside the image); both move one frame a system call (Python has no recvmmsg/sendmmsg);
- `packet_ring`: the same socket with PACKET_MMAP rings, a batch of frames without a system
  call each (the hosted target on a veth end; `hosted_link` picks the launcher's link);
- `vnet`: an in-memory switch joining several stacks in one process, for tests.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Self

    Buffer = bytes | bytearray | memoryview


class Netif:
    """A network interface, as the stack's driver loop uses it."""

    mac: bytes  # the interface's own address, 6 bytes
    mtu: int  # the largest IP datagram a frame carries (1500 on Ethernet)
    segmentation: bool = False  # whether it sends TCP super-frames cut by the link (TSO)

    def fileno(self) -> int:
        """Readable when frames wait to be read; writable when write_batch() would take more."""
        raise NotImplementedError

    def read_batch(self, limit: int) -> list[Buffer]:
        """Up to `limit` received frames, [] when none waits. A frame may be a view into a
        buffer that the next read_batch() reuses: the stack copies what it keeps."""
        raise NotImplementedError

    def vouched(self) -> int:
        """Of the frames the last read_batch() returned: bit i set when the link vouched for
        the TCP checksum of frame i (the stack then does not check it)."""
        return 0

    def write_batch(self, frames: Sequence[Buffer]) -> int:
        """Queue frames for transmission in order, without blocking; how many were taken.
        Fewer than all means the device is full: wait for fileno() to be writable and offer
        the rest again."""
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        """The driver's own counters (frames, drops, events), for diagnosis; none by default."""
        return {}

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_frames(
    write: Callable[[Buffer], object], frames: Sequence[Buffer], dropping: tuple[int, ...]
) -> tuple[int, int]:
    """Writes frames one at a time until the device is full: (taken, lost). A frame that fails
    with an errno in `dropping` is lost but counts as taken, as a NIC drops frames rather than
    stop; other errors are raised."""
    taken = lost = 0
    for frame in frames:
        try:
            write(frame)
        except BlockingIOError:
            break
        except OSError as error:
            if error.errno not in dropping:
                raise
            lost += 1
        taken += 1
    return taken, lost
