"""Boot the cached specialized kernel under QEMU TCG. These tests never build a kernel: they skip
when the cache has none (fill it with `python -m unikernel.toolchain.kernel --specialized`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.artifacts import require_specialized_kernel
from unikernel.toolchain import kernel

pytestmark = pytest.mark.slow

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 180.0  # TCG on a loaded 2-core machine; a boot normally takes seconds


def cached() -> kernel.SpecializedKernel:
    require_specialized_kernel()
    found = kernel.find_specialized_kernel()
    assert found is not None
    return found


def boot(image: Path, *, append: str = "") -> str:
    """Console output of one boot, ended by the guest (panic=-1 with -no-reboot, or power-off)
    or, at the latest, by the timeout; QEMU is always killed."""
    command = [
        QEMU, "-M", "pc", "-accel", "tcg", "-m", "128", "-nographic", "-no-reboot",
        "-kernel", str(image), "-append", f"console=ttyS0 panic=-1 {append}".strip(),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output, _ = process.communicate(timeout=BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return output.decode(errors="replace")


NO_INIT = ("No working init found", "Unable to mount root fs")


@pytest.mark.parametrize("image", ["bzimage", "vmlinux"])
def test_the_kernel_boots_until_it_looks_for_init(image: str) -> None:
    """With no init anywhere, reaching the panic that says so shows the kernel boots: through the
    bzImage's setup code, or through the PVH entry of the vmlinux ELF."""
    found = cached()
    console = boot(getattr(found, image))
    assert "Linux version 6.1" in console, console[-3000:]
    assert any(message in console for message in NO_INIT), console[-3000:]


# A static init that says hello and powers off as our lifecycle module does: sysrq 'o'.
INIT_C = r"""
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>
int main(void) {
    write(1, "unibench-init: hello\n", 21);
    mount("proc", "/proc", "proc", 0, 0);
    int fd = open("/proc/sysrq-trigger", O_WRONLY);
    write(fd, "o", 1);
    sleep(30);
    return 1;
}
"""


CONSOLE = (5, 1)  # /dev/console: the kernel opens it for init's stdio before devtmpfs is mounted


def newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """An uncompressed cpio archive in the kernel's newc format, from (name, mode, data,
    (major, minor) of a device node) entries."""
    archive = bytearray()
    trailer = ("TRAILER!!!", 0, b"", (0, 0))
    for inode, (name, mode, data, rdev) in enumerate([*entries, trailer], start=1):
        encoded = name.encode() + b"\0"
        fields = [inode, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(encoded), 0]
        archive += b"070701" + b"".join(b"%08X" % field for field in fields) + encoded
        archive += b"\0" * (-len(archive) % 4) + data
        archive += b"\0" * (-len(archive) % 4)
    return bytes(archive)


def test_an_embedded_initramfs_runs_its_init_and_powers_off(tmp_path: Path) -> None:
    found = cached()
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to make a static init")
    source = tmp_path / "init.c"
    source.write_text(INIT_C)
    init = tmp_path / "init"
    subprocess.run(["gcc", "-static", "-Os", "-o", str(init), str(source)], check=True)
    archive = tmp_path / "initramfs.cpio"
    archive.write_bytes(
        newc(
            [
                ("dev", 0o40755, b"", (0, 0)),
                ("dev/console", 0o20600, b"", CONSOLE),
                ("proc", 0o40755, b"", (0, 0)),
                ("init", 0o100755, init.read_bytes(), (0, 0)),
            ]
        )
    )
    image = kernel.embed_initramfs(
        found, archive, tmp_path / "vmlinux", bzimage=tmp_path / "bzImage"
    )
    assert image == tmp_path / "vmlinux"
    assert image.stat().st_size > found.vmlinux.stat().st_size
    assert os.access(image, os.R_OK)
    # The cached tree still describes the kernel its hash names.
    assert (found.build_dir / ".config").read_text() == found.config.read_text()

    console = boot(image)
    assert "unibench-init: hello" in console, console[-3000:]
    assert "reboot: Power down" in console, console[-3000:]
