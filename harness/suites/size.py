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
(the unikernels: pruned and standard) is measured per build, the parameter `build`; each
appliance of the paper's Table 2 per `app` (boot-probe, dns, web; all three by default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from harness.model import Measurement, Metric, Params
from harness.suites.base import Param, RepeatContext, Suite, text
from harness.suites.boot import BOOT_PROBE
from harness.suites.dns import DNS
from harness.suites.web import static_workload
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
    params: ClassVar[Mapping[str, Param] | None] = {
        "app": text("an appliance the size suite weighs"),
        "build": text("a way the target builds its image"),
    }
    description = "image bytes, pruned and standard builds, compressed or not; lines of code"
    metrics = (SIZE_IMAGE, SIZE_IMAGE_COMPRESSED)
    default_repeat = 1  # sizes are deterministic
    default_warmup = 0
    launches = False  # targets need not prepare to launch (no Xen lab, no VM boots)

    def __init__(
        self,
        workload: Workload = BOOT_PROBE,
        appliances: Mapping[str, Callable[[], Workload]] | None = None,
    ) -> None:
        self._workload = workload
        # The appliances whose images are weighed, by the name `--param app=` takes: the boot
        # probe (`workload`), and Table 2's DNS and web server. Made when asked for (the web
        # server's workload looks for nginx's and apache2's files).
        others = default_appliances() if appliances is None else appliances
        self._appliances = {BOOT_PROBE_APP: lambda: workload, **others}
        # (target, app, build) -> size
        self._sizes: dict[tuple[str | None, ...], ImageSize] = {}

    def workload(self, target: Target) -> Workload:
        return self._workload

    def param_sets(self, requested: Mapping[str, Sequence[str]], target: Target) -> list[Params]:
        apps = list(requested.get("app", self._appliances))
        unknown_apps = [a for a in apps if a not in self._appliances]
        if unknown_apps:
            raise ValueError(
                f"app={','.join(unknown_apps)}: the size suite weighs {', '.join(self._appliances)}"
            )
        builds = target.image_builds(self._workload)
        unknown = set(requested.get("build", ())) - set(builds)
        if builds and unknown:
            raise ValueError(
                f"{target.name} builds its image as {', '.join(builds)}, not {', '.join(unknown)}"
            )
        # One build only where the target has no choice: the image as its recipe makes it.
        chosen: list[str | None] = list(requested.get("build", builds)) if builds else [None]
        return [
            {"app": app, **({"build": build} if build else {})} for app in apps for build in chosen
        ]

    def prepare(
        self, target: Target, workload: Workload, param_sets: Sequence[Params], log: Log
    ) -> None:
        for params in param_sets:
            app, build = key(params)
            image = self._appliances[app]()
            own = {name: str(params[name]) for name in target.params if name in params}
            self._sizes[self._key(target, params)] = target.image_size(image, build, log, own)

    def run_once(self, target: Target, params: Params, ctx: RepeatContext) -> list[Measurement]:
        return size_measurements(self._sizes[self._key(target, params)])

    @staticmethod
    def _key(target: Target, params: Params) -> tuple[str | None, ...]:
        own = tuple(str(params.get(name, "")) for name in sorted(target.params))
        return (target.name, *key(params), *own)


BOOT_PROBE_APP = "boot-probe"


def key(params: Params) -> tuple[str, str | None]:
    """(app, build) of a parameter set; stored runs from before `app` weighed the boot probe."""
    build = str(params["build"]) if "build" in params else None
    return str(params.get("app", BOOT_PROBE_APP)), build


def default_appliances() -> dict[str, Callable[[], Workload]]:
    return {"dns": lambda: DNS, "web": static_workload}
