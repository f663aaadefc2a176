"""The block-read appliance's stamp checks, against data fio really wrote."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baselines.block_data import UNIT, fio_write_argv
from tests.support.netns import require
from unikernel.apps.blockread import stamps
from unikernel.apps.blockread.appliance import Settings
from unikernel.apps.blockread.stamps import check_block, check_unit


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    require("fio")
    path = tmp_path_factory.mktemp("stamped") / "data.img"
    subprocess.run(fio_write_argv(path, 1), check=True, capture_output=True)
    return path.read_bytes()


def test_every_unit_fio_wrote_passes_at_its_own_offset(stamped: bytes) -> None:
    view = memoryview(stamped)
    assert len(stamped) == 1 << 20
    for offset in range(0, len(stamped), UNIT):
        assert check_unit(view[offset : offset + UNIT], offset) is None


def test_a_unit_read_from_elsewhere_is_caught(stamped: bytes) -> None:
    view = memoryview(stamped)
    problem = check_unit(view[4 * UNIT : 5 * UNIT], 7 * UNIT)
    assert problem is not None and f"written at {4 * UNIT}" in problem


def test_zeros_are_no_unit() -> None:
    problem = check_block(memoryview(bytes(4 * UNIT)), 0)
    assert problem is not None and "no md5 verify header" in problem


def test_a_block_is_checked_at_both_ends(stamped: bytes) -> None:
    block = bytearray(stamped[: 8 * UNIT])
    assert check_block(memoryview(block), 0) is None
    block[-1] ^= 0x01  # the last unit's data, which its checksum covers
    problem = check_block(memoryview(block), 0)
    assert problem is not None and f"unit at {7 * UNIT}" in problem


def test_over_many_reads_every_unit_in_between_is_looked_at(
    stamped: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Besides the ends, each read looks at one unit in between, which moves with the offset:
    over a run's reads every one is looked at, so pages put out of order by a driver's wrong
    scatter list are caught, whichever they are."""
    size = 64 * UNIT
    looked: list[int] = []
    monkeypatch.setattr(stamps, "check_unit", lambda unit, at: looked.append(at))
    inner = set()
    for k in range(2000):
        looked.clear()
        assert check_block(memoryview(bytes(size)), k * size) is None
        first, last, middle = looked
        assert (first, last) == (k * size, k * size + size - UNIT)
        inner.add(middle - k * size)
    assert inner == {u * UNIT for u in range(1, 63)}
    monkeypatch.undo()
    # On fio's data: two pages of a block swapped, one of them where that offset's read looks.
    block = bytearray(stamped[:size])
    looked.clear()
    monkeypatch.setattr(stamps, "check_unit", lambda unit, at: looked.append(at))
    check_block(memoryview(block), 0)
    monkeypatch.undo()
    page = looked[2] // 4096 * 4096  # the page holding the unit looked at
    other = 4096 if page != 4096 else 8192
    block[page : page + 4096], block[other : other + 4096] = (
        block[other : other + 4096],
        block[page : page + 4096],
    )
    assert check_block(memoryview(block), 0) is not None
    assert check_block(memoryview(bytearray(stamped[:size])), 0) is None


@given(position=st.integers(0, UNIT - 1), bit=st.integers(0, 7))
def test_any_flipped_bit_outside_the_unchecked_header_fields_is_caught(
    stamped: bytes, position: int, bit: int
) -> None:
    unit = bytearray(stamped[3 * UNIT : 4 * UNIT])
    unit[position] ^= 1 << bit
    # Bytes 8-15 (fio's random seed) and 24-39 (time, thread, number, header CRC) we do not
    # check: they say nothing about where the unit is or whether its data is whole.
    unchecked = range(8, 16).__contains__(position) or 24 <= position < 40
    assert (check_unit(memoryview(unit), 3 * UNIT) is None) == unchecked


@given(data=st.binary(min_size=UNIT, max_size=UNIT), offset=st.integers(0, 1 << 40))
def test_random_bytes_are_reported_never_raised(data: bytes, offset: int) -> None:
    assert check_unit(memoryview(data), offset) is not None


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"UNIBENCH_MODE": "cached"}, "direct or buffered"),
        ({"UNIBENCH_BLOCK_SIZE": "1500"}, "multiple of 1024"),
        ({"UNIBENCH_DEPTH": "0"}, "UNIBENCH_DEPTH is 1 to 1024"),
    ],
)
def test_bad_settings_say_what_to_change(environ: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Settings(environ)
