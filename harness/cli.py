"""`bench`: run suites on targets, keep every sample, and show what was measured."""

from __future__ import annotations

import importlib
import json
import math
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.doctor import run_checks
from harness.export import FORMATS, export
from harness.model import Run
from harness.progress import progress_for
from harness.runner import Runner, RunSettings
from harness.store import Store, StoreError, StoreUnusable, default_path, open_store
from harness.suites import all_suites
from harness.suites.base import ParamError
from harness.summary import result_rows, run_json, summary_table
from harness.targets import all_targets
from harness.targets.base import Availability, Target
from hostkit.interrupts import signals_deferred, terminate_as_interrupt

# Off a terminal rich would wrap tables at 80 columns; logs and CI read better unwrapped.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)

EXIT_FAILURES = 1
EXIT_INTERRUPTED = 130


def parse_params(values: Sequence[str]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for value in values:
        name, sep, choices = value.partition("=")
        if not sep or not name or not choices:
            raise click.BadParameter(f"{value!r}: write NAME=V1[,V2...], e.g. memory=64,128")
        params[name] = choices.split(",")
    return params


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs: the analysis commands pull in
    pandas, seaborn and matplotlib, a second of start-up that `bench run` should not pay."""

    LAZY: ClassVar[dict[str, str]] = {
        "compare": "harness.compare:compare_command",
        "history": "harness.history:history_command",
        "lab": "harness.xen.commands:lab_command",
        "nightly": "harness.nightly:nightly_command",
        "report": "harness.report.publish:report_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.LAZY:
            return super().get_command(ctx, name)
        module, attribute = self.LAZY[name].split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="BENCH_STORE",
    default=None,
    help=f"SQLite file of results (default {default_path()}, or $BENCH_STORE).",
)
@click.pass_context
def cli(ctx: click.Context, store_path: Path | None) -> None:
    """unibench: boot, threads, TCP, block and web benchmarks on unikernels, containers and VMs."""
    ctx.obj = store_path


class UnusableStoreError(click.ClickException):
    """The file named as the store is no healthy store: refused as a bad argument is."""

    exit_code = 2


@contextmanager
def cli_store(ctx: click.Context) -> Iterator[Store]:
    """The store `bench --store` names (ctx.obj), checked, its errors said as the commands'
    errors: a file that is no healthy store exits 2, a run not found 1."""
    try:
        with open_store(ctx.obj) as store:
            yield store
    except StoreUnusable as exc:
        raise UnusableStoreError(str(exc)) from exc
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def choose_targets(names: Sequence[str], known: dict[str, Target]) -> list[Target]:
    """The named targets, or, when none is named, every one available on this machine."""
    unknown = [name for name in names if name not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown target {', '.join(unknown)}; known targets: {', '.join(known)}",
            param_hint="--target",
        )
    if names:
        return [known[name] for name in dict.fromkeys(names)]
    chosen = []
    for target in known.values():
        try:
            availability = target.availability()
        except Exception as exc:  # one target's broken check must not stop the others
            availability = Availability(False, f"checking it failed: {exc!r}", "`bench doctor`")
        if availability.ok:
            chosen.append(target)
        else:
            err.print(f"skipping {target.name}: {availability.reason} (fix: {availability.fix})")
    return chosen


class Seconds(click.FloatRange):
    """A finite number of seconds in the range: float() also takes "nan" and "inf", which pass
    every range check and would make no timeout at all."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        number = float(super().convert(value, param, ctx))
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


@cli.command()
@click.option("--suite", "suite_name", required=True, help="Suite to run (see `bench list`).")
@click.option("--target", "target_names", multiple=True, help="Target; repeat for several.")
@click.option("--repeat", type=click.IntRange(min=1), help="[default: the suite's; 10 for most]")
@click.option("--warmup", type=click.IntRange(min=0), help="[default: the suite's; 1 for most]")
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=Seconds(min=0.1),
    help="Seconds per repeat; a workload still running then is killed.",
)
@click.option(
    "--cpus",
    type=click.IntRange(min=1),
    default=None,
    help="Pin the workload to this many CPUs (the last ones).",
)
@click.option("--param", "param_values", multiple=True, help="NAME=V1[,V2...] to sweep.")
@click.option(
    "--interleave",
    is_flag=True,
    help="Run each target's parameter sets in turn, repeat by repeat (set A's first, set B's "
    "first, A's second, ...), rather than all of A's repeats, then all of B's: a change in "
    "the machine's load then falls on every set alike, for ratios between them.",
)
@click.option(
    "--hosts",
    "hosts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file of hosts reached over SSH: the targets ssh:NAME (--target ssh: all).",
)
@click.option(
    "--xen-dom0",
    default="auto",
    show_default=True,
    help="Where the Xen targets run guests: lab (Xen inside QEMU), local (this host is dom0), "
    "or the NAME of a host in --hosts; auto: local if this host is dom0, else the lab.",
)
@click.pass_context
def run(
    ctx: click.Context,
    suite_name: str,
    target_names: tuple[str, ...],
    repeat: int | None,
    warmup: int | None,
    timeout: float,
    cpus: int | None,
    param_values: tuple[str, ...],
    interleave: bool,
    hosts_file: Path | None,
    xen_dom0: str,
) -> None:
    """Run a suite on targets and store every sample."""
    suites = all_suites()
    if suite_name not in suites:
        raise click.BadParameter(
            f"unknown suite {suite_name!r}; known suites: {', '.join(suites)}", param_hint="--suite"
        )
    suite = suites[suite_name]
    settings = RunSettings(
        repeat=suite.default_repeat if repeat is None else repeat,
        warmup=suite.default_warmup if warmup is None else warmup,
        timeout=timeout,
        cpus=cpus,
        params=parse_params(param_values),
        interleave=interleave,
    )
    known = all_targets()
    if hosts_file is not None:
        from harness.targets.ssh import HostsFileError, ssh_targets  # paramiko: only if asked

        try:
            known.update((t.name, t) for t in ssh_targets(hosts_file))
        except HostsFileError as error:
            raise click.BadParameter(str(error), param_hint="--hosts") from None
    if xen_dom0 != "auto":
        known.update((t.name, t) for t in _xen_targets(xen_dom0, hosts_file))
    if "ssh" in target_names:
        if hosts_file is None:
            raise click.BadParameter(
                "the ssh targets come from --hosts FILE", param_hint="--target"
            )
        hosts = [name for name in known if name.startswith("ssh:")]
        target_names = tuple(
            h for name in target_names for h in (hosts if name == "ssh" else [name])
        )
    targets = choose_targets(target_names, known)
    try:
        suite.check_params(settings.params, targets)
    except ParamError as error:
        raise click.BadParameter(str(error), param_hint="--param") from None
    if not targets:
        raise click.ClickException("no target is available here; `bench doctor` says what to fix")
    # Parameters are checked for every target before anything is stored or launched: a value
    # that fails only when a repeat launches would leave an interrupted run behind.
    for target in targets:
        try:
            for params in suite.measured_param_sets(settings.params, target)[0]:
                suite.launch_settings(params, settings.cpus)
        except ValueError as error:
            raise click.BadParameter(f"{target.name}: {error}", param_hint="--param") from None
        except Exception as exc:  # the target's own fault, not the user's
            err.print(f"{target.name}: {exc!r}; the run records it as failed", markup=False)
    with cli_store(ctx) as store:
        runner = Runner(store, settings, progress_for(err))
        command = shlex.join(["bench", *sys.argv[1:]])
        try:
            finished = runner.run(suite, targets, command)
        except KeyboardInterrupt:
            err.print("interrupted: the samples measured so far are stored, the run is incomplete")
            sys.exit(EXIT_INTERRUPTED)
        # The run is stored whole: a signal now waits for its summary, rather than landing in
        # whatever the printing does (an import's clean-up, where it is only reported).
        try:
            with terminate_as_interrupt(once=True), signals_deferred():
                rows = result_rows(store.samples(finished.id))
                out.print(summary_table(rows, title=f"run {finished.id} ({store.path})"))
                failed = [row for row in rows if row.failed]
                for row in failed:
                    failures = escape("; ".join(row.failures))  # errors' [...] is no markup
                    err.print(f"{row.target} {row.metric}: {row.failed} failed: {failures}")
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
    if failed:
        sys.exit(EXIT_FAILURES)


