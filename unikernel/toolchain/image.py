"""Building an application into an image: walk its imports, compile what it uses, and wrap that
with Debian's interpreter and a kernel.

Outputs, under the application's _build/<target>/:
- hosted: app.zip, run by the host's python3.11 (`python3.11 -I -S app.zip`);
- qemu/xen: initramfs.cpio, and with the specialized kernel one image file, unikernel.vmlinux,
  with the initramfs built in (plus its bzImage); with the generic kernel, Debian's bzImage and
  the initramfs beside it, which then carries the kernel modules of the app's devices (Debian
  builds its virtio drivers as modules), loaded by the boot layer in the order MODULES lists;
- report.json: what was kept and dropped, and the bytes of each part.
With prune=False, the standard build (the whole standard library and every extension module, the
baseline pruning is measured against) goes to _build/<target>-unpruned/ instead.
"""

from __future__ import annotations

import importlib
import io
import json
import shlex
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hostkit import cpio
from hostkit.qemu import QemuImage, qemu_command
from hostkit.xl import xl_config
from unikernel.devices import Data, Disk, Network
from unikernel.toolchain import kernel, runtime
from unikernel.toolchain.app import App, AppError, LoadedApp
from unikernel.toolchain.bytecode import SourceModule, build_archive, compile_pyc
from unikernel.toolchain.pruning import ImportGraph, stdlib_modules, walk_imports
from unikernel.toolchain.wiring import check_drivers, config_source

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("hosted", "qemu", "xen")
KERNEL_PROFILES = ("specialized", "generic")
CONFIG_MODULE = "_unikernel_config"
DATA_MODULE = "_unikernel_data"
ARCHIVE_PATH = "/usr/lib/python311.zip"
MODULES_DIR = "/usr/lib/modules"  # the kernel's modules, under usr/: lib is a symlink to usr/lib
INIT = f"#!{runtime.PYTHON} -IS\nimport unikernel.boot\nunikernel.boot.main()\n"
HOSTED_MAIN = "import unikernel.boot\nunikernel.boot.main()\n"
# Nodes the kernel and Python need before anything is mounted: the kernel opens /dev/console
# for PID 1, and Python reads /dev/urandom if getrandom() would block.
DEVICE_NODES = (
    ("dev/console", 5, 1),
    ("dev/null", 1, 3),
    ("dev/urandom", 1, 9),
    ("dev/port", 1, 4),
)

Log = Callable[[str], None]


@dataclass
class BuildResult:
    target: str
    kernel_profile: str | None
    drivers: str = "kernel"
    outputs: dict[str, Path] = field(default_factory=dict)
    report: dict[str, object] = field(default_factory=dict)

    def qemu_image(self) -> QemuImage:
        if "image" in self.outputs:
            return QemuImage(kernel=self.outputs["image"])
        return QemuImage(kernel=self.outputs["kernel"], initrd=self.outputs["initramfs"])


def kernel_modules(app: App, target: str, generic: kernel.GenericKernel | None) -> list[Path]:
    """The module files of the generic kernel that the app's devices need, in loading order:
    the drivers of its NICs and disks and of the buses under them. None for the specialized
    kernel (it has no modules), for the hosted target, or for an app with no such device."""
    if generic is None or target == "hosted":
        return []
    roles = []
    if app.devices_of(Network):
        roles.append("network")
    if app.devices_of(Disk):
        roles.append("block")
    return generic.modules_for(target, roles) if roles else []


def module_image_path(module: Path) -> str:
    """Where a kernel module file goes in the initramfs."""
    return f"{MODULES_DIR}/{module.name}"


def data_source(loaded: LoadedApp) -> str | None:
    """The application's data folders as one read-only key-value module: {path: bytes}, or
    {path: what the folder's compiler made of the bytes}."""
    folders = [device for device in loaded.app.devices if isinstance(device, Data)]
    if not folders:
        return None
    files: dict[str, object] = {}
    for device in folders:
        root = loaded.folder / device.folder
        if not root.is_dir():
            raise AppError(f"Data({device.folder!r}): {root} is not a folder")
        compiler = data_compiler(device)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = str(path.relative_to(loaded.folder))
            try:
                files[name] = compiler(name, path.read_bytes())
            except Exception as error:
                raise AppError(f"Data({device.folder!r}): {name}: {error}") from error
    return f"FILES = {files!r}\n"


