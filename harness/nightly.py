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
    "nightly"; a run nightly found regressed, or could not judge because the machine was busier
    than for its baseline, is never a baseline; a run never judged (a manual `bench run`) can be.
So once a regression lands, each night compares against the last run before it and keeps
failing until the regression is fixed.

Each series is judged by the gate (harness.gate): flagged when a permutation test of the ranks
is significant at `alpha` AND the median moved the bad way by more than the threshold and more
than three times the noise (the spread of the two runs' repeats, and how much the median moves
from one good run to the next over the last 10 good runs). Deterministic suites (size)
are flagged on any change. After each job, the series whose repeats were too few to see a change
of the threshold's size, or whose noise is too high for any repeat count, are listed.

Nightly records the CPU pressure each job was measured under (Linux PSI: the share of the time
some task waited for a CPU) in the run's metadata under "cpu_pressure"; a regression found while
the machine was busier than for the baseline is reported, not judged (see harness.gate).

Before measuring anything, a configuration the gate could never flag anything with is refused
(exit 2): a job of a noisy suite with fewer repeats than the test needs at `alpha` even with no
noise at all (5 at 0.01: with 3 against 3 the smallest two-sided p is 0.1).
"""

from __future__ import annotations

import json
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.markup import escape

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
from harness.gate import (
    HISTORY_RUNS,
    MIN_HISTORY,
    GatedRuns,
    blind_spots,
    gate_runs,
    repeats_required,
)
from harness.model import Run, Sample, Series, group_series
from harness.progress import progress_for
from harness.report.publish import write_site
from harness.runner import Runner, RunSettings
from harness.stats import smallest_p
from harness.store import Store
from harness.suites import all_suites
from harness.suites.base import ParamError
from harness.targets import all_targets

EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130
PRESSURE = Path("/proc/pressure/cpu")


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
        try:
            suites[suite].check_params(settings.params)
        except ParamError as error:
            raise ConfigError(f"{where}: {error}") from None
        jobs.append(Job(suite, tuple(dict.fromkeys(names)), settings))
    if not jobs:
        raise ConfigError(f"{path}: no [[job]] listed: nothing to run")
    threshold = data.get("threshold", DEFAULT_THRESHOLD)
    alpha = data.get("alpha", DEFAULT_ALPHA)
    if not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ConfigError(f"{path}: alpha = {alpha!r}: give a significance level between 0 and 1")
    return NightlyConfig(
        path=path,
        jobs=tuple(jobs),
        report_dir=base / data.get("report_dir", "results/nightly"),
        store=base / data["store"] if "store" in data else None,
        threshold=parse_fraction(str(threshold)) if isinstance(threshold, str) else threshold,
        alpha=float(alpha),
    )


def blind_jobs(config: NightlyConfig) -> list[str]:
    """Why each job the gate could never flag anything in is blind: fewer repeats than its test
    needs at alpha even with no noise. Deterministic suites need one."""
    problems = []
    for i, job in enumerate(config.jobs, start=1):
        needed = repeats_required(job.suite, config.alpha)
        if job.settings.repeat < needed:
            n = job.settings.repeat
            problems.append(
                f"{config.path}: [[job]] {i} (suite {job.suite} on {', '.join(job.targets)}): "
                f"repeat = {n} can never flag a change: with {n} repeats against {n} the "
                f"smallest p a two-sided permutation test can give is {smallest_p(n, n):.2g}, "
                f"not below alpha {config.alpha:g}; the {job.suite} suite needs repeat = "
                f"{needed} or more"
            )
    return problems


def judged_no_baseline(run: Run) -> bool:
    """Whether nightly found the run regressed, or could not judge it for the machine's load."""
    verdict = run.metadata.get("nightly")
    return isinstance(verdict, dict) and bool(verdict.get("regressed") or verdict.get("busier"))


def cpu_stalled() -> float | None:
    """Seconds some task has waited for a CPU since boot (Linux PSI); None where not kept."""
    try:
        some = PRESSURE.read_text().splitlines()[0]  # some avg10=.. avg60=.. avg300=.. total=µs
        return int(dict(f.split("=") for f in some.split()[1:])["total"]) / 1e6
    except (OSError, IndexError, KeyError, ValueError):
        return None


def cpu_pressure(run: Run) -> float | None:
    value = run.metadata.get("cpu_pressure")
    return float(value) if isinstance(value, int | float) else None


def good_runs(
    store: Store, new: Run, suite: str, limit: int = HISTORY_RUNS
) -> list[tuple[Run, list[Sample]]]:
    """The runs before `new` that could be its baseline, as the module docstring defines it,
    newest first, at most `limit`: the first is the baseline, the rest its history."""
    stored = store.series(suite)
    new_samples = next((samples for run, samples in stored if run.id == new.id), [])
    new_targets = {s.target for s in new_samples}
    new_series = set(group_series(new_samples))
    found: list[tuple[Run, list[Sample]]] = []
    for run, samples in reversed(stored):
        if len(found) == limit:
            break
        if run.id == new.id or run.started > new.started or not run.complete:
            continue
        if {s.target for s in samples} != new_targets or judged_no_baseline(run):
            continue
        same_conditions = all(
            comparability_key(run, t) == comparability_key(new, t) for t in new_targets
        )
        if same_conditions and new_series & set(group_series(samples)):
            found.append((run, samples))
    return found


