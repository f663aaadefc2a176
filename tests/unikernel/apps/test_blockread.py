"""The block-read appliance's stamp checks, against data fio really wrote."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baselines.block_data import UNIT, fio_write_argv
from tests.support.netns import require
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
