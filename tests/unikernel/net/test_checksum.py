"""The Internet checksum (RFC 1071) and the pseudo-header sum."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unikernel.net.ipv4 import checksum, mod_ffff, ones_sum, pseudo_header_sum


def reference_sum(data: bytes) -> int:
    """The one's complement sum word by word, as RFC 1071 spells it out."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_the_rfc_1071_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D


def test_a_known_ipv4_header() -> None:
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(header) == 0xB861
    assert checksum(header[:10] + b"\xb8\x61" + header[12:]) == 0


def test_odd_lengths_are_padded_with_a_zero_byte() -> None:
    assert checksum(b"\x01") == 0xFEFF
    assert checksum(b"\x12\x34\x56") == checksum(b"\x12\x34\x56\x00")


def test_all_zero_and_empty_data_sum_to_positive_zero() -> None:
    assert ones_sum(b"") == 0 and checksum(b"") == 0xFFFF
    assert ones_sum(bytes(40)) == 0 and checksum(bytes(40)) == 0xFFFF
    assert ones_sum(b"\xff\xff\xff\xff") == 0xFFFF  # negative zero, not positive


def test_memoryviews_sum_like_bytes() -> None:
    data = bytes(range(256)) * 6
    assert checksum(memoryview(data)[3:1503]) == checksum(data[3:1503])


@given(st.binary(max_size=2000))
def test_ones_sum_agrees_with_the_word_by_word_definition(data: bytes) -> None:
    assert ones_sum(data) == reference_sum(data)


@given(st.binary(max_size=300).filter(lambda b: len(b) % 2 == 0), st.binary(max_size=300))
def test_sums_of_pieces_add_up(head: bytes, tail: bytes) -> None:
    assert checksum(tail, ones_sum(head)) == checksum(head + tail)


@given(st.binary(max_size=300).filter(lambda b: len(b) % 2 == 0))
def test_data_carrying_its_checksum_verifies(data: bytes) -> None:
    sealed = data + checksum(data).to_bytes(2, "big")
    assert checksum(sealed) == 0


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(0, 255))
def test_the_pseudo_header_sum_is_the_sum_of_the_pseudo_header(
    source: bytes, destination: bytes, protocol: int
) -> None:
    length = 1234
    pseudo = source + destination + bytes((0, protocol)) + length.to_bytes(2, "big")
    assert checksum(b"", pseudo_header_sum(source, destination, protocol, length)) == checksum(
        pseudo
    )


@given(st.binary(max_size=20_000), st.booleans())
def test_mod_ffff_is_the_remainder(data: bytes, all_ones: bool) -> None:
    # Sizes across every halving step and beyond the masks; all-ones words sum to 0 mod 0xFFFF.
    value = int.from_bytes(b"\xff" * len(data) if all_ones else data, "little")
    assert mod_ffff(value) == value % 0xFFFF


def test_mod_ffff_at_the_edges_of_its_halvings() -> None:
    for bits in (0, 1, 959, 960, 961, 1920, 3841, 7680, 7681, 15360, 15361, 100_000):
        for value in ((1 << bits) - 1, 1 << bits, (1 << bits) + 0x1234):
            assert mod_ffff(value) == value % 0xFFFF
