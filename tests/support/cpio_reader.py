"""Reading newc cpio archives back, to check what our writer and our images hold."""

from __future__ import annotations


def parse(archive: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """A reader written from the newc format's description, to check the writer against."""
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = []
    at = 0
    while True:
        assert archive[at : at + 6] == b"070701"
        fields = [int(archive[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name_at = at + 110
        name = archive[name_at : name_at + namesize - 1].decode()
        data_at = name_at + namesize + (-(110 + namesize) % 4)
        data = archive[data_at : data_at + size]
        at = data_at + size + (-size % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append((name, mode, data, rdev))