def last_good_run(store: Store, new: Run, suite: str) -> Run | None:
    """The baseline for `new`; None on a first night."""
    found = good_runs(store, new, suite, limit=1)
    return found[0][0] if found else None


@dataclass
class JobResult:
    job: Job
    run: Run
    baseline: Run | None
    gated: GatedRuns | None
    failed_series: list[str] = field(default_factory=list)

    @property
    def comparison(self) -> RunComparison | None:
        return self.gated.comparison if self.gated else None

    def to_json(self) -> dict[str, object]:
        return {
            "suite": self.job.suite,
            "targets": list(self.job.targets),
            "repeat": self.job.settings.repeat,
            "run": self.run.id,
            "baseline": self.baseline.id if self.baseline else None,
            "failed_series": self.failed_series,
            "comparison": self.comparison.to_json() if self.comparison else None,
            "gate": {label: d.to_json() for label, d in self.gated.decisions.items()}
            if self.gated
            else None,
        }


def measure_job(store: Store, job: Job, config: NightlyConfig) -> Run:
    """Runs the job's suite on its targets into the store, noting the CPU pressure it ran under."""
    targets = all_targets()
    runner = Runner(store, job.settings, progress_for(console(stderr=True)))
    command = f"bench nightly {config.path} (suite {job.suite})"
    stalled, started = cpu_stalled(), time.monotonic()
    run = runner.run(all_suites()[job.suite], [targets[t] for t in job.targets], command)
    after, elapsed = cpu_stalled(), time.monotonic() - started
    run = store.run(run.id)  # with the metadata the targets added while preparing
    if stalled is not None and after is not None and elapsed > 0:
        run.metadata["cpu_pressure"] = round((after - stalled) / elapsed, 4)
        store.update_metadata(run.id, run.metadata)
    return run


def run_job(store: Store, job: Job, config: NightlyConfig) -> JobResult:
    run = measure_job(store, job, config)
    samples = store.samples(run.id)
    failed = sorted(
        {
            Series.of(group[0]).label
            for group in group_series(samples).values()
            if any(s.failed for s in group)
        }
    )
    earlier = good_runs(store, run, job.suite)
    baseline = earlier[0][0] if earlier else None
    gated = None
    if baseline is not None:
        base_samples = store.samples(baseline.id)
        comparison = compare_runs(
            baseline, base_samples, run, samples, config.threshold, config.alpha
        )
        history = [run_samples for _, run_samples in reversed(earlier)]
        pressure = (cpu_pressure(baseline), cpu_pressure(run))
        gated = gate_runs(comparison, base_samples, samples, history, pressure)
    run.metadata["nightly"] = {
        "config": str(config.path),
        "baseline": baseline.id if baseline else None,
        "regressed": [c.label for c in (gated.regressed if gated else [])],
        "busier": gated.busier if gated else [],
        "early": gated.early if gated else [],
    }
    store.update_metadata(run.id, run.metadata)
    return JobResult(job, run, baseline, gated, failed)


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
    exit 1 on any regression or failed repeat.

    A series regressed when a permutation test of its repeats' ranks is significant at the
    config's alpha AND its median moved the bad way by more than the threshold and more than
    3 times the noise (the spread of either run's repeats, or of the median from one good run
    to the next). Sizes (the size suite) regress on any growth. A slowdown measured while the
    machine was busier than for the baseline (10 points more CPU pressure) is listed as not
    judged, and that run is no baseline. After each job, the series whose repeats were too few
    to see a change of the threshold's size, or that are too noisy for any repeat count, are
    listed.

    Exit 2, before measuring anything, when a job has fewer repeats than the test needs to
    reach alpha even with no noise (5 at alpha 0.01; sizes need 1)."""
    config = load_config(config_path)
    problems = blind_jobs(config)
    if problems:
        err = console(stderr=True)
        for problem in problems:
            err.print(f"[red]error:[/] {escape(problem)}")
        sys.exit(EXIT_REFUSED)
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
            if r.gated:
                for line in blind_spots(r.gated, r.job.settings.repeat, config.threshold):
                    out.print(escape(line))
                if r.gated.busier:
                    out.print(
                        "[yellow]not judged, the machine was busier than for the baseline:[/] "
                        + escape(", ".join(r.gated.busier))
                    )
                if r.gated.early:
                    out.print(
                        f"[yellow]not judged yet, fewer than {MIN_HISTORY} good runs say how "
                        "far these move night to night:[/] " + escape(", ".join(r.gated.early))
                    )
            bad |= bool(r.comparison.regressed)
        for label in r.failed_series:
            out.print(f"[red]failed repeats:[/] {label}")
        bad |= bool(r.failed_series)
    out.print(f"report: {config.report_dir / 'index.html'}")
    if bad:
        sys.exit(EXIT_REGRESSED)
