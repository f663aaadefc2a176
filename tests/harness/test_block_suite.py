"""The block suite on real targets, over a small data file of the suite's own format."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runner import RunSettings
from harness.suites.block import BLOCK_SIZES, BlockSuite
from harness.targets import all_targets
from harness.targets.process import ProcessTarget
from tests.support.artifacts import require_specialized_kernel
from tests.support.netns import require
from tests.support.runs import run_suite, values

SMALL_MIB = 64
QUICK = {
    "block_size": ["1024", "65536"],
    "depth": ["1", "4"],
    "mode": ["direct", "buffered"],
    "seconds": ["0.5"],
}
METRICS = {"read_throughput", "read_iops", "read_latency_p50", "read_latency_p99"}


def test_the_default_sweep_is_the_papers() -> None:
    sets = BlockSuite().param_sets({}, ProcessTarget())
    assert sorted({int(p["block_size"]) for p in sets}) == [1024 << s for s in range(13)]
    assert BLOCK_SIZES[0] == "1024" and BLOCK_SIZES[-1] == str(4 << 20)
    assert {p["mode"] for p in sets} == {"direct", "buffered"}
    assert {p["depth"] for p in sets} == {"1", "8"}
    assert len(sets) == 13 * 2 * 2


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [("mode", "sideways", "direct or buffered"), ("block_size", "1000", "multiple of 1024")],
)
def test_bad_parameters_are_refused_with_what_to_say(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        BlockSuite().param_sets({name: [value]}, ProcessTarget())


def test_vm_targets_record_their_disk_cache_mode() -> None:
    targets = all_targets()
    vm = BlockSuite().param_sets({"block_size": ["4096"]}, targets["linux-vm-minimal"])
    assert {p["disk_cache"] for p in vm} == {"none"}
    assert all("disk_cache" not in p for p in BlockSuite().param_sets({}, ProcessTarget()))


@pytest.mark.slow
def test_fio_and_the_hosted_appliance_read_the_data(tmp_path: Path) -> None:
    require("fio")
    targets = [all_targets()[name] for name in ("process", "unikernel-hosted")]
    settings = RunSettings(repeat=1, warmup=0, timeout=120, params=QUICK)
    store, run = run_suite(tmp_path, BlockSuite(data_mib=SMALL_MIB), targets, settings)
    found = values(store.samples(run.id))
    for target in ("process", "unikernel-hosted"):
        measured = {metric for (t, metric) in found if t == target}
        assert measured >= METRICS
        assert len(found[(target, "read_throughput")]) == 2 * 2 * 2
        assert all(v > 0 for v in found[(target, "read_throughput")])
        p50, p99 = found[(target, "read_latency_p50")], found[(target, "read_latency_p99")]
        assert all(0 < a <= b < 10 for a, b in zip(p50, p99, strict=True))
    assert run.complete


@pytest.mark.slow
def test_a_disk_without_the_stamps_fails_the_repeat_rather_than_reading_fast(
    tmp_path: Path,
) -> None:
    require("fio")
    blank = tmp_path / "blank.img"
    with blank.open("wb") as out:
        out.truncate(16 << 20)  # zeros: what a disk wired to the wrong file would read
    targets = [all_targets()[name] for name in ("process", "unikernel-hosted")]
    params = {"block_size": ["4096"], "depth": ["1"], "mode": ["direct"], "seconds": ["0.5"]}
    store, run = run_suite(
        tmp_path, BlockSuite(data=blank), targets, RunSettings(1, 0, 120, params=params)
    )
    samples = [s for s in store.samples(run.id) if s.metric == "read_throughput"]
    assert {s.target for s in samples} == {"process", "unikernel-hosted"}
    for sample in samples:
        assert sample.value is None
        assert sample.failure is not None and "not the ones asked for" in sample.failure


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unikernel-qemu", "linux-vm-minimal"])
def test_the_same_reads_in_a_vm_on_a_virtio_disk(tmp_path: Path, name: str) -> None:
    require("qemu-system-x86_64", "fio")
    if name == "unikernel-qemu":
        require_specialized_kernel()
    params = {"block_size": ["4096", "1048576"], "depth": ["4"], "mode": ["direct"]}
    params["seconds"] = ["1"]
    store, run = run_suite(
        tmp_path,
        BlockSuite(data_mib=SMALL_MIB),
        [all_targets()[name]],
        RunSettings(1, 0, 400, params=params),
    )
    found = values(store.samples(run.id))
    assert len(found[(name, "read_throughput")]) == 2
    assert all(v > 0 for v in found[(name, "read_throughput")])
    assert {s.params["disk_cache"] for s in store.samples(run.id)} == {"none"}