def data_compiler(device: Data) -> Callable[[str, bytes], object]:
    """The function that turns a data file into what the image holds (the bytes themselves
    when the declaration names none)."""
    if device.compiler is None:
        return lambda name, content: content
    module_name, _, function = device.compiler.partition(":")
    try:
        compiler = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise AppError(f"Data({device.folder!r}): no compiler {device.compiler}: {error}") from None
    if not callable(compiler):
        raise AppError(f"Data({device.folder!r}): {device.compiler} is not a function")
    return compiler  # type: ignore[no-any-return]


def walk_app(
    loaded: LoadedApp,
    target: str,
    rt: runtime.Runtime,
    modules: Sequence[str] = (),
    drivers: str = "kernel",
) -> tuple[ImportGraph, Path]:
    generated = loaded.build_dir / (target + drivers_suffix(drivers)) / "generated"
    shutil.rmtree(generated, ignore_errors=True)
    generated.mkdir(parents=True)
    source = config_source(loaded.app, target, modules, drivers)
    (generated / f"{CONFIG_MODULE}.py").write_text(source)
    roots = ["unikernel.boot", CONFIG_MODULE, loaded.app.main_module, *loaded.app.extra_modules]
    if target == "hosted":
        # The host's interpreter runs the archive through runpy, which is frozen (the walk cannot
        # see into it) and imports importlib.util: without it, an archive holding part of the
        # importlib package would hide the rest.
        roots.append("runpy")
    data = data_source(loaded)
    if data is not None:
        (generated / f"{DATA_MODULE}.py").write_text(data)
        roots.append(DATA_MODULE)
    search_path = [generated, loaded.folder, REPO_ROOT, rt.stdlib, rt.dynload]
    our_code = [generated, loaded.folder, REPO_ROOT / "unikernel"]
    graph = walk_imports(roots, search_path, rt.builtin_modules, our_code)
    outside = [
        m.name
        for m in graph.modules.values()
        if m.file is not None
        and m.file.is_relative_to(REPO_ROOT)
        and not m.file.is_relative_to(REPO_ROOT / "unikernel")
        and not m.file.is_relative_to(loaded.folder)
    ]
    if outside:
        raise AppError(f"image code imports host-only modules: {', '.join(sorted(outside))}")
    return graph, generated


def sources_of(graph: ImportGraph) -> list[SourceModule]:
    return [
        SourceModule(name=m.name, source=m.file.read_bytes(), is_package=m.is_package)
        for m in graph.python_modules()
        if m.file is not None
    ]


def part_report(name: str, data: bytes) -> dict[str, object]:
    return {"part": name, "bytes": len(data), "compressed": len(zlib.compress(data, 9))}


def standard_build(
    graph: ImportGraph, stdlib: dict[str, Path]
) -> tuple[list[SourceModule], list[str], list[str]]:
    """What an unpruned image holds: our modules, every module of the standard library as
    unpacked in the runtime, and every extension module of lib-dynload. Returns the sources,
    the extensions' host paths, and the modules left out because they do not compile (test
    data in Python 2 syntax, such as lib2to3's)."""
    sources = [s for s in sources_of(graph) if s.name not in stdlib]  # ours
    extensions: list[str] = []
    uncompilable: list[str] = []
    for name, path in sorted(stdlib.items()):
        if path.suffix == ".so":
            extensions.append(str(path))
            continue
        module = SourceModule(name, path.read_bytes(), is_package=path.name == "__init__.py")
        try:
            compile_pyc(module)  # compiled again in the archive: a second pass keeps this simple
        except (SyntaxError, ValueError):
            uncompilable.append(name)
            continue
        sources.append(module)
    return sources, extensions, uncompilable


def drivers_suffix(drivers: str) -> str:
    """What a build folder's name gains for drivers other than the kernel's."""
    return "" if drivers == "kernel" else f"-{drivers}-drivers"


def output_dir(
    loaded: LoadedApp,
    target: str,
    kernel_profile: str,
    prune: bool = True,
    drivers: str | None = None,
) -> Path:
    """Where a build's outputs go: one folder per target, kernel, drivers and variant, so that
    no build overwrites another's."""
    name = target if target == "hosted" else f"{target}-{kernel_profile}"
    name += drivers_suffix(drivers or loaded.app.drivers)
    return loaded.build_dir / (name if prune else f"{name}-unpruned")


