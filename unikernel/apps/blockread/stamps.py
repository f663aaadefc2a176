"""The stamps on the block suite's data: every 1 KiB unit of the file carries fio's verify
header (fio writes the file with `--verify=md5 --bs=1k`), so a reader can tell that a unit is
the one it asked for and is intact. fio checks them itself on every read; this is how we check
ours, with nothing but the standard library.

A unit, as fio 3.x lays it out (little-endian): a 40-byte header (magic 0xACCA, verify type,
length, random seed, offset, time, thread, number, header CRC32C), then the MD5 of the rest of
the unit (16 bytes), then random data to the end of the unit.
"""

from __future__ import annotations

import struct

# hashlib would load OpenSSL first: a 4 MB library in the image.
from _md5 import md5  # type: ignore[import-not-found]

UNIT = 1024
MAGIC = 0xACCA
VERIFY_MD5 = 2
HEADER = struct.Struct("<HHIQQ")  # magic, verify type, length, seed, offset: the fields we check
DIGEST_AT = 40
DATA_AT = DIGEST_AT + 16


def check_unit(unit: memoryview | bytes, offset: int) -> str | None:
    """Why the UNIT bytes read from `offset` are not the unit written there, or None if they are."""
    magic, kind, length, _, stamped = HEADER.unpack_from(unit)
    if magic != MAGIC or kind != VERIFY_MD5 or length != UNIT:
        found = f"magic {magic:#x}, type {kind}, length {length}"
        return f"unit at {offset}: no md5 verify header ({found})"
    if stamped != offset:
        return f"unit at {offset}: holds the unit written at {stamped}"
    if md5(unit[DATA_AT:UNIT]).digest() != bytes(unit[DIGEST_AT:DATA_AT]):
        return f"unit at {offset}: its data does not match its checksum"
    return None


def check_block(block: memoryview, offset: int) -> str | None:
    """Checks a block read from `offset` (a whole number of units) by its first and last unit,
    and one in between that depends on the offset: enough to catch a block from the wrong
    place, a blank device or a torn transfer, and, over the many reads of a run, pages of a
    large read put out of order (a driver's scatter list wrong), at a cost that does not
    depend on the block size."""
    problem = check_unit(block[:UNIT], offset)
    last = block.nbytes - UNIT
    if problem is None and last > 0:
        problem = check_unit(block[last:], offset + last)
    inner = last // UNIT - 1  # units strictly between the first and the last
    if problem is None and inner > 0:
        # Knuth's multiplicative hash of the offset: the reads of a run look all over a block.
        middle = (1 + (offset // UNIT * 2654435761 >> 16) % inner) * UNIT
        problem = check_unit(block[middle : middle + UNIT], offset + middle)
    return problem
