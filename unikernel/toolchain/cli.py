"""`unikernel`: configure an application for a target, build its image, run it, clean up.

unikernel configure -t qemu workloads/boot_probe/unikernel
unikernel build workloads/boot_probe/unikernel
unikernel run workloads/boot_probe/unikernel --timeout 60
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click

from unikernel.toolchain.app import DRIVERS, AppError, LoadedApp, load_app
from unikernel.toolchain.image import KERNEL_PROFILES, TARGETS, BuildResult, build, output_dir
from unikernel.toolchain.run import parse_params, run_image
from unikernel.toolchain.wiring import check_drivers

CONFIGURED = "configured.json"


def _load(folder: Path) -> LoadedApp:
    try:
        return load_app(folder)
    except AppError as exc:
        raise click.ClickException(str(exc)) from exc


def configured(loaded: LoadedApp) -> dict[str, str]:
    path = loaded.build_dir / CONFIGURED
    if not path.is_file():
        raise click.ClickException(
            f"{loaded.folder} is not configured: "
            f"run `unikernel configure -t TARGET {loaded.folder}`"
        )
    settings: dict[str, str] = json.loads(path.read_text())
    return settings


app_argument = click.argument(
    "folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path(".")
)


@click.group()
def cli() -> None:
    """Build Python applications into single-purpose VM images."""


@cli.command()
@click.option("-t", "--target", type=click.Choice(TARGETS), required=True)
@click.option(
    "--kernel", type=click.Choice(KERNEL_PROFILES), default="specialized", show_default=True
)
@click.option(
    "--drivers",
    type=click.Choice(DRIVERS),
    default=None,
    help="Xen only: python, our own netfront and blkfront (on a kernel without Linux's); "
    "kernel, Linux's. Default: the app's config.py (drivers=), else kernel.",
)
@app_argument
def configure(target: str, kernel: str, drivers: str | None, folder: Path) -> None:
    """Choose the target (and kernel, and Xen's drivers) the application is built for."""
    loaded = _load(folder)
    drivers = drivers or loaded.app.drivers
    try:
        check_drivers(target, drivers)
    except AppError as exc:
        raise click.ClickException(str(exc)) from exc
    loaded.build_dir.mkdir(parents=True, exist_ok=True)
    settings = {"target": target, "kernel": kernel, "drivers": drivers}
    (loaded.build_dir / CONFIGURED).write_text(json.dumps(settings) + "\n")
    click.echo(f"{loaded.app.name}: configured for {target} ({kernel} kernel, {drivers} drivers)")


def print_report(result: BuildResult) -> None:
    report = result.report
    kept = report["kept_modules"]
    assert isinstance(kept, dict)
    click.echo(
        f"kept {len(kept)} modules ({sum(kept.values())} bytes of bytecode); dropped "
        f"{report['dropped_stdlib_modules']} standard library modules "
        f"({report['dropped_stdlib_bytes']} bytes of source)"
    )
    parts = report["parts"]
    assert isinstance(parts, list)
    for part in parts:
        click.echo(
            f"  {part['part']:<18} {part['bytes']:>11,} bytes  {part['compressed']:>11,} compressed"
        )
    outputs = report["outputs"]
    assert isinstance(outputs, dict)
    for name, path in outputs.items():
        click.echo(f"  {name:<18} {path}")


@cli.command(name="build")
@app_argument
def build_command(folder: Path) -> None:
    """Build the image for the configured target; report what was kept and each part's bytes."""
    loaded = _load(folder)
    settings = configured(loaded)
    try:
        result = build(
            loaded,
            settings["target"],
            settings["kernel"],
            log=click.echo,
            drivers=settings.get("drivers"),
        )
    except AppError as exc:
        raise click.ClickException(str(exc)) from exc
    print_report(result)


@cli.command()
@click.option(
    "--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True
)
@click.option(
    "--memory",
    "memory_mib",
    type=click.IntRange(min=16),
    default=None,
    help="MiB; default: the app's.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds; the image is killed then, and the command exits with 124.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter for the app (it reads UNIBENCH_NAME); repeatable.",
)
@app_argument
def run(
    accel: str, memory_mib: int | None, timeout: float, params: tuple[str, ...], folder: Path
) -> None:
    """Run the built image (hosted: a process; qemu: a VM) with the devices its app declares;
    exit with the application's status.

    A declared network gets a network namespace of its own holding a TAP device: the app is at
    10.203.0.2 there, reachable with `ip netns exec NAME ...` (the name is printed). A declared
    disk gets its backing file, or a blank one for this run. Everything made is removed when
    the run ends, at the timeout, or on Ctrl-C."""
    loaded = _load(folder)
    settings = configured(loaded)
    target = settings["target"]
    report_path = (
        output_dir(loaded, target, settings["kernel"], drivers=settings.get("drivers"))
        / "report.json"
    )
    if not report_path.is_file():
        raise click.ClickException(f"nothing built for {target}: run `unikernel build {folder}`")
    report = json.loads(report_path.read_text())
    built = BuildResult(
        target=target,
        kernel_profile=report.get("kernel_profile"),
        outputs={name: Path(path) for name, path in report["outputs"].items()},
        report=report,
    )
    try:
        status = run_image(
            loaded,
            built,
            params=parse_params(params),
            timeout=timeout,
            memory_mib=memory_mib,
            accel=accel,
            say=lambda text: click.echo(text, err=True),
        )
    except (AppError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(status)


@cli.command()
@app_argument
def clean(folder: Path) -> None:
    """Remove everything the build made in the application's folder."""
    loaded = _load(folder)
    shutil.rmtree(loaded.build_dir, ignore_errors=True)
    click.echo(f"removed {loaded.build_dir}")


def main() -> None:
    cli()
