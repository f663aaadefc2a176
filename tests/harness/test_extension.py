"""Extending the harness: a suite and a target written only here, with no edit to any existing
target or suite, work with everything already there.

The suite reads a disk it declares (a backing file whose bytes the test chose) on existing
targets; the target runs existing suites (boot, size) with its own way of launching."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from harness.model import Measurement, Metric, Params
from harness.runner import RunSettings
from harness.suites.base import RepeatContext, Suite
from harness.suites.boot import BootSuite
from harness.suites.size import SizeSuite
from harness.targets import all_targets
from harness.targets.base import (
    Availability,
    ImageSize,
    Instance,
    LaunchSettings,
    Log,
    Target,
    Workload,
    free_port,
)
from harness.targets.process import ProcessInstance, host_python
from harness.targets.unikernel import app_for
from tests.support.artifacts import require_specialized_kernel
from tests.support.netns import require
from tests.support.runs import run_suite, values
from unikernel.devices import Console, Disk
from unikernel.toolchain.app import AppError

SIGNATURE = bytes(range(7, 7 + 64))
FIRST_WORD = Metric("disk_first_word", "value", "higher")

LINUX_READER = """\
import sys
with open(sys.argv[1], "rb") as disk:
    head = disk.read(4)
print("UNIBENCH-READY word=%d" % int.from_bytes(head, "big"), flush=True)
"""
UNIKERNEL_READER = """\
import os

def main(devices) -> int:
    fd = devices.disk("data").open(direct=False)
    try:
        head = os.pread(fd, 4, 0)
    finally:
        os.close(fd)
    devices.console.line("DISK word=%d" % int.from_bytes(head, "big"))
    return 0
"""


class DiskReadSuite(Suite):
    """What it needs: a read-only disk holding a known signature. How it runs: one launch, the
    workload reads the disk's first word. What it returns: that word."""

    name = "disk-read"
    description = "read a declared disk's first word"
    metrics = (FIRST_WORD,)
    default_repeat = 1
    default_warmup = 0

    def __init__(self, workload: Workload) -> None:
        self._workload = workload

    def workload(self, target: Target) -> Workload:
        return self._workload

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        instance = ctx.create(self._workload)
        instance.start()
        marker = "DISK " if target.family == "unikernel" else self._workload.ready_marker
        _, line = instance.console.wait_for(marker, ctx.deadline)
        return [Measurement(FIRST_WORD, float(line.split("word=")[1].split()[0]))]


@pytest.fixture
def disk_workload(tmp_path: Path) -> Workload:
    backing = tmp_path / "signature.img"
    backing.write_bytes(SIGNATURE + bytes(1 << 20))
    script = tmp_path / "read_disk.py"
    script.write_text(LINUX_READER)
    app = tmp_path / "read_disk_app"
    app.mkdir()
    (app / "reader.py").write_text(UNIKERNEL_READER)
    (app / "config.py").write_text(
        textwrap.dedent(
            f"""\
            from unikernel.devices import Console, Disk
            from unikernel.toolchain.app import App
            app = App(name="read-disk", main="reader:main",
                      devices=(Console(), Disk("data", read_only=True, backing={str(backing)!r})))
            """
        )
    )
    disk = Disk("data", read_only=True, backing=str(backing))
    return Workload(
        name="read-disk",
        script=script,
        args=("{data}",),
        devices=(Console(), disk),
        unikernel_app=app,
    )


@pytest.mark.slow  # the unikernel build needs the image's runtime (a cached rootfs)
def test_a_suite_of_the_tests_own_reads_its_disk_on_existing_targets(
    tmp_path: Path, disk_workload: Workload, docker_client: object
) -> None:
    targets = [all_targets()[name] for name in ("process", "docker", "unikernel-hosted")]
    store, run = run_suite(tmp_path, DiskReadSuite(disk_workload), targets, RunSettings(1, 0, 120))
    found = values([s for s in store.samples(run.id) if s.metric == FIRST_WORD.name])
    expected = int.from_bytes(SIGNATURE[:4], "big")
    assert found == {(t.name, FIRST_WORD.name): [expected] for t in targets}
    assert run.complete


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unikernel-qemu", "linux-vm"])
def test_the_same_suite_reads_the_disk_as_a_virtio_device_in_a_vm(
    tmp_path: Path, disk_workload: Workload, name: str
) -> None:
    require("qemu-system-x86_64")
    if name == "unikernel-qemu":
        require_specialized_kernel()
    store, run = run_suite(
        tmp_path, DiskReadSuite(disk_workload), [all_targets()[name]], RunSettings(1, 0, 400)
    )
    found = values([s for s in store.samples(run.id) if s.metric == FIRST_WORD.name])
    assert found == {(name, FIRST_WORD.name): [int.from_bytes(SIGNATURE[:4], "big")]}


class NiceProcessTarget(Target):
    """The workload as a host process at the lowest CPU priority: a target defined only here."""

    name = "nice-process"
    description = "a host process under nice 19"

    def availability(self) -> Availability:
        return Availability(True)

    def create(self, workload: Workload, settings: LaunchSettings) -> Instance:
        ports = {port.name: ("127.0.0.1", free_port(port.protocol)) for port in workload.ports}
        places = {name: f"{host}:{port}" for name, (host, port) in ports.items()}
        script = str(workload.script)
        argv = ["nice", "-n", "19", host_python(), *workload.argv(places, script, {})]
        return ProcessInstance(workload, argv, ports, settings)

    def image_size(
        self, workload: Workload, build: str | None, log: Log, own: Mapping[str, str] | None = None
    ) -> ImageSize:
        size = os.path.getsize(workload.script)
        return ImageSize(total=(size, size), parts={"script": (size, size)})


def test_existing_suites_run_on_a_target_of_the_tests_own(tmp_path: Path) -> None:
    target = NiceProcessTarget()
    store, run = run_suite(tmp_path, BootSuite(), [target], RunSettings(2, 0, 60))
    found = values(store.samples(run.id))
    ready, served = found[target.name, "time_to_ready"], found[target.name, "time_to_service"]
    assert len(ready) == len(served) == 2
    # Each stands on its own: which the harness sees first (the ready line, read by the console
    # thread, or the probe's answer) depends on how threads are scheduled on a busy machine.
    assert all(0 < value < 60 for value in ready + served), (ready, served)
    store, run = run_suite(tmp_path, SizeSuite(appliances={}), [target], RunSettings(1, 0, 60))
    found = values(store.samples(run.id))
    script_size = float(os.path.getsize(BootSuite().workload(target).script))
    assert found[target.name, "size_image"] == [script_size]
    assert found[target.name, "size_script"] == [script_size]


def test_a_unikernel_app_that_lacks_a_device_the_workload_declares_is_refused(
    tmp_path: Path, disk_workload: Workload
) -> None:
    assert disk_workload.unikernel_app is not None
    (disk_workload.unikernel_app / "config.py").write_text(
        "from unikernel.devices import Console\n"
        "from unikernel.toolchain.app import App\n"
        "app = App(name='read-disk', main='reader:main', devices=(Console(),))\n"
    )
    with pytest.raises(AppError, match=r"read-disk needs Disk data, but .*config.py declares none"):
        app_for(disk_workload)
