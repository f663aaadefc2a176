"""The accelerator probe: the boot sector's bytes, real boots under TCG and KVM, and the cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hostkit import accel
from hostkit.accel import AccelProbe, GuestRun

needs_qemu = pytest.mark.skipif(
    shutil.which(accel.QEMU) is None, reason=f"{accel.QEMU} is not installed"
)
needs_binutils = pytest.mark.skipif(
    shutil.which("as") is None or shutil.which("ld") is None,
    reason="GNU as and ld (binutils) are not installed",
)

FULL_SERIAL = "RPL" + "." * accel.LOOP_BLOCKS


# --- The boot sector, without QEMU ---------------------------------------------------------------


def test_boot_sector_is_one_sector_with_the_boot_signature() -> None:
    sector = accel.boot_sector()
    assert len(sector) == 512
    assert sector[510:] == b"\x55\xaa"
    assert sector[0] == 0xFA  # cli: the BIOS jumps to the first byte


def test_boot_sector_holds_its_gdt_and_a_gdtr_pointing_at_it() -> None:
    sector = accel.boot_sector()
    code64 = (0x00AF9A000000FFFF).to_bytes(8, "little")  # L=1, D=0: a 64-bit code segment
    gdt_offset = sector.index(code64) - 3 * 8  # null, code32 and data come first
    gdtr = sector[gdt_offset + 4 * 8 : gdt_offset + 4 * 8 + 6]
    assert int.from_bytes(gdtr[:2], "little") == 4 * 8 - 1
    assert int.from_bytes(gdtr[2:], "little") == accel.BOOT_ADDRESS + gdt_offset


def test_boot_sector_is_deterministic() -> None:
    assert accel.boot_sector() == accel.boot_sector()


@needs_binutils
def test_boot_sector_bytes_match_their_assembly_text(tmp_path: Path) -> None:
    """The assembly beside each instruction is what GNU as makes of it, byte for byte."""
    source, obj, binary = tmp_path / "boot.s", tmp_path / "boot.o", tmp_path / "boot.bin"
    source.write_text(accel.boot_sector_assembly())
    subprocess.run(["as", "--64", "-o", obj, source], check=True)
    link = ["ld", "-m", "elf_x86_64", "-e", "start", "-Ttext=0x7c00", "--oformat", "binary"]
    subprocess.run([*link, "-o", binary, obj], check=True)
    assert binary.read_bytes() == accel.boot_sector()


# --- Real boots ----------------------------------------------------------------------------------


@needs_qemu
def test_tcg_boot_reaches_long_mode_and_exits_with_the_expected_status() -> None:
    run = accel.boot_test_guest("tcg", timeout=60)
    assert run.exit_status == accel.EXPECTED_EXIT_STATUS == (0x21 << 1) | 1
    assert run.serial == FULL_SERIAL
    times = [at for _, at in run.marks]
    assert times == sorted(times)
    assert run.passed


@needs_qemu
def test_probe_tcg_says_the_guest_works() -> None:
    probe = accel.probe_tcg()
    assert probe.accel == "tcg"
    assert probe.works, probe.reason
    assert 0 < probe.seconds < 30


@needs_qemu
def test_a_guest_past_its_timeout_is_killed_reaped_and_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images: list[Path] = []
    real_command = accel.qemu_command

    def recording_command(name: str, image: Path, serial: Path) -> list[str]:
        images.append(image)
        return real_command(name, image, serial)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(accel, "qemu_command", recording_command)
    children_before = set(psutil.Process().children())
    started = time.perf_counter()
    run = accel.boot_test_guest("tcg", timeout=0.01)  # far too short for even the BIOS
    assert time.perf_counter() - started < 10
    assert run.timed_out
    assert not run.passed
    # No QEMU left running or unreaped (other children, such as an engine, are not ours).
    assert set(psutil.Process().children()) - children_before == set()
    (image,) = images
    assert image.parent.parent == tmp_path
    assert not image.parent.exists()  # image, serial log and stderr removed


@needs_qemu
@pytest.mark.slow
def test_probe_kvm_returns_in_time_with_a_verdict_matching_what_the_guest_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[GuestRun] = []
    real_boot = accel.boot_test_guest

    def spy(name: str, timeout: float) -> GuestRun:
        runs.append(real_boot(name, timeout))
        return runs[-1]

    monkeypatch.setattr(accel, "boot_test_guest", spy)
    timeout = 8.0
    started = time.perf_counter()
    probe = accel.probe_kvm(timeout=timeout)
    assert time.perf_counter() - started < timeout + 15
    assert probe.accel == "kvm"
    if not runs:  # no usable /dev/kvm: said without booting
        assert not probe.works
        assert "/dev/kvm" in probe.reason
        assert probe.seconds == 0
        return
    (run,) = runs
    assert probe.works == (run.exit_status == accel.EXPECTED_EXIT_STATUS)
    assert probe.works == (run.serial == FULL_SERIAL)
    assert probe.seconds <= timeout + 5
    if not probe.works:
        assert probe.reason.endswith("TCG will be used")
        if run.timed_out and run.reached(accel.MARK_LONG) is not None:
            assert "after entering long mode" in probe.reason


def test_probe_kvm_without_dev_kvm_does_not_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_boot(name: str, timeout: float) -> GuestRun:
        raise AssertionError("booted a guest without /dev/kvm")

    monkeypatch.setattr(accel, "KVM_DEVICE", Path("/nonexistent/kvm"))
    monkeypatch.setattr(accel, "boot_test_guest", no_boot)
    probe = accel.probe_kvm()
    assert not probe.works
    assert probe.seconds == 0
    assert "/nonexistent/kvm does not exist" in probe.reason
    assert probe.fix is not None


# --- The cached choice ---------------------------------------------------------------------------


@pytest.fixture
def fake_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """probe_kvm replaced by a counter that says KVM works; the cache in tmp_path."""
    calls: list[float] = []

    def probe(timeout: float = 10.0) -> AccelProbe:
        calls.append(timeout)
        return AccelProbe("kvm", True, 0.5, "fake")

    monkeypatch.setenv("UNIBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "probe_kvm", probe)
    monkeypatch.setattr(accel, "_cache_key", lambda: "6.1.0 | QEMU 7.2")
    accel.forget_verdict()
    yield calls
    accel.forget_verdict()


def test_choose_accel_probes_once_per_process(fake_probe: list[float]) -> None:
    assert accel.choose_accel() == "kvm"
    assert accel.choose_accel() == "kvm"
    assert len(fake_probe) == 1


def test_choose_accel_says_tcg_when_kvm_fails(
    fake_probe: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "probe_kvm", lambda: AccelProbe("kvm", False, 8.0, "hung"))
    assert accel.choose_accel() == "tcg"


def test_the_cache_file_spares_the_next_process_a_probe(fake_probe: list[float]) -> None:
    accel.choose_accel()
    accel.forget_verdict()  # as if a new process started
    assert accel.kvm_verdict() == AccelProbe("kvm", True, 0.5, "fake")
    assert len(fake_probe) == 1
    assert json.loads(accel.cache_file().read_text())["key"] == "6.1.0 | QEMU 7.2"


def test_a_stale_cache_entry_is_probed_again(fake_probe: list[float]) -> None:
    accel.choose_accel()
    entry = json.loads(accel.cache_file().read_text())
    entry["checked_at"] -= accel.CACHE_TTL + 60
    accel.cache_file().write_text(json.dumps(entry))
    accel.forget_verdict()
    accel.choose_accel()
    assert len(fake_probe) == 2


def test_a_new_kernel_or_qemu_is_probed_again(
    fake_probe: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    accel.choose_accel()
    accel.forget_verdict()
    monkeypatch.setattr(accel, "_cache_key", lambda: "6.1.0 | QEMU 8.0")
    accel.choose_accel()
    assert len(fake_probe) == 2


def test_an_unwritable_cache_only_costs_probes(
    fake_probe: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("UNIBENCH_CACHE", str(blocker))
    assert accel.choose_accel() == "kvm"
    accel.forget_verdict()
    assert accel.choose_accel() == "kvm"
    assert len(fake_probe) == 2
