"""The size suite: the bytes each target needs for a workload, and the lines of code behind it,
as the paper's Table 2 and its code-size comparison report them. Nothing is launched.

What it needs: each target's answer to "what does your image for this workload weigh"
(Target.image_size): the unikernel's image parts from its build report, a container's image as
the engine stores it, a Linux VM's disk, kernel and initrd, the host's own Python for a process.
How it runs: the sizes are taken once per target, before the repeats (building or finding in the
cache what they need); a repeat returns them.
What it returns: `size_image` and `size_image_compressed` (zlib, level 9, alike for every
target), the same per part (`size_kernel`, `size_bytecode`, ...), and lines of code where the
target can tell (`loc_libos`, `loc_stdlib`). A target that can build its image more than one way
(the unikernels: pruned and standard) is measured per build, the parameter `build`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.model import Measurement, Metric, Params
from harness.suites.base import RepeatContext, Suite
from harness.suites.boot import BOOT_PROBE
from harness.targets.base import ImageSize, Log, Target, Workload

SIZE_IMAGE = Metric("size_image", "bytes", "lower")
SIZE_IMAGE_COMPRESSED = Metric("size_image_compressed", "bytes", "lower")


def sizes(name: str, raw: int, compressed: int) -> list[Measurement]:
    return [
        Measurement(Metric(f"size_{name}", "bytes", "lower"), raw),
        Measurement(Metric(f"size_{name}_compressed", "bytes", "lower"), compressed),
    ]


def size_measurements(size: ImageSize) -> list[Measurement]:
    """The whole image first, then each part, then the lines of code."""
    measured = [
        Measurement(SIZE_IMAGE, size.total[0]),
        Measurement(SIZE_IMAGE_COMPRESSED, size.total[1]),
    ]
    for name, (raw, compressed) in size.parts.items():
        measured += sizes(name, raw, compressed)
    for name, lines in size.code_lines.items():
        measured.append(Measurement(Metric(f"loc_{name}", "lines", "lower"), lines))
    return measured


class SizeSuite(Suite):
    name = "size"
    description = "image bytes, pruned and standard builds, compressed or not; lines of code"
    metrics = (SIZE_IMAGE, SIZE_IMAGE_COMPRESSED)
    default_repeat = 1  # sizes are deterministic
    default_warmup = 0
    launches = False  # targets need not prepare to launch (no Xen lab, no VM boots)

    def __init__(self, workload: Workload = BOOT_PROBE) -> None:
        self._workload = workload
        self._sizes: dict[tuple[str, str | None], ImageSize] = {}  # (target, build) -> size

    def workload(self, target: Target) -> Workload:
        return self._workload

    def param_sets(self, requested: Mapping[str, Sequence[str]], target: Target) -> list[Params]:
        builds = target.image_builds(self._workload)
        if not builds:
            return [{}]  # one build only: the image as the target's recipe makes it
        unknown = set(requested.get("build", ())) - set(builds)
        if unknown:
            raise ValueError(
                f"{target.name} builds its image as {', '.join(builds)}, not {', '.join(unknown)}"
            )
        return [{"build": b} for b in requested.get("build", builds)]

    def prepare(
        self, target: Target, workload: Workload, param_sets: Sequence[Params], log: Log
    ) -> None:
        for params in param_sets:
            build = str(params["build"]) if "build" in params else None
            self._sizes[(target.name, build)] = target.image_size(workload, build, log)

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        build = str(params["build"]) if "build" in params else None
        return size_measurements(self._sizes[(target.name, build)])
