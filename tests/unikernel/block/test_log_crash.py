"""Crash consistency with real kills: a writer (crash_workload.py) runs the log store, hosted as
a child process and as a unikernel under QEMU, printing "ACK n" once each write returned; we
kill it with SIGKILL at random moments, reopen the disk, and check that every acknowledged write
is there (or a later write of the same key) and that no value was never written."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from tests.support.stores import log_store_contents
from unikernel.block.log_format import Superblock
from unikernel.core.scheduler import run

from . import crash_workload
from .crash_workload import ACK, THREADS, problems

ROOT = Path(__file__).resolve().parents[3]
KILLS = 24
DISK_BYTES = 512 << 10  # regions of ~250 KiB: compactions every hundred or so writes


def contents(path: Path) -> dict[bytes, bytes]:
    """What the store on `path` holds, read without changing it: nothing if a kill came
    before its format was written."""
    with path.open("rb") as file:
        head = file.read(1024)
    if Superblock.decode(head[:512]) is None and Superblock.decode(head[512:]) is None:
        return {}

    return run(log_store_contents, str(path), True)


class Acks:
    """The ACK lines of one run, read from its output as they come."""

    def __init__(self, output: IO[bytes]) -> None:
        self.numbers: list[int] = []
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._thread = threading.Thread(target=self._read, args=(output,), daemon=True)
        self._thread.start()

    def _read(self, output: IO[bytes]) -> None:
        for raw in iter(output.readline, b""):
            line = raw.decode(errors="replace").strip()
            with self._changed:
                self.lines.append(line)
                if line.startswith(ACK) and line[len(ACK) :].isdigit():
                    self.numbers.append(int(line[len(ACK) :]))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Whether `count` ACKs came within `timeout` seconds (False if the output ended)."""
        with self._changed:
            return (
                self._changed.wait_for(lambda: len(self.numbers) >= count or self._ended, timeout)
                and len(self.numbers) >= count
            )

    def finish(self) -> list[int]:
        """Every ACK, once the process is gone and its output drained."""
        self._thread.join(timeout=30)
        return list(self.numbers)


class History:
    """What the kills so far acknowledged, and how far any run could have got."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.attempted_below = 0

    @property
    def next_start(self) -> int:
        return max(self.acked, default=-1) + 1

    def add(self, start: int, acked: list[int]) -> None:
        self.acked += acked
        # Each thread has at most one operation under way past its last ACK.
        reach = max([start - 1, *acked]) + THREADS + 1
        self.attempted_below = max(self.attempted_below, reach)

    def check(self, disk: Path, said: str) -> None:
        found = problems(contents(disk), self.acked, self.attempted_below)
        assert not found, f"{said}: " + "; ".join(found[:10])


def kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_acknowledged_writes_survive_sigkill_of_a_hosted_writer(tmp_path: Path) -> None:
    disk = tmp_path / "store.img"
    with disk.open("wb") as blank:
        blank.truncate(DISK_BYTES)
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    history = History()
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    deadline = time.monotonic() + 120
    for kill in range(KILLS):
        assert time.monotonic() < deadline, f"seed {seed}: {kill} kills took too long"
        start = history.next_start
        errors = tmp_path / f"stderr-{kill}.txt"
        with errors.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, crash_workload.__file__, str(disk), str(start)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                env=environment,
                start_new_session=True,
            )
        try:
            assert process.stdout is not None
            acks = Acks(process.stdout)
            if kill % 3 == 0:
                # Anywhere: starting up, opening (formatting, recovering) or writing.
                time.sleep(rng.uniform(0.0, 0.4))
            else:
                target = rng.randrange(1, 300)
                assert acks.wait_for(target, 30) or process.poll() is None, errors.read_text()
                time.sleep(rng.uniform(0.0, 0.02))
        finally:
            kill_group(process)
        assert process.returncode == -signal.SIGKILL, errors.read_text()
        acked = acks.finish()
        history.add(start, acked)
        history.check(disk, f"seed {seed}, kill {kill} (start {start}, {len(acked)} ACKs)")
    assert len(history.acked) > 1000, f"seed {seed}: too few writes to prove much"


# The same under QEMU.

APP_MAIN = """
import os

from crash_workload import write_forever
from unikernel.block.log_format import Superblock
from unikernel.block.log_store import LogStore


async def main(devices) -> int:
    store = await LogStore.open(await devices.disk("store").block())
    devices.console.line("OPEN")
    await write_forever(store, int(os.environ.get("UNIBENCH_START", "0")), devices.console.line)
    return 0
"""

QEMU_KILLS = 20
QEMU_BUDGET = 420.0  # seconds for every boot and kill; a TCG boot takes a few


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill_of_qemu(tmp_path: Path) -> None:
    from tests.support.apps import make_app
    from tests.support.artifacts import require_specialized_kernel

    require_specialized_kernel()
    from hostkit.launch_disk import LaunchDisk
    from unikernel.devices import Disk
    from unikernel.toolchain.app import load_app
    from unikernel.toolchain.image import build
    from unikernel.toolchain.launch import launch

    disk = tmp_path / "store.img"
    with disk.open("wb") as blank:
        blank.truncate(1 << 20)
    folder = make_app(
        tmp_path / "app", APP_MAIN, crash_workload=Path(crash_workload.__file__).read_text()
    )
    (folder / "config.py").write_text(
        "from unikernel.devices import Console, Disk\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='log-crash', main='probe_main:main', devices=(Console(), "
        f"Disk('store', size_mib=1, backing={str(disk)!r})))\n"
    )
    loaded = load_app(folder)
    built = build(loaded, "qemu", "specialized", log=lambda _: None)
    declared = loaded.app.devices_of(Disk)[0]

    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    history = History()
    deadline = time.monotonic() + QEMU_BUDGET
    for kill in range(QEMU_KILLS):
        assert time.monotonic() < deadline, f"seed {seed}: only {kill} kills in the time allowed"
        start = history.next_start
        command = launch(
            built,
            params={"start": start},
            link=None,
            disks=[LaunchDisk(declared)],
            memory_mib=loaded.app.memory_mib,
            accel="tcg",
        )
        process = subprocess.Popen(
            command.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # QEMU and anything it starts, killed as one
        )
        try:
            assert process.stdout is not None
            acks = Acks(process.stdout)
            target = rng.randrange(1, 40)
            remaining = max(deadline - time.monotonic(), 1.0)
            came = acks.wait_for(target, min(remaining, 180.0))
            assert came, f"seed {seed}, boot {kill}: no {target} ACKs: " + "\n".join(
                acks.lines[-30:]
            )
            time.sleep(rng.uniform(0.0, 0.5))  # somewhere in the writes after them
        finally:
            kill_group(process)
        acked = acks.finish()
        history.add(start, acked)
        history.check(disk, f"seed {seed}, kill {kill} (start {start}, {len(acked)} ACKs)")
    assert history.acked, f"seed {seed}: nothing acknowledged"
