"""The boot suite's time_to_service on unikernels: the guest answers the host's UDP probe over
a TAP link in a namespace made for each launch, which is gone afterwards."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from rich.console import Console

from harness.progress import QuietProgress
from harness.runner import Runner, RunSettings
from harness.store import Store
from harness.suites.boot import BootSuite
from harness.targets.base import Target
from harness.targets.unikernel import unikernel_targets
from hostkit import namespaces
from hostkit.namespaces import TapLink, entered
from tests.support.artifacts import require_specialized_kernel
from tests.support.netns import require


def boot_samples(tmp_path: Path, target: Target, repeat: int) -> dict[str, list[float]]:
    store = Store(tmp_path / "bench.sqlite")
    settings = RunSettings(repeat=repeat, warmup=0, timeout=120)
    Runner(store, settings, QuietProgress(Console(quiet=True))).run(BootSuite(), [target], "t")
    found: dict[str, list[float]] = {}
    for sample in store.samples(store.last_run().id):
        assert sample.failure is None, sample.failure
        assert sample.value is not None
        found.setdefault(sample.metric, []).append(sample.value)
    return found


def test_a_link_is_reachable_only_from_inside_its_namespace_and_goes_away() -> None:
    require()
    link = TapLink()
    try:
        assert link.name in os.listdir(namespaces.NETNS_DIR)
        with entered(link.name):
            inside = set(socket.if_nameindex())
        assert any(name == link.device for _, name in inside)
        assert link.device not in {name for _, name in socket.if_nameindex()}
    finally:
        link.close()
    assert link.name not in os.listdir(namespaces.NETNS_DIR)


def test_the_hosted_unikernel_serves_the_probe_after_it_is_ready(tmp_path: Path) -> None:
    require()
    hosted = next(t for t in unikernel_targets() if t.name == "unikernel-hosted")
    found = boot_samples(tmp_path, hosted, repeat=2)
    assert len(found["time_to_service"]) == 2
    for ready, served in zip(found["time_to_ready"], found["time_to_service"], strict=True):
        assert 0 < ready <= served < 60
    assert namespaces.held() == []  # every launch's namespace and TAP device removed


@pytest.mark.slow
def test_the_qemu_unikernel_serves_the_probe_over_virtio_net(tmp_path: Path) -> None:
    require()
    require_specialized_kernel()
    qemu = next(t for t in unikernel_targets() if t.name == "unikernel-qemu")
    found = boot_samples(tmp_path, qemu, repeat=1)
    (ready,), (served,) = found["time_to_ready"], found["time_to_service"]
    assert 0 < ready <= served < 120
    assert namespaces.held() == []
