"""An application, as its own `config.py` declares it: the unikernel's counterpart of Mirage's
config.ml.

An application is a folder. Its `config.py` (run on the build host, never inside the image)
names the function the image runs and the devices that function needs; every other module of
the folder is application code, imported inside the image as a top-level module.

    from unikernel.devices import Console, Data
    from unikernel.toolchain.app import App

    app = App(name="boot-probe", main="boot_probe:main", devices=(Console(), Data("data")))

The devices are unikernel.devices' declarations; the build wires each to its target's driver and
the image calls `main(devices)` with them (unikernel.core.devices.Devices). `drivers` says who
drives a Xen guest's network and disks: Linux's front-ends ("kernel", the default) or ours in
Python ("python", unikernel/drivers/xen, on a kernel without Linux's); a build can override it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from unikernel.devices import Console, Data, Device, Disk, Network, check_names, devices_of

D = TypeVar("D", Console, Network, Disk, Data)
DRIVERS = ("kernel", "python")

CONFIG_FILE = "config.py"
BUILD_DIR = "_build"


class AppError(Exception):
    pass


@dataclass(frozen=True)
class App:
    name: str
    main: str  # "module:function", a module of the application folder or of the library OS
    devices: tuple[Device, ...] = (Console(),)
    memory_mib: int = 128
    drivers: str = "kernel"  # or "python": under Xen, our own netfront and blkfront
    # Modules the import walk cannot see (imported by name at run time), kept all the same.
    extra_modules: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        module, sep, function = self.main.partition(":")
        if not sep or not module or not function.isidentifier():
            raise AppError(f"main = {self.main!r}: write it as 'module:function'")
        if self.drivers not in DRIVERS:
            raise AppError(f"drivers = {self.drivers!r}: say {' or '.join(map(repr, DRIVERS))}")
        unknown = [d for d in self.devices if not isinstance(d, (Console, Network, Disk, Data))]
        if unknown:
            raise AppError(f"devices must be unikernel.devices declarations, not {unknown}")
        try:
            check_names(self.devices)
        except ValueError as error:
            raise AppError(str(error)) from None

    @property
    def main_module(self) -> str:
        return self.main.partition(":")[0]

    @property
    def main_function(self) -> str:
        return self.main.partition(":")[2]

    def devices_of(self, kind: type[D]) -> list[D]:
        return devices_of(self.devices, kind)


@dataclass(frozen=True)
class LoadedApp:
    app: App
    folder: Path

    @property
    def build_dir(self) -> Path:
        return self.folder / BUILD_DIR


def load_app(folder: Path) -> LoadedApp:
    """Runs the folder's config.py and returns the App it defines as `app`."""
    folder = folder.resolve()
    config = folder / CONFIG_FILE
    if not config.is_file():
        raise AppError(f"{folder} is not an application: it has no {CONFIG_FILE}")
    spec = importlib.util.spec_from_file_location(f"_unikernel_app_config_{folder.name}", config)
    if spec is None or spec.loader is None:
        raise AppError(f"cannot load {config}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise AppError(f"{config} failed: {type(exc).__name__}: {exc}") from exc
    app = getattr(module, "app", None)
    if not isinstance(app, App):
        raise AppError(f"{config} must define `app = App(...)`")
    main_file = folder / f"{app.main_module.replace('.', '/')}.py"
    if not main_file.is_file() and not app.main_module.startswith("unikernel."):
        raise AppError(f"{config}: main module {app.main_module} is not {main_file}")
    return LoadedApp(app=app, folder=folder)
