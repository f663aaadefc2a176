"""The ELF note parser that tells whether a kernel has a PVH entry point."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hostkit import elfnotes
from tests.support.artifacts import require_specialized_kernel
from unikernel.toolchain import kernel


def note(name: bytes, note_type: int, desc: bytes) -> bytes:
    def padded(data: bytes) -> bytes:
        return data + b"\0" * (-len(data) % 4)

    return struct.pack("<III", len(name), len(desc), note_type) + padded(name) + padded(desc)


def elf64(notes: bytes, *, as_section: bool = False) -> bytes:
    """A minimal little-endian x86-64 ELF whose only content is `notes`, in a PT_NOTE segment or,
    with `as_section`, in an SHT_NOTE section (no program headers, as in a .o)."""
    header_size, phent, shent = 64, 56, 64
    notes_at = header_size + phent
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    if as_section:
        table_at = notes_at + len(notes)
        header = ident + struct.pack(
            "<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, table_at, 0, header_size, phent, 0, shent, 2, 0
        )
        null_section = b"\0" * shent
        note_section = struct.pack("<IIQQQQIIQQ", 0, 7, 0, 0, notes_at, len(notes), 0, 0, 4, 0)
        return header.ljust(notes_at, b"\0") + notes + null_section + note_section
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, header_size, 0, 0, header_size, phent, 1, shent, 0, 0
    )
    segment = struct.pack("<IIQQQQQQ", 4, 4, notes_at, 0, 0, len(notes), len(notes), 4)
    return header + segment + notes


PVH_ENTRY = 0x1000A40
NOTES = note(b"GNU\0", 3, b"\x01\x02\x03\x04\x05") + note(
    b"Xen\0", elfnotes.XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<Q", PVH_ENTRY)
)


def test_notes_are_read_from_the_note_segment(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(elf64(NOTES))
    found = elfnotes.notes(path)
    assert [(n.name, n.type) for n in found] == [("GNU", 3), ("Xen", 18)]
    assert found[0].desc == b"\x01\x02\x03\x04\x05"  # the padding is not part of it
    assert elfnotes.pvh_entry(path) == PVH_ENTRY
    assert elfnotes.has_pvh_note(path)


def test_notes_are_read_from_sections_without_program_headers() -> None:
    found = elfnotes.parse_notes(elf64(NOTES, as_section=True))
    assert elfnotes.pvh_entry_of(found) == PVH_ENTRY


def test_a_four_byte_entry_is_read_too() -> None:
    data = elf64(note(b"Xen\0", 18, struct.pack("<I", 0x100000)))
    assert elfnotes.pvh_entry_of(elfnotes.parse_notes(data)) == 0x100000


def test_other_xen_notes_are_not_a_pvh_entry(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(elf64(note(b"Xen\0", 1, b"xen-3.0\0") + note(b"Linux\0", 18, b"\0" * 8)))
    assert not elfnotes.has_pvh_note(path)


def test_a_bzimage_is_not_elf() -> None:
    with pytest.raises(elfnotes.ElfError):
        elfnotes.parse_notes(b"MZ" + b"\0" * 100)


def test_a_truncated_note_is_an_error() -> None:
    with pytest.raises(elfnotes.ElfError, match="past the end"):
        elfnotes.parse_notes(elf64(note(b"Xen\0", 18, b"\0" * 8))[:-4])


@pytest.mark.slow
def test_the_cached_specialized_vmlinux_has_a_pvh_entry() -> None:
    require_specialized_kernel()
    built = kernel.find_specialized_kernel()
    assert built is not None
    entry = elfnotes.pvh_entry(built.vmlinux)
    assert entry is not None
    assert 0x100000 <= entry < 0x10000000  # a physical address in the kernel's first megabytes