def _xen_targets(dom0: str, hosts_file: Path | None) -> list[Target]:
    from harness.targets.ssh import load_hosts
    from harness.targets.xen import Dom0Lease, xen_targets

    hosts = tuple(load_hosts(hosts_file)) if hosts_file is not None else ()
    if dom0 not in ("lab", "local") and dom0 not in {host.name for host in hosts}:
        raise click.BadParameter(
            f"{dom0!r} is neither lab, local nor a host of --hosts FILE", param_hint="--xen-dom0"
        )
    return xen_targets(Dom0Lease(dom0, hosts))


@cli.command(name="list")
def list_() -> None:
    """Suites, and targets with their availability on this machine."""
    suites = Table(title="suites", title_justify="left")
    suites.add_column("suite")
    suites.add_column("measures")
    for suite in all_suites().values():
        suites.add_row(suite.name, suite.description)
    out.print(suites)
    targets = Table(title="targets", title_justify="left")
    for column in ("target", "what", "available", "why not / how to fix"):
        targets.add_column(column)
    for target in all_targets().values():
        availability = target.availability()
        why = "" if availability.ok else f"{availability.reason}; fix: {availability.fix}"
        what = target.description + "".join(
            f"; --param {name}={','.join(values)} (default {values[0]})"
            for name, values in target.params.items()
        )
        targets.add_row(target.name, what, "yes" if availability.ok else "no", why)
    out.print(targets)


