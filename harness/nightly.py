"""`bench nightly CONFIG`: run the listed jobs, compare each with its last good run, write the
report, and exit non-zero when anything regressed or failed, so a scheduled job goes red.

CONFIG is TOML; paths in it are relative to the file:

    store = "results/bench.sqlite"   # optional; `bench --store` wins
    report_dir = "results/nightly"
    threshold = "5%"
    alpha = 0.01

    [[job]]
    suite = "boot"
    targets = ["process", "docker"]
    repeat = 10
    warmup = 1                          # optional, as `bench run`
    timeout = 120                       # optional
    params = { memory = [64, 128] }     # optional sweep

The last good run of a job is the newest earlier run that
  - is complete,
  - holds samples of the job's suite on exactly the same set of targets, sharing a series,
  - was measured under the same conditions for every one of them (host, CPU model and count,
    accel: what `bench compare` refuses to compare across),
  - and carries no regression verdict: nightly records its verdict in the run's metadata under
    "nightly"; a run nightly found regressed is never a baseline, a run never judged (a manual
    `bench run`) can be.
So once a regression lands, each night compares against the last run before it and keeps
failing until the regression is fixed.
"""

from __future__ import annotations

import json
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import click

from harness.compare import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    EXIT_REGRESSED,
    RunComparison,
    cli_store,
    comparability_key,
    compare_runs,
    comparison_notes,
    comparison_table,
    console,
    parse_fraction,
)
from harness.model import Run, Series, group_series
from harness.progress import progress_for
from harness.report.publish import write_site
from harness.runner import Runner, RunSettings
from harness.store import Store
from harness.suites import all_suites
from harness.targets import all_targets

EXIT_INTERRUPTED = 130


class ConfigError(click.ClickException):
    pass


@dataclass(frozen=True)
class Job:
    suite: str
    targets: tuple[str, ...]
    settings: RunSettings


@dataclass(frozen=True)
class NightlyConfig:
    path: Path
    jobs: tuple[Job, ...]
    report_dir: Path
    store: Path | None = None
    threshold: float = DEFAULT_THRESHOLD
    alpha: float = DEFAULT_ALPHA


def load_config(path: Path) -> NightlyConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    suites, targets = all_suites(), all_targets()
    base = path.parent
    jobs = []
    for i, job in enumerate(data.get("job", []), start=1):
        where = f"{path}: [[job]] {i}"
        suite = job.get("suite")
        if suite not in suites:
            raise ConfigError(f"{where}: suite {suite!r} is not one of {', '.join(suites)}")
        names = job.get("targets")
        if not isinstance(names, list) or not names:
            raise ConfigError(f'{where}: give targets = [...], e.g. ["process"]')
        unknown = [n for n in names if n not in targets]
        if unknown:
            raise ConfigError(f"{where}: unknown targets {unknown}; known: {', '.join(targets)}")
        params = job.get("params", {})
        settings = RunSettings(
            repeat=int(job.get("repeat", 10)),
            warmup=int(job.get("warmup", 1)),
            timeout=float(job.get("timeout", 120.0)),
            cpus=job.get("cpus"),
            params={
                k: [str(v) for v in (vs if isinstance(vs, list) else [vs])]
                for k, vs in params.items()
            },
        )
        jobs.append(Job(suite, tuple(dict.fromkeys(names)), settings))
    if not jobs:
        raise ConfigError(f"{path}: no [[job]] listed: nothing to run")
    threshold = data.get("threshold", DEFAULT_THRESHOLD)
    return NightlyConfig(
        path=path,
        jobs=tuple(jobs),
        report_dir=base / data.get("report_dir", "results/nightly"),
        store=base / data["store"] if "store" in data else None,
        threshold=parse_fraction(str(threshold)) if isinstance(threshold, str) else threshold,
        alpha=float(data.get("alpha", DEFAULT_ALPHA)),
    )


def judged_regressed(run: Run) -> bool:
    verdict = run.metadata.get("nightly")
    return isinstance(verdict, dict) and bool(verdict.get("regressed"))


