import io
import stat

from hostkit.cpio import CpioWriter
from tests.support.cpio_reader import parse


def test_entries_round_trip_with_types_modes_and_alignment() -> None:
    out = io.BytesIO()
    writer = CpioWriter(out)
    writer.directory("usr")
    writer.file("usr/a.txt", b"hello", mode=0o600)
    writer.symlink("lib64", "usr/lib")
    writer.char_device("dev/console", 5, 1)
    writer.close()
    archive = out.getvalue()
    assert len(archive) % 512 == 0
    entries = parse(archive)
    assert [e[0] for e in entries] == ["usr", "usr/a.txt", "lib64", "dev/console"]
    assert stat.S_ISDIR(entries[0][1])
    assert entries[1][2] == b"hello" and stat.S_IMODE(entries[1][1]) == 0o600
    assert stat.S_ISLNK(entries[2][1]) and entries[2][2] == b"usr/lib"
    assert stat.S_ISCHR(entries[3][1]) and entries[3][3] == (5, 1)


def test_same_input_same_bytes_and_no_duplicates() -> None:
    def make() -> bytes:
        out = io.BytesIO()
        writer = CpioWriter(out)
        writer.file("init", b"#!/bin/x\n", mode=0o755)
        writer.close()
        return out.getvalue()

    assert make() == make()
    writer = CpioWriter(io.BytesIO())
    writer.file("a", b"")
    try:
        writer.file("/a/", b"")
    except ValueError as exc:
        assert "twice" in str(exc)
    else:
        raise AssertionError("a duplicate entry was accepted")
