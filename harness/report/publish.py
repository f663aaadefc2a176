"""`bench report`, written where readers may be looking: built aside, then moved into place.

The site is built in a staging folder beside `out` and only then moved in: each page by an
atomic rename, `img/` and `runs/` as whole folders. So a report interrupted at any moment leaves
the previous one as it was, a finished one leaves no image of an earlier report behind, and
files in `out` that a report does not write (nightly.json, a user's notes) are left alone. What a
killed report left (its staging folder, a folder it had moved aside) is removed by the next.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click

from harness.compare import RunComparison, cli_store, console
from harness.report.site import Site, build_site
from harness.store import Store

LEFT_BEHIND = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)(?:-.*)?$")


def write_site(
    store: Store, run_ids: Sequence[str], out: Path, comparisons: Sequence[RunComparison] = ()
) -> Site:
    """Builds the site of `run_ids` into `out`, replacing the report there."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_left_behind(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        site = build_site(store, run_ids, staging, comparisons)
        out.mkdir(exist_ok=True)
        for entry in sorted(staging.iterdir()):
            move_into_place(entry, out / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Site(
        pages=[out / p.relative_to(staging) for p in site.pages],
        drawn=[dataclasses.replace(d, path=out / d.path.relative_to(staging)) for d in site.drawn],
    )


def move_into_place(new: Path, target: Path) -> None:
    if not new.is_dir():
        os.replace(new, target)  # atomic: a reader sees the old page or the new one
        return
    if not target.exists():
        new.rename(target)
        return
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    target.rename(aside)
    new.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


def remove_left_behind(out: Path) -> None:
    """Staging folders beside `out`, and folders moved aside inside it, of reports whose
    process is gone."""
    candidates = [*out.parent.glob(f".{out.name}.partial-*")]
    if out.is_dir():
        candidates += out.glob(".*.old-*")
    for path in candidates:
        found = LEFT_BEHIND.match(path.name)
        if found and path.is_dir() and not alive(int(found["pid"])):
            shutil.rmtree(path, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


# The command.


def newest_run_per_suite(store: Store) -> list[str]:
    """The default selection: for each suite, the newest run holding it."""
    chosen: dict[str, str] = {}
    for run in store.runs():
        for suite in store.suites(run.id):
            chosen.setdefault(suite, run.id)
    return list(dict.fromkeys(chosen.values()))


@click.command(name="report")
@click.argument("run_ids", nargs=-1, metavar="[RUN]...")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the site into.",
)
@click.pass_context
def report_command(ctx: click.Context, run_ids: tuple[str, ...], out: Path) -> None:
    """A static HTML site of the runs (default: the newest run of each suite).

    The index opens with each suite's headline ratio (the unikernel against its Linux
    reference); each suite page with the paper's figure drawn from our samples, then every
    metric; SUITE-history.html charts every stored run, steps marked, each point linking to
    its run's page. Figures hard to read are named on stderr."""
    with cli_store(ctx) as store:
        chosen = list(run_ids) or newest_run_per_suite(store)
        if not chosen:
            raise click.ClickException(f"no runs stored in {store.path} yet: nothing to report")
        site = write_site(store, chosen, out)
    for drawn in site.illegible():
        console(stderr=True).print(
            f"warning: {drawn.path.name} ({drawn.title}) is hard to read: "
            + "; ".join(drawn.problems),
            markup=False,
            highlight=False,
        )
    console().print(f"wrote {len(site.pages)} pages to {out}; open {out / 'index.html'}")