def last_good_run(store: Store, new: Run, suite: str) -> Run | None:
    """The baseline for `new`, as the module docstring defines it; None on a first night."""
    stored = store.series(suite)
    new_samples = next((samples for run, samples in stored if run.id == new.id), [])
    new_targets = {s.target for s in new_samples}
    new_series = set(group_series(new_samples))
    for run, samples in reversed(stored):
        if run.id == new.id or run.started > new.started or not run.complete:
            continue
        if {s.target for s in samples} != new_targets or judged_regressed(run):
            continue
        same_conditions = all(
            comparability_key(run, t) == comparability_key(new, t) for t in new_targets
        )
        if same_conditions and new_series & set(group_series(samples)):
            return run
    return None


@dataclass
class JobResult:
    job: Job
    run: Run
    baseline: Run | None
    comparison: RunComparison | None
    failed_series: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "suite": self.job.suite,
            "targets": list(self.job.targets),
            "run": self.run.id,
            "baseline": self.baseline.id if self.baseline else None,
            "failed_series": self.failed_series,
            "comparison": self.comparison.to_json() if self.comparison else None,
        }


def run_job(store: Store, job: Job, config: NightlyConfig) -> JobResult:
    targets = all_targets()
    runner = Runner(store, job.settings, progress_for(console(stderr=True)))
    command = f"bench nightly {config.path} (suite {job.suite})"
    run = runner.run(all_suites()[job.suite], [targets[t] for t in job.targets], command)
    run = store.run(run.id)  # with the metadata the targets added while preparing
    samples = store.samples(run.id)
    failed = sorted(
        {
            Series.of(group[0]).label
            for group in group_series(samples).values()
            if any(s.failed for s in group)
        }
    )
    baseline = last_good_run(store, run, job.suite)
    comparison = None
    if baseline is not None:
        comparison = compare_runs(
            baseline, store.samples(baseline.id), run, samples, config.threshold, config.alpha
        )
    regressed = [c.label for c in (comparison.regressed if comparison else [])]
    run.metadata["nightly"] = {
        "config": str(config.path),
        "baseline": baseline.id if baseline else None,
        "regressed": regressed,
    }
    store.update_metadata(run.id, run.metadata)
    return JobResult(job, run, baseline, comparison, failed)


def run_nightly(store: Store, config: NightlyConfig) -> list[JobResult]:
    results = [run_job(store, job, config) for job in config.jobs]
    shown = [r.run.id for r in results] + [r.baseline.id for r in results if r.baseline]
    write_site(store, shown, config.report_dir, [r.comparison for r in results if r.comparison])
    (config.report_dir / "nightly.json").write_text(
        json.dumps({"config": str(config.path), "jobs": [r.to_json() for r in results]}, indent=2)
    )
    return results


@click.command(name="nightly")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def nightly_command(ctx: click.Context, config_path: Path) -> None:
    """Run the jobs CONFIG lists, compare each with its last good run, write the report;
    exit 1 on any regression or failed repeat."""
    config = load_config(config_path)
    ctx.obj = ctx.obj or config.store  # `bench --store` wins over the file's store
    out = console()
    with cli_store(ctx) as store:
        try:
            results = run_nightly(store, config)
        except KeyboardInterrupt:
            console(stderr=True).print("interrupted: the samples so far are stored")
            sys.exit(EXIT_INTERRUPTED)
    bad = False
    for r in results:
        if r.comparison is None:
            out.print(f"{r.job.suite} {r.run.id}: no earlier good run: this one is the baseline")
        else:
            out.print(comparison_table(r.comparison))
            for note in comparison_notes(r.comparison):
                out.print(note)
            bad |= bool(r.comparison.regressed)
        for label in r.failed_series:
            out.print(f"[red]failed repeats:[/] {label}")
        bad |= bool(r.failed_series)
    out.print(f"report: {config.report_dir / 'index.html'}")
    if bad:
        sys.exit(EXIT_REGRESSED)
