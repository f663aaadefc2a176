"""Linux native AIO (io_setup, io_submit, io_getevents) through ctypes: requests on an O_DIRECT
file descriptor go to the device without a thread each, and their completions signal an eventfd
the scheduler can wait on.

Python's os module has no AIO (nor statx, which tells the alignment direct I/O needs), so the
system calls go through libc's syscall(); the control blocks are packed with struct (faster
than ctypes.Structure fields, and the layout is the kernel's ABI: linux/aio_abi.h, x86-64).
"""

from __future__ import annotations

import ctypes
import os
import struct

SYS_IO_SETUP = 206
SYS_IO_DESTROY = 207
SYS_IO_GETEVENTS = 208
SYS_IO_SUBMIT = 209
SYS_STATX = 332

READ = 0  # IOCB_CMD_PREAD
WRITE = 1  # IOCB_CMD_PWRITE
FSYNC = 2  # IOCB_CMD_FSYNC
IOCB_FLAG_RESFD = 1

# struct iocb: aio_data, aio_key, aio_rw_flags, aio_lio_opcode, aio_reqprio, aio_fildes,
# aio_buf, aio_nbytes, aio_offset, aio_reserved2, aio_flags, aio_resfd: 64 bytes.
IOCB = struct.Struct("=QIIHhIQQqQII")
# struct io_event: data, obj, res, res2: 32 bytes.
IO_EVENT = struct.Struct("=QQqq")

AT_EMPTY_PATH = 0x1000
STATX_DIOALIGN = 0x2000
STATX_SIZE = 256  # struct statx, linux/stat.h
STATX_DIO_OFFSET_ALIGN = 0x9C  # where it keeps stx_dio_offset_align (a __u32)

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def dio_offset_alignment(fd: int) -> int | None:
    """The alignment O_DIRECT needs of the offsets and sizes of requests on `fd` (statx's
    STATX_DIOALIGN, Linux 6.1 on): 4096 for a file on a disk of 4 KiB sectors, say. None where
    the kernel or the file system does not tell; 0 if the file cannot do direct I/O."""
    answer = ctypes.create_string_buffer(STATX_SIZE)
    if _syscall(SYS_STATX, fd, b"", AT_EMPTY_PATH, STATX_DIOALIGN, answer) < 0:
        return None
    (mask,) = struct.unpack_from("=I", answer, 0)
    if not mask & STATX_DIOALIGN:
        return None
    (alignment,) = struct.unpack_from("=I", answer, STATX_DIO_OFFSET_ALIGN)
    return int(alignment)


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer, to ask a read-only buffer where its memory is."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


def buffer_address(buffer: memoryview) -> int:
    """Where a contiguous buffer's memory is (the kernel DMAs into it or out of it); it stays
    there while `buffer` lives."""
    if not buffer.readonly:
        return ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    # ctypes maps only writable buffers, but a write may come from a read-only view: ask the
    # buffer protocol itself (PyBUF_SIMPLE).
    view = _PyBuffer()
    ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(buffer), ctypes.byref(view), 0)
    try:
        return view.buf or 0
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


# The completion ring the kernel maps at the context's address (fs/aio.c, struct aio_ring):
# id, nr, head, tail, magic, compat_features, incompat_features, header_length, then events.
RING_HEADER = struct.Struct("=IIIIIIII")
RING_HEAD_AT = 8
AIO_RING_MAGIC = 0xA10A10A1


