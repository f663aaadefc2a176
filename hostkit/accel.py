"""Which QEMU accelerator to use here: KVM when a test guest really runs under it, else TCG.

`/dev/kvm` existing is not enough. Under nested KVM a guest can seem to hang once in long mode: on
the machines this was written on it is not stuck but crawls, running guest code some 1000 times
slower than TCG in every CPU mode, so a Linux kernel never gets through its decompressor. So we
boot a tiny guest of our own (a 512-byte boot sector that climbs from real mode to long mode, does
a fixed amount of work and ends QEMU through `isa-debug-exit`) with a short timeout, and trust KVM
only if the guest gets to the end. The guest writes a letter to the serial port at each step, so a
failure can say where it stopped.

The boot sector is emitted from Python, so no assembler is needed at run time. Each instruction is
listed with its GNU `as` text (Intel syntax) beside its bytes; the tests assemble that text with
binutils, when present, and check that it gives the same bytes.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hostkit import cache

QEMU = "qemu-system-x86_64"
KVM_DEVICE = Path("/dev/kvm")

# isa-debug-exit ends QEMU with status (value << 1) | 1 when the guest writes value to its port.
DEBUG_EXIT_PORT = 0xF4
LONG_MODE_EXIT_VALUE = 0x21  # written only by 64-bit code, computed with 64-bit registers
NO_LONG_MODE_EXIT_VALUE = 0x02  # written when CPUID says the virtual CPU has no long mode
EXPECTED_EXIT_STATUS = (LONG_MODE_EXIT_VALUE << 1) | 1  # 67
NO_LONG_MODE_EXIT_STATUS = (NO_LONG_MODE_EXIT_VALUE << 1) | 1  # 5

# Characters the guest writes to COM1 (port 0x3f8) as it goes: boot sector running, protected
# mode, long mode, then one "." per block of work; the exit write comes last.
MARK_BOOT, MARK_PROTECTED, MARK_LONG, MARK_BLOCK = "R", "P", "L", "."

# The work done in long mode before exiting: 16 Mi iterations of a two-instruction loop take about
# 10 ms at native speed and 0.1 s under TCG, so a timeout of seconds leaves a wide margin.
LOOP_BLOCKS = 16
LOOP_BLOCK_ITERATIONS = 1 << 20

BOOT_ADDRESS = 0x7C00  # where the BIOS loads the boot sector
SECTOR_SIZE = 512

# ---------------------------------------------------------------------------------------------
# A tiny assembler: just enough to lay out the boot sector and resolve its few label references.


@dataclass(frozen=True)
class _Ref:
    """A label's address, filled in once the layout is known."""

    label: str
    kind: str  # "rel8": signed offset from the end of the instruction; "abs16"/"abs32": address

    @property
    def size(self) -> int:
        return {"rel8": 1, "abs16": 2, "abs32": 4}[self.kind]


@dataclass(frozen=True)
class _Insn:
    asm: str  # GNU as, Intel syntax, exactly what the bytes encode
    parts: tuple[bytes | _Ref, ...]

    @property
    def size(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.size for p in self.parts)


@dataclass(frozen=True)
class _Label:
    name: str


@dataclass(frozen=True)
class _Bits:
    width: int  # 16, 32 or 64: how the CPU decodes what follows (`.codeNN` for as)


_Item = _Insn | _Label | _Bits


def _i(asm: str, *parts: bytes | _Ref) -> _Insn:
    return _Insn(asm, parts)


def _quad(value: int) -> _Insn:
    return _Insn(f".quad {value:#018x}", (value.to_bytes(8, "little"),))


# Page tables live in free low memory (0x500..0x7bff is free once the BIOS hands over).
PML4, PDPT, PD = 0x1000, 0x2000, 0x3000
PRESENT_WRITABLE, HUGE_PAGE = 0x3, 0x80