@cli.command()
@click.option(
    "--clean",
    is_flag=True,
    help="First remove what harness runs that died left: processes, containers, network "
    "namespaces, disks, VM overlays, a Xen lab a run started (every `bench run` does this too).",
)
def doctor(clean: bool) -> None:
    """Check the environment and say what to install or start."""
    if clean:
        from harness.leftovers import sweep

        removed = sweep(lambda line: err.print(line, markup=False))
        out.print(f"removed {len(removed)} leftovers of dead harness runs")
    table = Table(title="bench doctor", title_justify="left")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column)
    findings = run_checks()
    colours = {"ok": "green", "warn": "yellow", "missing": "red"}
    for finding in findings:
        status = f"[{colours[finding.status]}]{finding.status}[/]"
        table.add_row(finding.check, status, finding.detail, finding.fix)
    out.print(table)
    if any(finding.status == "missing" for finding in findings):
        sys.exit(EXIT_FAILURES)


def _chosen_run(store: Store, run_id: str | None, last: bool) -> Run:
    if run_id and last:
        raise click.UsageError("give a RUN or --last, not both")
    try:
        return store.run(run_id) if run_id else store.last_run()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@click.argument("run_id", required=False)
@click.option("--last", is_flag=True, help="The newest run (the default).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def show(ctx: click.Context, run_id: str | None, last: bool, fmt: str) -> None:
    """The summary of a stored run: RUN is its id, a prefix of it, last (the default) or
    last~N, the Nth before the newest."""
    with cli_store(ctx) as store:
        chosen = _chosen_run(store, run_id, last)
        rows = result_rows(store.samples(chosen.id))
    if fmt == "json":
        click.echo(json.dumps(run_json(chosen, rows), indent=2))
        return
    state = "complete" if chosen.complete else f"incomplete ({chosen.status})"
    out.print(summary_table(rows, title=f"run {chosen.id}: {chosen.command} [{state}]"))


@cli.command()
@click.pass_context
def runs(ctx: click.Context) -> None:
    """The stored runs, newest first."""
    with cli_store(ctx) as store:
        stored = store.runs()
        counts = {run.id: len(store.samples(run.id)) for run in stored}
    table = Table(title=escape(f"runs in {ctx.obj or default_path()}"), title_justify="left")
    for column in ("run", "started", "status", "samples", "command"):
        table.add_column(column)
    for run in stored:
        started = datetime.fromtimestamp(run.started).strftime("%Y-%m-%d %H:%M:%S")
        cells = (run.id, started, run.status, str(counts[run.id]), run.command)
        table.add_row(*map(escape, cells))  # a command's [...] is no markup
    out.print(table)


@cli.command(name="export")
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of standard output.",
)
@click.pass_context
def export_(ctx: click.Context, run_id: str, fmt: str, output: Path | None) -> None:
    """Export a stored run for other tools (pytest-benchmark's JSON, CSV, JSON); RUN is its id,
    a prefix of it, last or last~N."""
    with cli_store(ctx) as store:
        chosen = _chosen_run(store, run_id, False)
        text = export(chosen, store.samples(chosen.id), fmt)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text)


def main() -> None:
    cli()