class AioContext:
    """An AIO context of `depth` slots whose completions increment `eventfd`.

    The control blocks live in `depth` preallocated slots, and completions are taken from the
    ring the kernel shares with us, so a request costs one system call (io_submit) and no
    allocation: under QEMU's emulated CPU each line of Python costs about 16 times what it
    costs natively, and the reads we compare against are fio's, in C.
    """

    def __init__(self, depth: int, eventfd: int) -> None:
        self.depth = depth
        self.eventfd = eventfd
        self._context = ctypes.c_ulong(0)
        _check(_syscall(SYS_IO_SETUP, depth, ctypes.byref(self._context)), "io_setup")
        self._events = ctypes.create_string_buffer(IO_EVENT.size * depth)
        self._no_wait = (ctypes.c_long * 2)(0, 0)
        self._blocks = ctypes.create_string_buffer(IOCB.size * depth)
        base = ctypes.addressof(self._blocks)
        # One ready-made argument to io_submit per slot: an array of one pointer, to it.
        self._submit_args = [
            (ctypes.c_void_p * 1)(base + slot * IOCB.size) for slot in range(depth)
        ]
        self._free_slots = list(range(depth))
        # The requests in flight, by token: their slot, and their buffer, which must stay
        # alive until the kernel is done with it.
        self._in_flight: dict[int, tuple[int, memoryview | None]] = {}
        self._ring = self._map_ring()

    def _map_ring(self) -> memoryview | None:
        """The kernel's completion ring, or None if it is not one we know how to read."""
        address = self._context.value
        header = (ctypes.c_char * RING_HEADER.size).from_address(address)
        _, entries, _, _, magic, _, incompatible, length = RING_HEADER.unpack(header)
        if magic != AIO_RING_MAGIC or incompatible != 0 or length != RING_HEADER.size:
            return None
        size = RING_HEADER.size + entries * IO_EVENT.size
        return memoryview((ctypes.c_char * size).from_address(address)).cast("B")

    def submit(
        self, token: int, opcode: int, fd: int, buffer: memoryview | None, offset: int
    ) -> None:
        """Start one request; its completion is reaped by completed() under `token`."""
        if buffer is None:
            address, size = 0, 0
        else:
            address, size = buffer_address(buffer), buffer.nbytes
        if not self._free_slots:
            raise OSError(11, f"io_submit: all {self.depth} requests are in flight")
        slot = self._free_slots.pop()
        IOCB.pack_into(
            self._blocks,
            slot * IOCB.size,
            token, 0, 0, opcode, 0, fd, address, size, offset, 0, IOCB_FLAG_RESFD, self.eventfd,
        )  # fmt: skip
        if _syscall(SYS_IO_SUBMIT, self._context, 1, self._submit_args[slot]) < 0:
            self._free_slots.append(slot)
            _check(-1, "io_submit")
        self._in_flight[token] = (slot, buffer)

    def completed(self) -> list[tuple[int, int]]:
        """(token, result) of the requests finished since the last call; a result is the byte
        count, or minus an errno. Never waits."""
        if self._ring is None:
            return self._completed_by_syscall()
        ring = self._ring
        _, entries, head, tail = RING_HEADER.unpack_from(ring)[:4]
        done: list[tuple[int, int]] = []
        # x86-64 keeps loads in order: the events below are read after the tail that covers
        # them, and the head is stored after they were read (the kernel's own barriers
        # order its side).
        while head != tail:
            token, _, result, _ = IO_EVENT.unpack_from(ring, RING_HEADER.size + head * 32)
            head = head + 1 if head + 1 < entries else 0
            self._finish(token)
            done.append((token, result))
        struct.pack_into("=I", ring, RING_HEAD_AT, head)
        return done

    def _completed_by_syscall(self) -> list[tuple[int, int]]:
        done: list[tuple[int, int]] = []
        while self._in_flight:
            count = _check(
                _syscall(
                    SYS_IO_GETEVENTS, self._context, 0, self.depth, self._events, self._no_wait
                ),
                "io_getevents",
            )
            for index in range(count):
                token, _, result, _ = IO_EVENT.unpack_from(self._events, index * IO_EVENT.size)
                self._finish(token)
                done.append((token, result))
            if count < self.depth:
                break
        return done

    def _finish(self, token: int) -> None:
        slot, _ = self._in_flight.pop(token)
        self._free_slots.append(slot)

    def close(self) -> None:
        if self._context.value:
            self._ring = None  # the kernel unmaps it
            _syscall(SYS_IO_DESTROY, self._context)  # waits for requests still in flight
            self._context = ctypes.c_ulong(0)
            self._in_flight.clear()
