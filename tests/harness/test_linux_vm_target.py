"""The linux-vm targets: the boot suite on a Debian guest under QEMU, and what is left after a
guest that never becomes ready (nothing: no QEMU, no overlay disk, no namespace)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from baselines import linux_vm
from harness.progress import QuietProgress
from harness.runner import Runner, RunSettings
from harness.store import Store
from harness.suites.boot import BootSuite
from harness.targets.linux_vm import LinuxVmTarget
from hostkit import cache, namespaces
from tests.support.netns import require

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a first run builds the image


def leftovers() -> list[str]:
    qemus = [p for p in psutil.Process().children(recursive=True) if "qemu" in p.name()]
    spaces = namespaces.held()
    overlays = list(cache.directory("vm-overlays").glob("linux-vm*"))
    return [*(p.name() for p in qemus), *spaces, *map(str, overlays)]


def boot(tmp_path: Path, memory: str, timeout: float) -> Store:
    require("qemu-system-x86_64", "qemu-img", "mkfs.ext4", "debootstrap")
    store = Store(tmp_path / "bench.sqlite")
    settings = RunSettings(repeat=1, warmup=0, timeout=timeout, params={"memory": [memory]})
    target = LinuxVmTarget("linux-vm-minimal", "under test")
    Runner(store, settings, QuietProgress(Console(quiet=True))).run(BootSuite(), [target], "t")
    return store


def test_the_minimal_vm_boots_serves_and_leaves_nothing(tmp_path: Path) -> None:
    store = boot(tmp_path, "256", timeout=300)
    found: dict[str, float] = {}
    for sample in store.samples(store.last_run().id):
        assert sample.failure is None and sample.value is not None, sample.failure
        assert sample.params["memory"] == "256" and sample.params["accel"] in ("kvm", "tcg")
        found[sample.metric] = sample.value
    assert 0 < found["time_to_ready"] <= found["time_to_service"] < 300
    assert leftovers() == []


def test_a_guest_that_never_becomes_ready_is_killed_and_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_command = linux_vm.qemu_command

    def hanging(*args: Any, **kwargs: Any) -> list[str]:
        # A shell as init: the guest boots, then waits for input forever, never ready.
        argv = real_command(*args, **kwargs)
        append = argv.index("-append") + 1
        argv[append] += " init=/bin/sh"
        return argv

    monkeypatch.setattr(linux_vm, "qemu_command", hanging)
    store = boot(tmp_path, "256", timeout=30)
    samples = store.samples(store.last_run().id)
    assert samples and all(s.failure is not None for s in samples)
    assert all("timed out after 30 s" in (s.failure or "") for s in samples), samples[0].failure
    assert leftovers() == []
