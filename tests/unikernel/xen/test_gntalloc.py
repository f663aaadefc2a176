"""/dev/xen/gntalloc: ioctl numbers and layouts, and GrantPool over a stand-in device.

There is no Xen here: a plain file stands in for the device's mmap, and a fake fcntl.ioctl
fills in ALLOC_GREF's answer as gntalloc does.
"""

from __future__ import annotations

import ctypes
import errno
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unikernel.drivers.xen import gntalloc
from unikernel.drivers.xen.gntalloc import (
    PAGE_SIZE,
    GrantPool,
    ensure_limit,
    pack_alloc_gref,
    pack_dealloc_gref,
    pack_unmap_notify,
    unpack_alloc_gref,
)


class AllocGref(ctypes.Structure):
    """struct ioctl_gntalloc_alloc_gref from <xen/gntalloc.h>."""

    _fields_ = [
        ("domid", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("count", ctypes.c_uint32),
        ("index", ctypes.c_uint64),
        ("gref_ids", ctypes.c_uint32 * 1),
    ]


class DeallocGref(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint64), ("count", ctypes.c_uint32)]


class UnmapNotify(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint64),
        ("action", ctypes.c_uint32),
        ("event_channel_port", ctypes.c_uint32),
    ]


def test_struct_layouts_are_the_reference_ones() -> None:
    assert ctypes.sizeof(AllocGref) == 24
    assert AllocGref.index.offset == 8 and AllocGref.gref_ids.offset == 16
    assert ctypes.sizeof(DeallocGref) == 16


def test_ioctl_numbers_are_the_reference_table_and_encode_the_sizes() -> None:
    assert gntalloc.IOCTL_GNTALLOC_ALLOC_GREF == 0x00184705
    assert gntalloc.IOCTL_GNTALLOC_DEALLOC_GREF == 0x00104706
    assert gntalloc.IOCTL_GNTALLOC_SET_UNMAP_NOTIFY == 0x00104707
    for number, nr, struct_type in [
        (gntalloc.IOCTL_GNTALLOC_ALLOC_GREF, 5, AllocGref),
        (gntalloc.IOCTL_GNTALLOC_DEALLOC_GREF, 6, DeallocGref),
        (gntalloc.IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, 7, UnmapNotify),
    ]:
        assert number == ctypes.sizeof(struct_type) << 16 | ord("G") << 8 | nr


@given(st.integers(0, 0x7FF0), st.integers(1, 2000), st.booleans())
def test_alloc_argument_layout(domid: int, count: int, writable: bool) -> None:
    buffer = pack_alloc_gref(domid, count, writable)
    assert isinstance(buffer, bytearray)  # the kernel writes index and grefs back into it
    assert len(buffer) == max(24, 16 + 4 * count)
    fields = AllocGref.from_buffer(buffer)
    assert (fields.domid, fields.flags, fields.count) == (domid, int(writable), count)
    assert fields.index == 0
    # What the kernel writes back, read where the struct has it.
    fields.index = 0x5000
    grefs = (ctypes.c_uint32 * count).from_buffer(buffer, AllocGref.gref_ids.offset)
    grefs[:] = [1000 + i for i in range(count)]
    assert unpack_alloc_gref(buffer, count) == (0x5000, [1000 + i for i in range(count)])


def test_an_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one page"):
        pack_alloc_gref(0, 0)


def test_dealloc_and_unmap_notify_layouts() -> None:
    dealloc = DeallocGref.from_buffer(pack_dealloc_gref(0x3000, 7))
    assert (dealloc.index, dealloc.count) == (0x3000, 7)
    assert len(pack_dealloc_gref(0, 1)) == ctypes.sizeof(DeallocGref)
    notify = UnmapNotify.from_buffer(pack_unmap_notify(0x2000, 3, 17))
    assert (notify.index, notify.action, notify.event_channel_port) == (0x2000, 3, 17)


class FakeGntalloc:
    """gntalloc's ioctls: grants `count` grefs at file offset `index`."""

    def __init__(self, index: int = 2 * PAGE_SIZE, fail: int = 0) -> None:
        self.index = index
        self.fail = fail
        self.calls: list[tuple[int, bytes]] = []

    def ioctl(self, fd: int, request: int, arg: Any = 0, mutate: bool = True) -> int:
        self.calls.append((request, bytes(arg)))
        if request == gntalloc.IOCTL_GNTALLOC_ALLOC_GREF:
            if self.fail:
                raise OSError(self.fail, "No space left on device")
            fields = AllocGref.from_buffer(arg)
            fields.index = self.index
            grefs = (ctypes.c_uint32 * fields.count).from_buffer(arg, 16)
            grefs[:] = [800 + i for i in range(fields.count)]
        return 0


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeGntalloc]:
    path = tmp_path / "gntalloc"
    path.write_bytes(bytes(8 * PAGE_SIZE))  # room for the mmap at offset `index`
    fake = FakeGntalloc()
    monkeypatch.setattr(gntalloc, "fcntl", SimpleNamespace(ioctl=fake.ioctl))
    return path, fake


def test_a_pool_maps_its_pages_and_deallocates_on_close(
    device: tuple[Path, FakeGntalloc],
) -> None:
    path, fake = device
    pool = GrantPool(3, 4, path=str(path))
    assert pool.grefs == [800, 801, 802, 803]
    assert pool.index == 2 * PAGE_SIZE
    request, argument = fake.calls[0]
    assert request == gntalloc.IOCTL_GNTALLOC_ALLOC_GREF
    assert argument[:8] == bytes(AllocGref(domid=3, flags=1, count=4))[:8]
    page = pool.page(1)
    assert len(page) == PAGE_SIZE
    page[:5] = b"hello"
    with pytest.raises(IndexError):
        pool.page(4)
    with pytest.raises(BufferError, match="release them before close"):
        pool.close()
    page.release()
    pool.close()
    pool.close()  # twice is harmless
    assert fake.calls[-1] == (gntalloc.IOCTL_GNTALLOC_DEALLOC_GREF, bytes(DeallocGref(0x2000, 4)))
    # The mapping was shared at offset `index`: the write reached the file, at page 2 + 1.
    assert path.read_bytes()[3 * PAGE_SIZE : 3 * PAGE_SIZE + 5] == b"hello"


def test_a_refused_allocation_names_the_limit_and_how_to_raise_it(
    device: tuple[Path, FakeGntalloc],
) -> None:
    path, fake = device
    fake.fail = errno.ENOSPC
    with pytest.raises(OSError) as refused:
        GrantPool(0, 2000, path=str(path))
    message = str(refused.value)
    assert refused.value.errno == errno.ENOSPC
    assert gntalloc.LIMIT_PATH in message and "xen_gntalloc.limit=" in message
    assert "ensure_limit" in message and "2000 pages to domain 0" in message


def test_ensure_limit_raises_it_only_when_needed(tmp_path: Path) -> None:
    limit = tmp_path / "limit"
    limit.write_text("1024\n")
    assert ensure_limit(600, str(limit)) == 1024
    assert limit.read_text() == "1024\n"  # untouched
    assert ensure_limit(2048, str(limit)) == 2048
    assert limit.read_text() == "2048"


def test_a_missing_device_says_why(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="CONFIG_XEN_GRANT_DEV_ALLOC"):
        GrantPool(0, 1, path=str(tmp_path / "absent"))
