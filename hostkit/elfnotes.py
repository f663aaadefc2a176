"""ELF notes, read with the standard library: enough to tell whether a kernel has a PVH entry.

A vmlinux can be started directly by QEMU, Firecracker and Xen in PVH mode only if it carries the
Xen note XEN_ELFNOTE_PHYS32_ENTRY (type 18), whose descriptor is the 32-bit physical entry point.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

XEN_ELFNOTE_PHYS32_ENTRY = 18

_PT_NOTE = 4
_SHT_NOTE = 7


class ElfError(ValueError):
    """Not an ELF file we can read."""


@dataclass(frozen=True)
class Note:
    name: str
    type: int
    desc: bytes


def notes(path: Path) -> list[Note]:
    """The notes of an ELF file, from its PT_NOTE segments, or from its SHT_NOTE sections when
    it has no program headers (relocatable objects)."""
    return parse_notes(path.read_bytes())


def pvh_entry(path: Path) -> int | None:
    """The PVH entry point of a kernel ELF, None when it has no PVH note."""
    return pvh_entry_of(notes(path))


def has_pvh_note(path: Path) -> bool:
    return pvh_entry(path) is not None


def pvh_entry_of(found: list[Note]) -> int | None:
    for note in found:
        if note.name == "Xen" and note.type == XEN_ELFNOTE_PHYS32_ENTRY:
            # Linux stores the address as a pointer-sized value: 4 or 8 bytes, little endian.
            return int.from_bytes(note.desc, "little")
    return None


def parse_notes(data: bytes) -> list[Note]:
    """The notes of the ELF image `data`."""
    if data[:4] != b"\x7fELF" or len(data) < 52:
        raise ElfError("not an ELF file")
    elf_class, encoding = data[4], data[5]
    if encoding != 1:
        raise ElfError("only little-endian ELF is supported")
    if elf_class == 2:
        phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    elif elf_class == 1:
        phoff, shoff = struct.unpack_from("<II", data, 0x1C)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x2A)
    else:
        raise ElfError(f"unknown ELF class {elf_class}")

    regions = [
        region
        for index in range(phnum)
        if (region := _segment_note(data, elf_class, phoff + index * phentsize)) is not None
    ]
    if not regions:
        regions = [
            region
            for index in range(shnum)
            if (region := _section_note(data, elf_class, shoff + index * shentsize)) is not None
        ]
    found: list[Note] = []
    for offset, size in regions:
        found.extend(_notes_in(data, offset, size))
    return found


def _segment_note(data: bytes, elf_class: int, at: int) -> tuple[int, int] | None:
    """(offset, size) of a program header's contents if it is PT_NOTE."""
    if elf_class == 2:
        p_type, _flags, offset, _vaddr, _paddr, size = struct.unpack_from("<IIQQQQ", data, at)
    else:
        p_type, offset, _vaddr, _paddr, size = struct.unpack_from("<IIIII", data, at)
    return (offset, size) if p_type == _PT_NOTE else None


def _section_note(data: bytes, elf_class: int, at: int) -> tuple[int, int] | None:
    """(offset, size) of a section header's contents if it is SHT_NOTE."""
    if elf_class == 2:
        _name, sh_type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, at)
    else:
        _name, sh_type, _flags, _addr, offset, size = struct.unpack_from("<IIIIII", data, at)
    return (offset, size) if sh_type == _SHT_NOTE else None


def _notes_in(data: bytes, offset: int, size: int) -> list[Note]:
    """Walk the (namesz, descsz, type, name, desc) records of one note region; name and desc
    are each padded to 4 bytes."""
    found = []
    at, end = offset, min(offset + size, len(data))
    while at + 12 <= end:
        namesz, descsz, note_type = struct.unpack_from("<III", data, at)
        at += 12
        name = data[at : at + namesz].rstrip(b"\0").decode("ascii", "replace")
        at += _align4(namesz)
        desc = data[at : at + descsz]
        at += _align4(descsz)
        if at > end:
            raise ElfError(f"note {name!r} runs past the end of its region")
        found.append(Note(name, note_type, bytes(desc)))
    return found


def _align4(n: int) -> int:
    return (n + 3) & ~3