def build(
    loaded: LoadedApp,
    target: str,
    kernel_profile: str = "specialized",
    log: Log = print,
    prune: bool = True,
    drivers: str | None = None,
) -> BuildResult:
    """Builds the application for `target`; with prune=False, the standard build instead;
    `drivers` overrides the app's (App.drivers): "python" is Xen's only, on the specialized
    kernel without Linux's front-ends."""
    if target not in TARGETS:
        raise AppError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    drivers = drivers or loaded.app.drivers
    check_drivers(target, drivers)
    if drivers == "python" and kernel_profile != "specialized":
        raise AppError(
            "drivers=python boots the specialized kernel's variant: --kernel specialized"
        )
    generic: kernel.GenericKernel | None = None
    if target != "hosted":
        if kernel_profile not in KERNEL_PROFILES:
            raise AppError(
                f"unknown kernel profile {kernel_profile!r}; choose {' or '.join(KERNEL_PROFILES)}"
            )
        if kernel_profile == "generic":
            generic = kernel.generic_kernel()
    modules = kernel_modules(loaded.app, target, generic)
    rt = runtime.ensure_runtime(log)
    graph, _ = walk_app(loaded, target, rt, [module_image_path(m) for m in modules], drivers)
    stdlib = stdlib_modules(rt.stdlib)
    if prune:
        sources = sources_of(graph)
        extensions = sorted(str(m.file) for m in graph.extensions() if m.file is not None)
        uncompilable: list[str] = []
    else:
        sources, extensions, uncompilable = standard_build(graph, stdlib)
        if uncompilable:
            log(f"standard build: {len(uncompilable)} modules do not compile and are left out")

    out = output_dir(loaded, target, kernel_profile, prune, drivers)
    out.mkdir(parents=True, exist_ok=True)
    result = BuildResult(
        target=target,
        kernel_profile=None if target == "hosted" else kernel_profile,
        drivers=drivers,
    )
    kept = {m.name for m in graph.modules.values()} | {s.name for s in sources}
    kept |= {Path(e).name.split(".", 1)[0] for e in extensions}
    dropped = sorted(set(stdlib) - kept)
    if target == "hosted":
        archive = build_archive(
            [*sources, SourceModule("__main__", HOSTED_MAIN.encode(), is_package=False)]
        )
        (out / "app.zip").write_bytes(archive.data)
        result.outputs["app"] = out / "app.zip"
        parts = [part_report("bytecode", archive.data)]
    else:
        archive = build_archive(sources)
        initramfs, parts = write_initramfs(
            rt, archive.data, extensions, out / "initramfs.cpio", modules
        )
        result.outputs["initramfs"] = initramfs
        parts += attach_kernel(result, target, kernel_profile, initramfs, out, log, generic)
        write_launcher(result, loaded.app, out)
    result.report = {
        "app": loaded.app.name,
        "target": target,
        "kernel_profile": result.kernel_profile,
        "drivers": drivers,
        "pruned": prune,
        "parts": parts,
        "kept_modules": {name: archive.sizes.get(name, 0) for name in sorted(kept)},
        "dropped_stdlib_modules": len(dropped),
        "dropped_stdlib_bytes": sum(stdlib[n].stat().st_size for n in dropped),
        "uncompilable_stdlib_modules": uncompilable,
        "missing_imports": list(graph.missing),
        "outputs": {name: str(path) for name, path in result.outputs.items()},
    }
    (out / "report.json").write_text(json.dumps(result.report, indent=1))
    return result


