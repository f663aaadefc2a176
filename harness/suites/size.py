"""The size suite: the bytes each target needs for a workload, and the lines of code behind it,
as the paper's Table 2 and its code-size comparison report them. Nothing is launched.

- unikernel targets: each part of the image (interpreter, libraries, extension modules, bytecode,
  initramfs, kernel) and the whole image, for the pruned build the target prepared and for the
  standard build (the whole standard library and every extension module), which this suite builds
  beside it; the parameter `build` (pruned, standard) tells them apart. Lines of code: our
  library OS, and the standard library modules the build keeps.
- docker targets: the workload's image and its base image, as the engine reports them.
- process: what Debian's python3.11 needs on the host's disk (see `native_python_files`).

Every size comes uncompressed and zlib-compressed at level 9, as the image build's report
computes it, so that compressed sizes compare across targets.
"""

from __future__ import annotations

import re
import subprocess
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import unikernel
from baselines import docker_images
from harness.model import Measurement, Metric, Params
from harness.suites.base import RepeatContext, Suite
from harness.suites.boot import BOOT_PROBE
from harness.targets.base import Log, Target, Workload
from harness.targets.docker import DockerTarget
from harness.targets.process import ProcessTarget, host_python
from harness.targets.unikernel import UnikernelTarget
from unikernel.toolchain import runtime
from unikernel.toolchain.app import load_app
from unikernel.toolchain.image import build
from unikernel.toolchain.pruning import stdlib_modules

SIZE_IMAGE = Metric("size_image", "bytes", "lower")
SIZE_IMAGE_COMPRESSED = Metric("size_image_compressed", "bytes", "lower")
LOC_LIBOS = Metric("loc_libos", "lines", "lower")
LOC_STDLIB = Metric("loc_stdlib", "lines", "lower")
BUILDS = ("pruned", "standard")
LIBOS = Path(unikernel.__file__).resolve().parent
HOST_ONLY = LIBOS / "build"  # the build tool runs on the host, never in an image
CHUNK = 1 << 20


def sizes(name: str, raw: int, compressed: int) -> list[Measurement]:
    return [
        Measurement(Metric(f"size_{name}", "bytes", "lower"), raw),
        Measurement(Metric(f"size_{name}_compressed", "bytes", "lower"), compressed),
    ]


def zlib_size(chunks: Iterable[bytes]) -> int:
    """The bytes of the chunks once compressed as one zlib stream, never held whole."""
    compressor = zlib.compressobj(9)
    return sum(len(compressor.compress(chunk)) for chunk in chunks) + len(compressor.flush())


def file_chunks(paths: Iterable[Path]) -> Iterable[bytes]:
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk


def code_lines(paths: Iterable[Path]) -> int:
    """Lines that are neither blank nor only a comment (docstrings count as code)."""
    count = 0
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                count += 1
    return count


def libos_files() -> list[Path]:
    return sorted(p for p in LIBOS.rglob("*.py") if not p.is_relative_to(HOST_ONLY))


# --- unikernel targets ---------------------------------------------------------------------


def image_measurements(report: Mapping[str, Any]) -> list[Measurement]:
    """The whole image first, then each part, from a build's report."""
    parts = {p["part"]: (int(p["bytes"]), int(p["compressed"])) for p in report["parts"]}
    if "image" in parts:  # the specialized kernel with the initramfs built in: one file
        total = parts.pop("image")
    elif "kernel" in parts:  # Debian's kernel boots with the initramfs beside it
        total = (
            parts["kernel"][0] + parts["initramfs"][0],
            parts["kernel"][1] + parts["initramfs"][1],
        )
    else:  # hosted: the host's interpreter runs the bytecode archive, our only file
        total = parts["bytecode"]
    measured = [Measurement(SIZE_IMAGE, total[0]), Measurement(SIZE_IMAGE_COMPRESSED, total[1])]
    for name, (raw, compressed) in parts.items():
        measured += sizes(name, raw, compressed)
    return measured


def pruned_report(target: UnikernelTarget, workload: Workload) -> dict[str, Any]:
    """The report of the build the target's prepare made."""
    return target.build_result(workload).report


# --- docker targets ------------------------------------------------------------------------


def docker_measurements(target: DockerTarget, workload: Workload) -> list[Measurement]:
    """Each image's size as the engine reports it (its layers, unpacked), and the bytes of
    `docker save`'s tar stream once compressed."""
    client = target.client()
    measured = []
    for name, tag in (
        ("image", target.image(workload)),
        ("base_image", docker_images.image_tag(target.base_image)),
    ):
        image = client.images.get(tag)
        measured += sizes(name, int(image.attrs["Size"]), zlib_size(image.save(CHUNK)))
    return measured


# --- the process target --------------------------------------------------------------------


