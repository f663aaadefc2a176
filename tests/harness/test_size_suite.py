"""The size suite on real builds and real images: pruning's effect, and a sample per part and
target. The boot probe is built from a copy in tmp_path, never in the shared _build folder."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path

import docker
import pytest
from click.testing import CliRunner
from rich.console import Console

from harness.cli import cli
from harness.model import Sample
from harness.progress import QuietProgress
from harness.runner import Runner, RunSettings
from harness.sizing import code_lines
from harness.store import Store
from harness.suites.boot import BOOT_PROBE
from harness.suites.size import SizeSuite
from harness.targets import all_targets
from harness.targets.base import Target, Workload
from tests.support.artifacts import require_specialized_kernel

# Measured on the boot probe: the standard build's bytecode was 11.8 times the pruned one's
# (11.2 MB against 0.95 MB), and is 7.9 times since the network stack grew (11.6 MB against
# 1.46 MB with SYN cookies); its whole image about 1.9 times (the kernel and the interpreter
# weigh the same in both).
BYTECODE_FACTOR = 6
IMAGE_FACTOR = 1.5
PARTS = {
    "unikernel-hosted": ("bytecode",),
    "unikernel-qemu": ("interpreter", "libraries", "extension_modules", "bytecode", "kernel"),
    "unikernel-qemu-generic": ("interpreter", "libraries", "extension_modules", "kernel"),
}

Sizes = dict[tuple[str, str | None], float]  # (metric, build) -> value


@pytest.fixture
def probe(tmp_path: Path) -> Workload:
    assert BOOT_PROBE.unikernel_app is not None
    app = tmp_path / "boot_probe"
    shutil.copytree(BOOT_PROBE.unikernel_app, app, ignore=shutil.ignore_patterns("_build"))
    return dataclasses.replace(BOOT_PROBE, unikernel_app=app)


def run_size(tmp_path: Path, workload: Workload, targets: Sequence[Target]) -> list[Sample]:
    store = Store(tmp_path / "bench.sqlite")
    settings = RunSettings(repeat=SizeSuite.default_repeat, warmup=SizeSuite.default_warmup)
    runner = Runner(store, settings, QuietProgress(Console(quiet=True)))
    run = runner.run(SizeSuite(workload, appliances={}), targets, "bench run --suite size")
    samples = store.samples(run.id)
    assert run.complete
    assert [s.failure for s in samples if s.failed] == []
    return samples


def sizes_of(samples: Sequence[Sample], target: str) -> Sizes:
    found: Sizes = {}
    for s in samples:
        if s.target == target:
            assert s.value is not None
            key = (s.metric, str(s.params["build"]) if "build" in s.params else None)
            assert key not in found, f"{key} measured twice"
            found[key] = s.value
    return found


def assert_compressed_is_smaller(sizes: Sizes) -> None:
    raw = {key: v for key, v in sizes.items() if key[0].startswith("size_")}
    pairs = [(m, b) for m, b in raw if not m.endswith("_compressed")]
    assert pairs
    for metric, build in pairs:
        assert raw[(f"{metric}_compressed", build)] < raw[(metric, build)], (metric, build)


def test_only_unikernel_targets_sweep_the_build_and_every_appliance_is_weighed() -> None:
    suite, targets = SizeSuite(), all_targets()
    assert suite.param_sets({"app": ["dns"]}, targets["unikernel-hosted"]) == [
        {"app": "dns", "build": "pruned"},
        {"app": "dns", "build": "standard"},
    ]
    assert suite.param_sets({"build": ["pruned"]}, targets["unikernel-qemu"]) == [
        {"app": "boot-probe", "build": "pruned"},
        {"app": "dns", "build": "pruned"},
        {"app": "web", "build": "pruned"},
    ]
    assert suite.param_sets({"app": ["web"]}, targets["docker"]) == [{"app": "web"}]
    with pytest.raises(ValueError, match="builds its image as pruned, standard, not tiny"):
        suite.param_sets({"build": ["tiny"]}, targets["unikernel-hosted"])
    with pytest.raises(ValueError, match="app=ftp: the size suite weighs boot-probe, dns, web"):
        suite.param_sets({"app": ["ftp"]}, targets["docker"])


def test_code_lines_skip_blank_and_comment_lines(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text('"""Doc."""\n\n# a comment\nx = 1  # counted\n    \ndef f():\n    pass\n')
    assert code_lines([source]) == 4


@pytest.mark.slow
def test_pruning_shrinks_the_hosted_bytecode_many_times(tmp_path: Path, probe: Workload) -> None:
    sizes = sizes_of(
        run_size(tmp_path, probe, [all_targets()["unikernel-hosted"]]), "unikernel-hosted"
    )
    pruned, standard = sizes[("size_bytecode", "pruned")], sizes[("size_bytecode", "standard")]
    assert standard > BYTECODE_FACTOR * pruned, (standard, pruned)
    assert sizes[("size_image", "pruned")] == pruned  # hosted ships the archive alone
    assert_compressed_is_smaller(sizes)
    assert sizes[("loc_stdlib", "standard")] > 10 * sizes[("loc_stdlib", "pruned")]
    assert sizes[("loc_libos", "standard")] == sizes[("loc_libos", "pruned")] > 0
    # The standard build has its own folder: the pruned build is still there, untouched.
    assert probe.unikernel_app is not None
    build_dir = probe.unikernel_app / "_build"
    assert (build_dir / "hosted" / "app.zip").stat().st_size == pruned
    assert (build_dir / "hosted-unpruned" / "app.zip").stat().st_size == standard


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unikernel-qemu", "unikernel-qemu-generic"])
def test_qemu_images_have_every_part_in_both_builds(
    tmp_path: Path, probe: Workload, name: str
) -> None:
    require_specialized_kernel()
    sizes = sizes_of(run_size(tmp_path, probe, [all_targets()[name]]), name)
    for build in ("pruned", "standard"):
        for part in (*PARTS[name], "initramfs", "image"):
            assert sizes[(f"size_{part}", build)] > 0, (part, build)
    assert sizes[("size_image", "standard")] > IMAGE_FACTOR * sizes[("size_image", "pruned")]
    assert sizes[("size_kernel", "standard")] == sizes[("size_kernel", "pruned")]
    assert_compressed_is_smaller(sizes)


@pytest.mark.slow
def test_the_native_process_counts_python_its_stdlib_and_libraries(tmp_path: Path) -> None:
    sizes = sizes_of(run_size(tmp_path, BOOT_PROBE, [all_targets()["process"]]), "process")
    # python3.11 alone is 6.8 MB; with the standard library and its libraries, 47 MB here.
    assert 20e6 < sizes[("size_image", None)] < 200e6
    assert_compressed_is_smaller(sizes)


@pytest.mark.slow
@pytest.mark.docker
def test_the_minimal_container_image_is_smaller(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    targets = all_targets()
    samples = run_size(tmp_path, BOOT_PROBE, [targets["docker"], targets["docker-minimal"]])
    full, minimal = sizes_of(samples, "docker"), sizes_of(samples, "docker-minimal")
    assert minimal[("size_image", None)] < full[("size_image", None)]
    for sizes in (full, minimal):
        assert sizes[("size_base_image", None)] < sizes[("size_image", None)]  # plus the script
        assert_compressed_is_smaller(sizes)


@pytest.mark.slow
def test_bench_run_measures_sizes_once_by_default(tmp_path: Path) -> None:
    store = tmp_path / "bench.sqlite"
    args = ["--store", str(store), "run", "--suite", "size", "--target", "process"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    with Store(store) as opened:
        samples = opened.samples(opened.last_run().id)
    # Each appliance's image: for a process, the host's Python, whichever the appliance.
    found = sorted((str(s.params["app"]), s.metric) for s in samples)
    assert found == [
        (app, metric)
        for app in ("boot-probe", "dns", "web")
        for metric in ("size_image", "size_image_compressed")
    ]
