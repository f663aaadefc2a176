"""Console, entropy and lifecycle."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest

from unikernel.core import console, entropy, lifecycle
from unikernel.core.console import Console, write_all

# Console


def test_write_all_survives_partial_writes_and_eagain() -> None:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(write_end, False)  # a full pipe now answers EAGAIN
    payload = bytes(range(256)) * 4096  # 1 MiB, 256 times the pipe
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        write_all(write_end, payload)
    finally:
        os.close(write_end)
        reader.join(timeout=60)
        os.close(read_end)
    assert bytes(received) == payload


def test_write_all_loops_over_short_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[bytes] = []

    def short_write(fd: int, data: memoryview) -> int:
        written.append(bytes(data[:3]))
        return min(3, len(data))

    monkeypatch.setattr(console.os, "write", short_write)
    write_all(99, b"0123456789")
    assert written == [b"012", b"345", b"678", b"9"]


def test_console_lines_are_utf8_with_a_newline() -> None:
    read_end, write_end = os.pipe()
    try:
        out = Console(write_end)
        out.line("héllo")
        out.line("bad \udc80 surrogate")
        out.write(b"raw")
        os.close(write_end)
        assert os.read(read_end, 100) == "héllo\nbad ? surrogate\nraw".encode()
    finally:
        os.close(read_end)


# Entropy


def test_random_bytes_have_the_length_asked_and_differ() -> None:
    assert len(entropy.random_bytes(32)) == 32
    assert entropy.random_bytes(0) == b""
    assert entropy.random_bytes(16) != entropy.random_bytes(16)


def test_random_below_stays_in_range_and_reaches_every_value() -> None:
    draws = [entropy.random_below(5) for _ in range(2000)]
    assert set(draws) == {0, 1, 2, 3, 4}
    assert entropy.random_below(1) == 0
    big = 10**30
    assert all(0 <= entropy.random_below(big) < big for _ in range(100))
    with pytest.raises(ValueError):
        entropy.random_below(0)


def test_random_u32_is_32_bits() -> None:
    values = [entropy.random_u32() for _ in range(200)]
    assert all(0 <= value < 2**32 for value in values)
    assert max(values) >= 2**31  # the top bit is used (fails with odds 2^-200)


def test_entropy_is_ready_on_a_running_host() -> None:
    assert entropy.entropy_ready() is True


# Lifecycle


def test_exit_codes() -> None:
    assert lifecycle.exit_code(None) == 0
    assert lifecycle.exit_code(ValueError()) == 1
    assert lifecycle.exit_code(KeyboardInterrupt()) == 130
    assert lifecycle.exit_code(SystemExit(3)) == 3
    assert lifecycle.exit_code(SystemExit(None)) == 0
    assert lifecycle.exit_code(SystemExit("message")) == 1


@pytest.mark.parametrize(
    ("pid", "target", "power_off"),
    [
        (1, "qemu", True),
        (1, "xen", True),
        (1, "hosted", False),  # PID 1 of a container: must never power off the host
        (4242, "qemu", False),
    ],
)
def test_only_pid_1_of_a_vm_image_powers_off(pid: int, target: str, power_off: bool) -> None:
    assert lifecycle.should_power_off(pid, target) is power_off