def native_python_files(python: Path) -> list[Path]:
    """What a Linux process running this workload needs on disk: the interpreter, its standard
    library (the files Debian's runtime packages install under /usr/lib/python3.X, and the
    bytecode their installation compiles beside them), and the shared libraries the interpreter
    and the standard library's extension modules link, with the dynamic loader. Not counted: the
    packages' documentation, -dev headers and static library, nor the kernel and the rest of the
    host's system. Each file once, by its real path."""
    version = re.fullmatch(r"python(\d+\.\d+)", python.name)
    if version is None:
        raise RuntimeError(f"{python} is not a versioned CPython such as python3.11")
    v = version.group(1)
    stdlib = Path(f"/usr/lib/python{v}")
    listed = subprocess.run(
        ["dpkg", "-L", f"python{v}-minimal", f"libpython{v}-minimal", f"libpython{v}-stdlib"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    owned = [Path(p) for p in listed if Path(p).is_relative_to(stdlib)]
    sources = [p for p in owned if p.is_file() and not p.is_symlink()]
    compiled = [
        pyc
        for source in sources
        if source.suffix == ".py"
        for pyc in (source.parent / "__pycache__").glob(f"{source.stem}.cpython-*.pyc")
    ]
    programs = [python, *(p for p in sources if p.suffix == ".so")]
    files = {python, *sources, *compiled, *shared_libraries(programs)}
    return sorted({p.resolve() for p in files})


def shared_libraries(programs: Sequence[Path]) -> set[Path]:
    """What `ldd` says the programs load: their libraries and the dynamic loader."""
    found: set[Path] = set()
    for program in programs:
        listed = subprocess.run(
            ["ldd", str(program)], capture_output=True, text=True, check=True
        ).stdout
        found.update(Path(p) for p in re.findall(r"(/\S+) \(0x[0-9a-f]+\)", listed))
    return found


def native_measurements() -> list[Measurement]:
    files = native_python_files(Path(host_python()).resolve())
    return sizes("image", sum(p.stat().st_size for p in files), zlib_size(file_chunks(files)))


# --- the suite -----------------------------------------------------------------------------


class SizeSuite(Suite):
    name = "size"
    description = "image bytes, pruned and standard builds, compressed or not; lines of code"
    metrics = (SIZE_IMAGE, SIZE_IMAGE_COMPRESSED)
    default_repeat = 1  # sizes are deterministic
    default_warmup = 0

    def __init__(self, workload: Workload = BOOT_PROBE) -> None:
        self._workload = workload
        self._reports: dict[tuple[str, str], dict[str, Any]] = {}  # (target, build) -> report
        self._stdlib: dict[str, Path] = {}

    def workload(self, target: Target) -> Workload:
        return self._workload

    def param_sets(self, requested: Mapping[str, Sequence[str]], target: Target) -> list[Params]:
        if target.family != "unikernel":
            return [{}]  # one build only: the image as the baseline's recipe makes it
        unknown = set(requested.get("build", ())) - set(BUILDS)
        if unknown:
            raise ValueError(f"build must be one of {', '.join(BUILDS)}, not {unknown}")
        return [{"build": b} for b in requested.get("build", BUILDS)]

    def metrics_for(self, params: Params) -> tuple[Metric, ...]:
        if "build" in params:
            return (*self.metrics, LOC_LIBOS, LOC_STDLIB)
        return self.metrics

    def prepare(
        self, target: Target, workload: Workload, param_sets: Sequence[Params], log: Log
    ) -> None:
        if not isinstance(target, UnikernelTarget):
            return
        assert workload.unikernel_app is not None
        self._stdlib = stdlib_modules(runtime.ensure_runtime(log).stdlib)
        for params in param_sets:
            key = (target.name, str(params["build"]))
            if params["build"] == "pruned":
                self._reports[key] = pruned_report(target, workload)
            else:
                log(f"{target.name}: the standard build, with the whole standard library")
                loaded = load_app(workload.unikernel_app)
                standard = build(loaded, target.platform, target.kernel, log=log, prune=False)
                self._reports[key] = standard.report

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        if isinstance(target, UnikernelTarget):
            report = self._reports[(target.name, str(params["build"]))]
            kept = [self._stdlib[n] for n in report["kept_modules"] if n in self._stdlib]
            return [
                *image_measurements(report),
                Measurement(LOC_LIBOS, code_lines(libos_files())),
                Measurement(LOC_STDLIB, code_lines(p for p in kept if p.suffix == ".py")),
            ]
        if isinstance(target, DockerTarget):
            return docker_measurements(target, self._workload)
        if isinstance(target, ProcessTarget):
            return native_measurements()
        raise NotImplementedError(f"the size suite does not know what {target.name} holds")
