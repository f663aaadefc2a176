"""`bench lab xen up|down|status`: the Xen lab by hand, for runs that should share one lab, or
to look inside it (`status` prints the SSH command that logs in to dom0)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict

import click

from baselines import xen_lab
from harness.xen import lab


@click.group(name="lab")
def lab_command() -> None:
    """Labs the harness can run targets in, for machines without the real thing."""


@lab_command.group(name="xen")
def xen_command() -> None:
    """Xen 4.17 inside QEMU: a dom0 the Xen targets use when this host is not one."""


def _say(message: str) -> None:
    click.echo(message, err=True)


@xen_command.command()
def up() -> None:
    """Boot the lab (building its image first if needed) and leave it running."""
    try:
        state = lab.up(_say)
    except (lab.LabError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Xen lab up: Xen {state.xen_version}, QEMU pid {state.pid}, {state.accel}")


@xen_command.command()
def down() -> None:
    """Stop the lab and remove its namespace, TAP device and disk overlay."""
    if not lab.down(_say):
        click.echo("no Xen lab was running")


@xen_command.command()
@click.option("--json", "as_json", is_flag=True, help="The lab's state as JSON.")
def status(as_json: bool) -> None:
    """Whether the lab is up; exit status 3 if it is not."""
    state = lab.status()
    if as_json:
        click.echo(json.dumps(None if state is None else asdict(state), indent=2))
    elif state is None:
        click.echo("no Xen lab is running: `bench lab xen up` starts one")
    else:
        image = xen_lab.find_lab_image()
        minutes = (time.time() - state.started) / 60
        click.echo(
            f"Xen lab up for {minutes:.0f} min: Xen {state.xen_version}, QEMU pid {state.pid} "
            f"({state.accel}), came up in {state.up_seconds:.0f} s; console log {state.serial_log}"
        )
        if image is not None:
            login = [
                "ip", "netns", "exec", state.namespace, "ssh", "-i", str(image.ssh_private_key),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                f"{image.ssh_user}@{state.address}",
            ]  # fmt: skip
            click.echo(f"dom0: {shlex.join(login)}")
    if state is None:
        sys.exit(3)
