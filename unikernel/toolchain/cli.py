"""`unikernel`: configure an application for a target, build its image, run it, clean up.

unikernel configure -t qemu workloads/unikernel/boot_probe
unikernel build workloads/unikernel/boot_probe
unikernel run workloads/unikernel/boot_probe
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click

from hostkit.qemu import guest_status, qemu_command
from unikernel.toolchain.app import AppError, LoadedApp, load_app
from unikernel.toolchain.image import KERNEL_PROFILES, TARGETS, BuildResult, build, output_dir
from unikernel.toolchain.runtime import PYTHON

CONFIGURED = "configured.json"
EXIT_MARKER = "UNIBENCH-EXIT status="


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
@app_argument
def configure(target: str, kernel: str, folder: Path) -> None:
    """Choose the target (and kernel) the application is built for."""
    loaded = _load(folder)
    loaded.build_dir.mkdir(parents=True, exist_ok=True)
    settings = {"target": target, "kernel": kernel}
    (loaded.build_dir / CONFIGURED).write_text(json.dumps(settings) + "\n")
    click.echo(f"{loaded.app.name}: configured for {target} ({kernel} kernel)")


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
        result = build(loaded, settings["target"], settings["kernel"], log=click.echo)
    except AppError as exc:
        raise click.ClickException(str(exc)) from exc
    print_report(result)


@cli.command()
@click.option(
    "--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True
)
@click.option("--memory", "memory_mib", type=int, default=None, help="MiB; default: the app's.")
@click.option("--timeout", type=float, default=600.0, show_default=True)
@app_argument
def run(accel: str, memory_mib: int | None, timeout: float, folder: Path) -> None:
    """Run the built image (hosted: a process; qemu: a VM); exit with the application's status."""
    loaded = _load(folder)
    settings = configured(loaded)
    target = settings["target"]
    report_path = output_dir(loaded, target, settings["kernel"]) / "report.json"
    if not report_path.is_file():
        raise click.ClickException(f"nothing built for {target}: run `unikernel build {folder}`")
    outputs = json.loads(report_path.read_text())["outputs"]
    if target == "hosted":
        command = [PYTHON if Path(PYTHON).exists() else "python3", "-I", "-S", outputs["app"]]
    elif target == "qemu":
        from hostkit.accel import choose_accel
        from hostkit.qemu import QemuImage

        image = (
            QemuImage(Path(outputs["image"]))
            if "image" in outputs
            else QemuImage(Path(outputs["kernel"]), Path(outputs["initramfs"]))
        )
        chosen = choose_accel() if accel == "auto" else accel
        command = qemu_command(image, chosen, memory_mib or loaded.app.memory_mib)
    else:
        raise click.ClickException(
            f"`unikernel run` runs hosted and qemu images; {target} runs under xl"
        )
    sys.exit(run_console(command, timeout, vm=target != "hosted"))


def run_console(command: list[str], timeout: float, vm: bool) -> int:
    """Runs the command with its console on ours; the guest's status, from the exit marker."""
    status: int | None = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                sys.stdout.write(line)
                if line.startswith(EXIT_MARKER):
                    status = int(line[len(EXIT_MARKER) :].split()[0])
            code = proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
            raise
    if not vm:
        return code
    from_port = guest_status(code)
    if from_port is not None:
        return from_port
    if status is not None:
        return status
    click.echo(f"the VM stopped (QEMU status {code}) without reporting an exit status", err=True)
    return 1


@cli.command()
@app_argument
def clean(folder: Path) -> None:
    """Remove everything the build made in the application's folder."""
    loaded = _load(folder)
    shutil.rmtree(loaded.build_dir, ignore_errors=True)
    click.echo(f"removed {loaded.build_dir}")


def main() -> None:
    cli()