_PROGRAM: tuple[_Item, ...] = (
    _Bits(16),
    _Label("start"),
    _i("cli", b"\xfa"),  # no interrupt handlers exist in any mode we enter
    _i("xor ax, ax", b"\x31\xc0"),
    _i("mov ds, ax", b"\x8e\xd8"),  # SeaBIOS jumps to 0:7c00, but DS is not promised
    _i("mov dx, 0x3f8", b"\xba\xf8\x03"),  # COM1 data register
    _i("mov al, 0x52", b"\xb0\x52"),  # 'R': our code runs
    _i("out dx, al", b"\xee"),
    # Does the virtual CPU have long mode? CPUID 0x80000001, EDX bit 29.
    _i("mov eax, 0x80000000", b"\x66\xb8\x00\x00\x00\x80"),
    _i("cpuid", b"\x0f\xa2"),
    _i("cmp eax, 0x80000001", b"\x66\x3d\x01\x00\x00\x80"),
    _i("jb no_long_mode", b"\x72", _Ref("no_long_mode", "rel8")),
    _i("mov eax, 0x80000001", b"\x66\xb8\x01\x00\x00\x80"),
    _i("cpuid", b"\x0f\xa2"),
    _i("bt edx, 29", b"\x66\x0f\xba\xe2\x1d"),
    _i("jnc no_long_mode", b"\x73", _Ref("no_long_mode", "rel8")),
    # Protected mode: load the GDT, set CR0.PE, far jump to reload CS with the 32-bit segment.
    _i("lgdt [gdtr]", b"\x0f\x01\x16", _Ref("gdtr", "abs16")),
    _i("mov eax, cr0", b"\x0f\x20\xc0"),
    _i("or al, 1", b"\x0c\x01"),
    _i("mov cr0, eax", b"\x0f\x22\xc0"),
    _i("jmp 0x08:protected_mode", b"\xea", _Ref("protected_mode", "abs16"), b"\x08\x00"),
    _Label("no_long_mode"),
    _i(f"mov al, {NO_LONG_MODE_EXIT_VALUE:#x}", bytes([0xB0, NO_LONG_MODE_EXIT_VALUE])),
    _i(f"out {DEBUG_EXIT_PORT:#x}, al", bytes([0xE6, DEBUG_EXIT_PORT])),
    _Label("halt16"),
    _i("hlt", b"\xf4"),
    _i("jmp halt16", b"\xeb", _Ref("halt16", "rel8")),
    _Bits(32),
    _Label("protected_mode"),
    _i("mov ax, 0x10", b"\x66\xb8\x10\x00"),  # flat data segment
    _i("mov ds, ax", b"\x8e\xd8"),
    _i("mov es, ax", b"\x8e\xc0"),
    _i("mov ss, ax", b"\x8e\xd0"),
    _i("mov edx, 0x3f8", b"\xba\xf8\x03\x00\x00"),  # CPUID overwrote EDX
    _i("mov al, 0x50", b"\xb0\x50"),  # 'P': protected mode
    _i("out dx, al", b"\xee"),
    # Identity-map the first 2 MiB with one huge page: PML4[0] -> PDPT[0] -> PD[0] = 2 MiB at 0.
    _i("cld", b"\xfc"),
    _i(f"mov edi, {PML4:#x}", b"\xbf" + PML4.to_bytes(4, "little")),
    _i("xor eax, eax", b"\x31\xc0"),
    _i("mov ecx, 0xc00", b"\xb9\x00\x0c\x00\x00"),  # three 4 KiB tables, in dwords
    _i("rep stosd", b"\xf3\xab"),
    _i(
        f"mov dword ptr [{PML4:#x}], {PDPT | PRESENT_WRITABLE:#x}",
        b"\xc7\x05" + PML4.to_bytes(4, "little") + (PDPT | PRESENT_WRITABLE).to_bytes(4, "little"),
    ),
    _i(
        f"mov dword ptr [{PDPT:#x}], {PD | PRESENT_WRITABLE:#x}",
        b"\xc7\x05" + PDPT.to_bytes(4, "little") + (PD | PRESENT_WRITABLE).to_bytes(4, "little"),
    ),
    _i(
        f"mov dword ptr [{PD:#x}], {HUGE_PAGE | PRESENT_WRITABLE:#x}",
        b"\xc7\x05"
        + PD.to_bytes(4, "little")
        + (HUGE_PAGE | PRESENT_WRITABLE).to_bytes(4, "little"),
    ),
    # Long mode: CR4.PAE, CR3 = PML4, EFER.LME, then CR0.PG activates it.
    _i("mov eax, cr4", b"\x0f\x20\xe0"),
    _i("or eax, 0x20", b"\x83\xc8\x20"),  # CR4.PAE
    _i("mov cr4, eax", b"\x0f\x22\xe0"),
    _i(f"mov eax, {PML4:#x}", b"\xb8" + PML4.to_bytes(4, "little")),
    _i("mov cr3, eax", b"\x0f\x22\xd8"),
    _i("mov ecx, 0xc0000080", b"\xb9\x80\x00\x00\xc0"),  # the EFER MSR
    _i("rdmsr", b"\x0f\x32"),
    _i("or eax, 0x100", b"\x0d\x00\x01\x00\x00"),  # EFER.LME
    _i("wrmsr", b"\x0f\x30"),
    _i("mov eax, cr0", b"\x0f\x20\xc0"),
    _i("or eax, 0x80000000", b"\x0d\x00\x00\x00\x80"),  # CR0.PG
    _i("mov cr0, eax", b"\x0f\x22\xc0"),
    _i("jmp 0x18:long_mode", b"\xea", _Ref("long_mode", "abs32"), b"\x18\x00"),
    _Bits(64),
    _Label("long_mode"),
    _i("mov dx, 0x3f8", b"\x66\xba\xf8\x03"),  # RDMSR overwrote EDX
    _i("mov al, 0x4c", b"\xb0\x4c"),  # 'L': long mode
    _i("out dx, al", b"\xee"),
    # A fixed amount of work, one '.' per block: a broken KVM does not "hang" but crawls (nested
    # KVM here runs guest code some 1000x slower than TCG), so the probe must ask for real work.
    _i(f"mov ecx, {LOOP_BLOCKS}", b"\xb9" + LOOP_BLOCKS.to_bytes(4, "little")),
    _Label("block"),
    _i(
        f"mov eax, {LOOP_BLOCK_ITERATIONS:#x}",
        b"\xb8" + LOOP_BLOCK_ITERATIONS.to_bytes(4, "little"),
    ),
    _Label("spin"),
    _i("dec rax", b"\x48\xff\xc8"),
    _i("jnz spin", b"\x75", _Ref("spin", "rel8")),
    _i("mov al, 0x2e", b"\xb0\x2e"),  # '.': one block done
    _i("out dx, al", b"\xee"),
    _i("dec ecx", b"\xff\xc9"),
    _i("jnz block", b"\x75", _Ref("block", "rel8")),
    # The exit value comes out of 64-bit arithmetic on a register that only exists in long mode,
    # so the expected exit status proves that 64-bit code ran.
    _i(
        f"movabs rax, {LONG_MODE_EXIT_VALUE << 56:#x}",
        b"\x48\xb8" + (LONG_MODE_EXIT_VALUE << 56).to_bytes(8, "little"),
    ),
    _i("mov r8, rax", b"\x49\x89\xc0"),
    _i("shr r8, 56", b"\x49\xc1\xe8\x38"),
    _i("mov eax, r8d", b"\x44\x89\xc0"),
    _i(f"out {DEBUG_EXIT_PORT:#x}, al", bytes([0xE6, DEBUG_EXIT_PORT])),
    _Label("halt64"),
    _i("hlt", b"\xf4"),
    _i("jmp halt64", b"\xeb", _Ref("halt64", "rel8")),
    # GDT: null, flat 32-bit code (0x08), flat data (0x10), 64-bit code (0x18, L=1 D=0).
    _Label("gdt"),
    _quad(0),
    _quad(0x00CF9A000000FFFF),
    _quad(0x00CF92000000FFFF),
    _quad(0x00AF9A000000FFFF),
    _Label("gdtr"),
    _i(".word 31", b"\x1f\x00"),  # limit: four 8-byte descriptors, minus one
    _i(".long gdt", _Ref("gdt", "abs32")),
)


