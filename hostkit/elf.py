"""The two facts about an ELF file that decide which files the dynamic loader opens.

PT_INTERP names the dynamic loader; the DT_NEEDED entries of the dynamic section name the shared
libraries. Reading them from the bytes (rather than running `ldd`) works on a rootfs that is still
a tarball, without root or a chroot, and never executes anything from the rootfs.
"""

import struct
from dataclasses import dataclass
from itertools import takewhile

_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NULL, _DT_NEEDED, _DT_STRTAB = 0, 1, 5


@dataclass(frozen=True)
class DynamicInfo:
    interpreter: str | None  # None for a shared library or a static executable
    needed: tuple[str, ...]


def is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def read_dynamic_info(data: bytes) -> DynamicInfo:
    """Parse a 64-bit ELF file's interpreter and needed libraries; ValueError if not one."""
    if not is_elf(data):
        raise ValueError("not an ELF file")
    if data[4] != 2:
        raise ValueError("only 64-bit ELF files are supported")
    order = "<" if data[5] == 1 else ">"
    (phoff,) = struct.unpack_from(order + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36)

    # (type, file offset, virtual address, size in file) of each program header
    segments = []
    for index in range(phnum):
        p_type, _flags, offset, vaddr, _paddr, filesz = struct.unpack_from(
            order + "IIQQQQ", data, phoff + index * phentsize
        )
        segments.append((p_type, offset, vaddr, filesz))

    interpreter = None
    dynamic: list[tuple[int, int]] = []
    for p_type, offset, _vaddr, filesz in segments:
        if p_type == _PT_INTERP:
            interpreter = data[offset : offset + filesz].rstrip(b"\0").decode()
        elif p_type == _PT_DYNAMIC:
            dynamic = [
                struct.unpack_from(order + "qQ", data, entry)
                for entry in range(offset, offset + filesz, 16)
            ]
    if not dynamic:
        return DynamicInfo(interpreter, ())

    dynamic = list(takewhile(lambda entry: entry[0] != _DT_NULL, dynamic))
    # DT_STRTAB is a virtual address: map it to a file offset through the loadable segment
    # that contains it.
    strtab_vaddr = next(value for tag, value in dynamic if tag == _DT_STRTAB)
    strtab = next(
        offset + strtab_vaddr - vaddr
        for p_type, offset, vaddr, filesz in segments
        if p_type == _PT_LOAD and vaddr <= strtab_vaddr < vaddr + filesz
    )
    needed = tuple(_c_string(data, strtab + value) for tag, value in dynamic if tag == _DT_NEEDED)
    return DynamicInfo(interpreter, needed)


def _c_string(data: bytes, offset: int) -> str:
    return data[offset : data.index(b"\0", offset)].decode()