def write_initramfs(
    rt: runtime.Runtime,
    archive: bytes,
    extensions: list[str],
    path: Path,
    modules: Sequence[Path] = (),
) -> tuple[Path, list[dict[str, object]]]:
    """The initramfs: /init, the interpreter and its libraries, the kept extension modules, the
    bytecode archive, the device nodes needed before devtmpfs is mounted, and the kernel module
    files given (see module_image_path), in their order."""
    buffer = io.BytesIO()
    writer = cpio.CpioWriter(buffer)
    interpreter = b""
    libraries = b""
    extension_paths = ["/" + str(Path(e).relative_to(rt.root)) for e in extensions]
    files = rt.closure([runtime.PYTHON, *extension_paths])

    def parents(image_path: str) -> None:
        parts = image_path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if not writer.has(folder):
                writer.directory(folder)

    for folder in ("dev", "proc", "sys", "tmp", "run"):
        writer.directory(folder)
    for name, major, minor in DEVICE_NODES:
        writer.char_device(name, major, minor)
    for image_path in files:
        host = rt.host_path(image_path)
        parents(image_path)
        if host.is_symlink():
            writer.symlink(image_path, str(host.readlink()))
            continue
        data = host.read_bytes()
        writer.file(image_path, data, mode=host.stat().st_mode & 0o777)
        if image_path == runtime.PYTHON:
            interpreter += data
        elif image_path not in extension_paths:
            libraries += data
    # The landmark by which CPython finds its prefix; and lib-dynload, that of its exec_prefix.
    parents(runtime.DYNLOAD + "/x")
    if not writer.has(runtime.DYNLOAD):
        writer.directory(runtime.DYNLOAD)
    os_module = rt.stdlib / "os.py"
    writer.file(
        runtime.STDLIB + "/os.pyc",
        compile_pyc(SourceModule("os", os_module.read_bytes(), is_package=False)),
    )
    parents(ARCHIVE_PATH)
    writer.file(ARCHIVE_PATH, archive)
    module_bytes = b""
    for module in modules:
        data = module.read_bytes()
        image_path = module_image_path(module)
        parents(image_path)
        writer.file(image_path, data)
        module_bytes += data
    writer.file("init", INIT.encode(), mode=0o755)
    writer.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    extension_bytes = b"".join(rt.host_path(p).read_bytes() for p in extension_paths)
    parts = [
        part_report("interpreter", interpreter),
        part_report("libraries", libraries),
        part_report("extension_modules", extension_bytes),
        part_report("bytecode", archive),
    ]
    if modules:  # only the generic kernel has any
        parts.append(part_report("kernel_modules", module_bytes))
    parts.append(part_report("initramfs", buffer.getvalue()))
    return path, parts


def write_launcher(result: BuildResult, app: App, out: Path) -> None:
    """What starts the image, written beside it: QEMU's command line, or an `xl` config."""
    if result.target == "qemu":
        command = qemu_command(result.qemu_image(), "tcg", app.memory_mib)
        path = out / "qemu-command.sh"
        path.write_text(
            "#!/bin/sh\n# accel: kvm where a test boot shows it works\nexec "
            + shlex.join(command)
            + ' "$@"\n'
        )
        path.chmod(0o755)
        result.outputs["qemu_command"] = path
    elif result.target == "xen":
        if "image" not in result.outputs:
            raise AppError(
                "a Xen PVH guest boots the specialized kernel's image: --kernel specialized"
            )
        path = out / "unikernel.xl"
        path.write_text(xl_config(f"unikernel-{app.name}", result.outputs["image"], app.memory_mib))
        result.outputs["xl_config"] = path


def attach_kernel(
    result: BuildResult,
    target: str,
    profile: str,
    initramfs: Path,
    out: Path,
    log: Log,
    generic: kernel.GenericKernel | None = None,
) -> list[dict[str, object]]:
    if profile == "generic":
        generic = generic or kernel.generic_kernel()
        result.outputs["kernel"] = generic.vmlinuz
        return [part_report("kernel", generic.vmlinuz.read_bytes())]
    if profile != "specialized":
        raise AppError(f"unknown kernel profile {profile!r}; choose {' or '.join(KERNEL_PROFILES)}")
    if kernel.find_specialized_kernel(result.drivers) is None:
        variant = " without Linux's Xen front-ends" if result.drivers == "python" else ""
        log(f"building the specialized kernel{variant} (3 to 15 minutes on 2 cores, once)")
    specialized = kernel.specialized_kernel(result.drivers)
    log(f"embedding the initramfs into the specialized kernel ({specialized.config_hash[:12]})")
    image = kernel.embed_initramfs(
        specialized, initramfs, out / "unikernel.vmlinux", bzimage=out / "unikernel.bzImage"
    )
    result.outputs["image"] = image
    result.outputs["bzimage"] = out / "unikernel.bzImage"
    return [
        part_report("kernel", specialized.vmlinux.read_bytes()),
        part_report("image", image.read_bytes()),
    ]