def _layout(program: tuple[_Item, ...]) -> dict[str, int]:
    labels: dict[str, int] = {}
    address = BOOT_ADDRESS
    for item in program:
        if isinstance(item, _Label):
            labels[item.name] = address
        elif isinstance(item, _Insn):
            address += item.size
    return labels


def boot_sector() -> bytes:
    """The test guest: 512 bytes ending in the 0x55 0xAA boot signature."""
    labels = _layout(_PROGRAM)
    code = bytearray()
    for item in _PROGRAM:
        if not isinstance(item, _Insn):
            continue
        end = BOOT_ADDRESS + len(code) + item.size
        for part in item.parts:
            if isinstance(part, bytes):
                code += part
            elif part.kind == "rel8":
                code += (labels[part.label] - end).to_bytes(1, "little", signed=True)
            else:
                code += labels[part.label].to_bytes(part.size, "little")
    if len(code) > SECTOR_SIZE - 2:
        raise AssertionError(f"boot sector code is {len(code)} bytes, more than fits")
    return bytes(code.ljust(SECTOR_SIZE - 2, b"\0")) + b"\x55\xaa"


def boot_sector_assembly() -> str:
    """The same program as GNU as source, to be linked at 0x7c00 (used by the tests)."""
    lines = [".intel_syntax noprefix"]
    for item in _PROGRAM:
        if isinstance(item, _Bits):
            lines.append(f".code{item.width}")
        elif isinstance(item, _Label):
            lines.append(f"{item.name}:")
        else:
            lines.append(f"    {item.asm}")
    lines += [f".org {SECTOR_SIZE - 2}", ".byte 0x55, 0xaa", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Booting it.


@dataclass(frozen=True)
class GuestRun:
    """What one boot of the test guest did."""

    accel: str
    exit_status: int | None  # None when QEMU was killed at the timeout
    marks: tuple[tuple[str, float], ...]  # each serial character, with seconds since QEMU started
    stderr: str
    seconds: float

    @property
    def serial(self) -> str:
        return "".join(char for char, _ in self.marks)

    @property
    def timed_out(self) -> bool:
        return self.exit_status is None

    @property
    def blocks_done(self) -> int:
        return self.serial.count(MARK_BLOCK)

    def reached(self, mark: str) -> float | None:
        """When the guest wrote mark, or None if it never did."""
        return next((at for char, at in self.marks if char == mark), None)

    @property
    def passed(self) -> bool:
        return (
            self.exit_status == EXPECTED_EXIT_STATUS
            and self.serial == MARK_BOOT + MARK_PROTECTED + MARK_LONG + MARK_BLOCK * LOOP_BLOCKS
        )


def qemu_command(accel: str, image: Path, serial: Path) -> list[str]:
    return [
        QEMU,
        "-accel",
        accel,
        "-M",
        "pc",
        "-m",
        "16",
        "-display",
        "none",
        "-nodefaults",  # no NIC, no VGA, no CD-ROM, no monitor
        "-no-reboot",  # a triple fault ends QEMU instead of rebooting forever
        "-serial",
        f"file:{serial}",
        "-device",
        f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04",
        "-drive",
        f"if=ide,format=raw,file={image}",
    ]


POLL_INTERVAL = 0.01  # how often the serial file is read: the error on each mark's time


def boot_test_guest(accel: str, timeout: float) -> GuestRun:
    """Boot the test guest under accel; kill QEMU if it has not exited after timeout seconds."""
    with tempfile.TemporaryDirectory(prefix="unibench-accel-") as scratch:
        image, serial, stderr = (Path(scratch) / n for n in ("boot.img", "serial.txt", "stderr"))
        image.write_bytes(boot_sector())
        marks: list[tuple[str, float]] = []
        with stderr.open("wb") as stderr_file:
            started = time.perf_counter()
            process = subprocess.Popen(
                qemu_command(accel, image, serial),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
            )
            try:
                # Poll rather than wait, to time each mark: that says where a slow guest spent it.
                while process.poll() is None and time.perf_counter() - started < timeout:
                    _note_marks(serial, marks, time.perf_counter() - started)
                    time.sleep(POLL_INTERVAL)
            finally:
                killed = process.poll() is None
                if killed:
                    process.kill()
                status = process.wait()  # reaped on every path, including KeyboardInterrupt
            seconds = time.perf_counter() - started
        _note_marks(serial, marks, seconds)
        return GuestRun(
            accel=accel,
            exit_status=None if killed else status,
            marks=tuple(marks),
            stderr=_read_text(stderr).strip(),
            seconds=seconds,
        )


def _note_marks(serial: Path, marks: list[tuple[str, float]], now: float) -> None:
    text = _read_text(serial)
    marks.extend((char, now) for char in text[len(marks) :])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------------------------------------
# Verdicts.


@dataclass(frozen=True)
class AccelProbe:
    accel: str
    works: bool
    seconds: float
    reason: str
    fix: str | None = None


def probe_kvm(timeout: float = 10.0) -> AccelProbe:
    """Whether the test guest reaches long mode and does its work under KVM, by a real boot."""
    if not KVM_DEVICE.exists():
        return AccelProbe(
            "kvm",
            False,
            0.0,
            f"{KVM_DEVICE} does not exist: no KVM on this host; TCG will be used",
            "load kvm_intel or kvm_amd, with virtualisation enabled in the firmware "
            "(or nested virtualisation exposed by the outer hypervisor)",
        )
    try:
        os.close(os.open(KVM_DEVICE, os.O_RDWR))
    except OSError as error:
        return AccelProbe(
            "kvm",
            False,
            0.0,
            f"cannot open {KVM_DEVICE}: {error.strerror}; TCG will be used",
            f"add this user to the group owning {KVM_DEVICE} (usually kvm)",
        )
    return _probe("kvm", timeout)


def probe_tcg(timeout: float = 30.0) -> AccelProbe:
    """The same test boot under TCG: shows that the guest itself is sound."""
    return _probe("tcg", timeout)


def _probe(accel: str, timeout: float) -> AccelProbe:
    if shutil.which(QEMU) is None:
        return AccelProbe(accel, False, 0.0, f"{QEMU} not found", "apt-get install qemu-system-x86")
    run = boot_test_guest(accel, timeout)
    fallback = "; TCG will be used" if accel == "kvm" else ""
    if run.passed:
        return AccelProbe(
            accel, True, run.seconds, f"{accel.upper()} guest reached long mode, worked and exited"
        )
    if run.exit_status == NO_LONG_MODE_EXIT_STATUS:
        reason = f"{accel.upper()} guest's CPU has no long mode{fallback}"
        return AccelProbe(accel, False, run.seconds, reason)
    if not run.timed_out:
        detail = run.stderr.splitlines()[-1] if run.stderr else "no message"
        if run.exit_status == 0:
            detail = "the guest reset itself, probably a triple fault"
        reason = f"QEMU exited with status {run.exit_status} ({detail}) after serial output "
        return AccelProbe(accel, False, run.seconds, f"{reason}{run.serial!r}{fallback}")
    nested = accel == "kvm" and _host_is_virtual()
    return AccelProbe(
        accel,
        False,
        run.seconds,
        f"{accel.upper()} guest {_where_it_stopped(run)}"
        + (": nested KVM on this host" if nested else "")
        + fallback,
        "run on bare metal, or under an outer hypervisor whose nested KVM runs guests at speed"
        if nested
        else None,
    )


def _where_it_stopped(run: GuestRun) -> str:
    long_mode = run.reached(MARK_LONG)
    if long_mode is not None:
        return (
            f"hung after entering long mode (at {long_mode:.1f} s): it then ran only "
            f"{run.blocks_done} of {LOOP_BLOCKS} blocks of 2^20 loop iterations in "
            f"{run.seconds - long_mode:.1f} s, where TCG runs all {LOOP_BLOCKS} in about 0.1 s"
        )
    for mark, stage in ((MARK_PROTECTED, "protected mode"), (MARK_BOOT, "the boot sector")):
        at = run.reached(mark)
        if at is not None:
            return f"hung after reaching {stage} (at {at:.1f} s), before long mode"
    return f"had not reached the boot sector after {run.seconds:.1f} s (still in the BIOS)"


def _host_is_virtual() -> bool:
    """The CPUID hypervisor bit: this host is itself a guest, so KVM here is nested."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo, re.MULTILINE) is not None


# ---------------------------------------------------------------------------------------------
# The choice, probed once per process and remembered on disk for a day.

CACHE_TTL = 24 * 3600.0
_process_verdict: AccelProbe | None = None


def choose_accel() -> str:
    """ "kvm" if a test guest runs under KVM here, else "tcg"."""
    return "kvm" if kvm_verdict().works else "tcg"


def kvm_verdict() -> AccelProbe:
    """probe_kvm's verdict, from this process's memory, the cache file, or a fresh probe."""
    global _process_verdict
    if _process_verdict is None:
        key = _cache_key()
        _process_verdict = _read_cache(key)
        if _process_verdict is None:
            _process_verdict = probe_kvm()
            _write_cache(key, _process_verdict)
    return _process_verdict


def forget_verdict() -> None:
    """Drop the remembered verdict (this process's only; the file expires by itself)."""
    global _process_verdict
    _process_verdict = None


def cache_file() -> Path:
    return cache.root() / "accel.json"


def _cache_key() -> str:
    try:
        done = subprocess.run(
            [QEMU, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        qemu = done.stdout.splitlines()[0] if done.stdout else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        qemu = "missing"
    return f"{platform.release()} | {qemu}"


def _read_cache(key: str) -> AccelProbe | None:
    try:
        entry = json.loads(cache_file().read_text())
        if entry["key"] != key or not 0 <= time.time() - entry["checked_at"] < CACHE_TTL:
            return None
        return AccelProbe(**entry["verdict"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, stale or unreadable: probe again


def _write_cache(key: str, verdict: AccelProbe) -> None:
    path = cache_file()
    entry = {"key": key, "checked_at": time.time(), "verdict": asdict(verdict)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entry, indent=2) + "\n")
        temporary.replace(path)  # readers never see half a file
    except OSError:
        pass  # the cache only saves time; without it every process probes
