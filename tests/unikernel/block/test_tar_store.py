"""The tar parser against archives the standard library's tarfile (and GNU tar) makes, damaged
archives, and the read-only store over a raw disk and over bytes."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from unikernel.block.interface import BlockDevice
from unikernel.block.tar_format import (
    BLOCK,
    TarEntry,
    TarFormatError,
    TarScanner,
    entries,
    parse_header,
    parse_number,
)
from unikernel.block.tar_store import NoSuchKey, TarStore
from unikernel.core.scheduler import run
from unikernel.drivers.rawdisk import RawDisk

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def make_tar(
    files: dict[str, bytes],
    fmt: int = tarfile.PAX_FORMAT,
    extras: Callable[[tarfile.TarFile], None] | None = None,
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
        if extras is not None:
            extras(archive)
    return out.getvalue()


def read_all(archive: bytes) -> dict[str, bytes]:
    return {
        member.path: archive[member.offset : member.offset + member.size]
        for member in entries(archive)
        if member.is_file
    }


def syncrun(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run(main)


# Names: path components of a few characters, some long enough for GNU long names, pax paths
# or the ustar prefix field, some not ASCII.
component = st.text(alphabet=st.sampled_from("abcXYZ019_-.é字"), min_size=1, max_size=40).filter(
    lambda c: c not in (".", "..")
)
path = st.lists(component, min_size=1, max_size=8).map("/".join)
archives = st.dictionaries(path, st.binary(max_size=3000), min_size=0, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=archives, fmt=st.sampled_from(sorted(FORMATS)))
def test_every_file_tarfile_archives_is_found_with_its_bytes(
    files: dict[str, bytes], fmt: str
) -> None:
    try:
        archive = make_tar(files, FORMATS[fmt])
    except ValueError:
        assume(False)  # ustar cannot hold this name: tarfile refuses it
    assert read_all(archive) == files
    members = list(entries(archive))
    assert [m.path for m in members] == list(files)  # in order, nothing else
    for member in members:
        assert member.offset % BLOCK == 0


@settings(max_examples=60, deadline=None)
@given(files=archives, data=st.data())
def test_the_scanner_reads_what_it_asks_for_and_nothing_else(
    files: dict[str, bytes], data: st.DataObject
) -> None:
    archive = make_tar(files)
    # Trailing zeros past the end-of-archive blocks (a disk bigger than the archive) are never read.
    padded = archive + bytes(BLOCK * data.draw(st.integers(0, 20)))
    scanner = TarScanner(len(padded))
    asked_past = 0
    found = []
    while (wanted := scanner.wants) is not None:
        offset, size = wanted
        asked_past = max(asked_past, offset + size)
        member = scanner.feed(padded[offset : offset + size])
        if member is not None:
            found.append(member.path)
    assert found == list(files)
    assert asked_past <= len(archive)


def test_directories_symlinks_and_hard_links_are_members_but_not_files() -> None:
    def extras(archive: tarfile.TarFile) -> None:
        for name, kind, link in (
            ("d", tarfile.DIRTYPE, ""),
            ("s", tarfile.SYMTYPE, "a.txt"),
            ("h", tarfile.LNKTYPE, "a.txt"),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            archive.addfile(info)

    archive = make_tar({"a.txt": b"hello"}, extras=extras)
    kinds = {m.path: (m.kind, m.link, m.size) for m in entries(archive)}
    assert kinds == {
        "a.txt": ("0", "", 5),
        "d": ("5", "", 0),
        "s": ("2", "a.txt", 0),
        "h": ("1", "a.txt", 0),
    }
    store = TarStore.from_bytes(archive)
    assert sorted(store.keys()) == ["a.txt", "h"]  # the hard link serves its target's bytes

    async def main() -> None:
        assert bytes(await store.get("h")) == b"hello"

    syncrun(main)


def test_a_long_path_survives_each_way_of_writing_it() -> None:
    long_name = "/".join(["directory-" + str(i) for i in range(30)]) + "/file.txt"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        assert read_all(make_tar({long_name: b"x" * 700}, fmt)) == {long_name: b"x" * 700}
    prefixed = "p" * 150 + "/" + "n" * 99  # fits ustar's prefix and name fields
    assert read_all(make_tar({prefixed: b"y"}, tarfile.USTAR_FORMAT)) == {prefixed: b"y"}


@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar"])
def test_archives_gnu_tar_makes(tmp_path: Path, fmt: str) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar command")
    root = tmp_path / "files"
    made: dict[str, bytes] = {}
    rng = random.Random(7)
    for index in range(20):
        depth = "/".join(f"dir{index % 3}-{'q' * (index * 3)}" for _ in range(1 + index % 2))
        name = f"{depth}/file-{index}.bin" if fmt != "ustar" else f"d{index % 3}/f{index}.bin"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.choice([0, 1, 511, 512, 513, 5000, 70000]))
        (root / name).write_bytes(data)
        made[name] = data
    archive_path = tmp_path / "made.tar"
    subprocess.run(
        ["tar", f"--format={fmt}", "-cf", str(archive_path), "-C", str(root), "."], check=True
    )
    archive = archive_path.read_bytes()
    store = TarStore.from_bytes(archive)
    assert sorted(store.keys()) == sorted(made)  # "./" stripped, directories left out

    async def main() -> None:
        for name, data in made.items():
            assert bytes(await store.get(name)) == data
            assert bytes(await store.get("./" + name)) == data

    syncrun(main)


# Numbers, and damage.


def test_numbers_are_octal_or_base_256() -> None:
    assert parse_number(b"00000001750\0", "size") == 1000
    assert parse_number(b"  1750 \0\0\0\0\0", "size") == 1000
    assert parse_number(b"\0" * 12, "size") == 0
    assert parse_number(b"\x80" + (8 << 30).to_bytes(11, "big"), "size") == 8 << 30
    with pytest.raises(TarFormatError, match="negative"):
        parse_number(b"\xff" * 12, "size")
    with pytest.raises(TarFormatError, match="not an octal number"):
        parse_number(b"00000009\0\0\0\0", "size")


def resealed(header: bytes | bytearray, at: int, field: bytes) -> bytes:
    """`header` with `field` written at `at` and its checksum made right again."""
    block = bytearray(header)
    block[at : at + len(field)] = field
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_a_base_256_size_is_read() -> None:
    archive = bytearray(make_tar({"f": b"z" * 1000}, tarfile.GNU_FORMAT))
    archive[:BLOCK] = resealed(archive[:BLOCK], 124, b"\x80" + (1000).to_bytes(11, "big"))
    assert read_all(bytes(archive)) == {"f": b"z" * 1000}


def test_a_bad_checksum_is_refused() -> None:
    archive = bytearray(make_tar({"f": b"data"}))
    archive[0] ^= 1
    with pytest.raises(TarFormatError, match="checksum"):
        list(entries(bytes(archive)))


def test_a_size_that_is_no_number_is_refused() -> None:
    archive = bytearray(make_tar({"f": b"data"}, tarfile.USTAR_FORMAT))
    archive[:BLOCK] = resealed(archive[:BLOCK], 124, b"0000000x004\0")
    with pytest.raises(TarFormatError, match="size field"):
        list(entries(bytes(archive)))


@pytest.mark.parametrize("cut", [100, BLOCK, BLOCK + 10, 2 * BLOCK + 3000])
def test_a_truncated_archive_is_refused(cut: int) -> None:
    archive = make_tar({"a": b"1" * 700, "b": b"2" * 5000}, tarfile.USTAR_FORMAT)
    with pytest.raises(TarFormatError, match="truncated"):
        list(entries(archive[:cut]))


def test_an_archive_may_end_without_its_zero_blocks() -> None:
    archive = make_tar({"a": b"1" * 700}, tarfile.USTAR_FORMAT)
    assert read_all(archive[: 3 * BLOCK]) == {"a": b"1" * 700}


def test_sparse_members_are_refused() -> None:
    archive = bytearray(make_tar({"f": b"data"}, tarfile.GNU_FORMAT))
    archive[:BLOCK] = resealed(archive[:BLOCK], 156, b"S")
    with pytest.raises(TarFormatError, match="sparse"):
        list(entries(bytes(archive)))


def test_bad_pax_records_are_refused() -> None:
    archive = make_tar({"é": b"x"}, tarfile.PAX_FORMAT)  # a pax header for the name
    assert archive[156:157] == b"x"
    broken = bytearray(archive)
    broken[BLOCK : BLOCK + 2] = b"99"  # the first record's length, past its newline
    with pytest.raises(TarFormatError, match="pax record"):
        list(entries(bytes(broken)))


def test_a_zero_block_ends_the_archive() -> None:
    assert parse_header(bytes(BLOCK)) is None
    assert list(entries(bytes(10 * BLOCK))) == []
    assert list(entries(b"")) == []


def parses_or_refuses(archive: bytes) -> list[TarEntry]:
    try:
        members = list(entries(archive))
    except TarFormatError as error:
        assert str(error)
        return []
    for member in members:
        assert member.offset >= 0 and member.offset + member.size <= len(archive)
    return members


@given(st.binary(max_size=4 * BLOCK))
def test_arbitrary_bytes_parse_or_raise_tar_format_error(data: bytes) -> None:
    parses_or_refuses(data)


@settings(max_examples=300, deadline=None)
@given(files=archives, fmt=st.sampled_from(sorted(FORMATS)), data=st.data())
def test_damaged_headers_parse_or_raise_tar_format_error(
    files: dict[str, bytes], fmt: str, data: st.DataObject
) -> None:
    try:
        archive = bytearray(make_tar(files, FORMATS[fmt]))
    except ValueError:
        assume(False)
    # Damage a header's fields and reseal its checksum, so the damage reaches the parsing.
    headers = [0]
    for member in entries(bytes(archive)):
        headers.append(member.offset - BLOCK)
    for _ in range(data.draw(st.integers(1, 4))):
        header = data.draw(st.sampled_from(headers))
        at = data.draw(st.integers(0, BLOCK - 1))
        field = data.draw(st.binary(min_size=1, max_size=16))
        block = archive[header : header + BLOCK]
        if data.draw(st.booleans()):
            block = bytearray(resealed(bytes(block), at, field))[:BLOCK]
        else:
            block[at : at + len(field)] = field
            block = block[:BLOCK]
        archive[header : header + BLOCK] = block
    cut = data.draw(st.integers(0, len(archive)))
    parses_or_refuses(bytes(archive[:cut]) if data.draw(st.booleans()) else bytes(archive))


# The store.


class CountingDevice(BlockDevice):
    """A device that counts the requests it passes on."""

    def __init__(self, inner: BlockDevice) -> None:
        self.inner = inner
        self.sector_size = inner.sector_size
        self.capacity = inner.capacity
        self.read_only = inner.read_only
        self.reads: list[tuple[int, int]] = []

    async def read(self, offset: int, buffer: memoryview) -> None:
        self.reads.append((offset, buffer.nbytes))
        await self.inner.read(offset, buffer)

    async def write(self, offset: int, buffer: memoryview) -> None:
        await self.inner.write(offset, buffer)

    async def flush(self) -> None:
        await self.inner.flush()

    def close(self) -> None:
        self.inner.close()


def sample_files(rng: random.Random) -> dict[str, bytes]:
    files = {f"site/page-{i}.html": rng.randbytes(rng.randrange(0, 3000)) for i in range(60)}
    files["big/blob.bin"] = rng.randbytes(3 << 20)
    files["odd/" + "n" * 150 + ".txt"] = rng.randbytes(513)
    files["empty"] = b""
    files["sector"] = rng.randbytes(512)
    return files


def test_the_store_on_a_raw_disk_serves_every_file_byte_for_byte(tmp_path: Path) -> None:
    rng = random.Random(1)
    files = sample_files(rng)
    image = tmp_path / "site.tar"
    image.write_bytes(make_tar(files, tarfile.GNU_FORMAT))

    async def main() -> None:
        device = CountingDevice(RawDisk(str(image), read_only=True))
        try:
            store = await TarStore.open(device)
            assert len(device.reads) < 20  # headers read a window at a time
            assert sorted(store.keys()) == sorted(files)
            for name, data in files.items():
                assert name in store
                assert store.size(name) == len(data)
                device.reads.clear()
                got = await store.get(name)
                assert isinstance(got, memoryview) and got.readonly
                assert bytes(got) == data, name
                assert len(device.reads) == (1 if data else 0)  # one request a file
                offset, size = device.reads[0] if data else (0, 0)
                assert offset % 512 == 0 and size % 512 == 0
            with pytest.raises(NoSuchKey, match=r"'site/nothing\.html'") as raised:
                await store.get("site/nothing.html")
            assert isinstance(raised.value, KeyError)
            with pytest.raises(KeyError):
                store.size("site")
            assert "site" not in store and 42 not in store
        finally:
            device.close()

    syncrun(main)


def test_the_store_reads_an_archive_on_a_bigger_disk_and_many_files_at_once(
    tmp_path: Path,
) -> None:
    rng = random.Random(2)
    files = {f"f{i}": rng.randbytes(rng.randrange(1, 20000)) for i in range(100)}
    image = tmp_path / "disk.img"
    archive = make_tar(files, tarfile.USTAR_FORMAT)
    image.write_bytes(archive + bytes((4 << 20) - len(archive)))

    async def main() -> None:
        from unikernel.core.scheduler import spawn

        device = RawDisk(str(image), read_only=True)
        try:
            store = await TarStore.open(device)
            threads = {name: spawn(store.get, name) for name in files}
            for name, thread in threads.items():
                assert bytes(await thread.join()) == files[name]
        finally:
            device.close()

    syncrun(main)


def test_the_store_refuses_a_disk_that_holds_no_archive(tmp_path: Path) -> None:
    image = tmp_path / "noise.img"
    image.write_bytes(os.urandom(64 * 1024))

    async def main() -> None:
        device = RawDisk(str(image), read_only=True)
        try:
            with pytest.raises(TarFormatError):
                await TarStore.open(device)
        finally:
            device.close()

    syncrun(main)


def test_a_blank_disk_is_an_empty_store(tmp_path: Path) -> None:
    image = tmp_path / "blank.img"
    image.write_bytes(bytes(1 << 20))

    async def main() -> None:
        device = RawDisk(str(image), read_only=True)
        try:
            store = await TarStore.open(device)
            assert store.keys() == [] and len(store) == 0
        finally:
            device.close()

    syncrun(main)


def test_from_bytes_serves_slices_of_the_archive_itself() -> None:
    files = sample_files(random.Random(3))
    archive = make_tar(files, tarfile.PAX_FORMAT)
    store = TarStore.from_bytes(archive)

    async def main() -> None:
        for name, data in files.items():
            got = await store.get(name)
            assert bytes(got) == data
            assert got.obj is archive  # no copy
        with pytest.raises(NoSuchKey):
            await store.get("missing")

    syncrun(main)
