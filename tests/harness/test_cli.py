"""The bench command as users call it."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
from click.testing import CliRunner

from harness import cli as cli_module
from harness.cli import cli
from harness.model import Run, Sample
from harness.store import Store
from harness.suites import all_suites
from harness.targets.base import Availability, Workload
from harness.targets.process import ProcessTarget
from tests.harness.test_store import BAD_STORES, not_a_store, real_store, snapshot
from tests.support.processes import processes_running
from tests.support.stored_runs import BOOT, noisy, store_run
from workloads import linux_script

if TYPE_CHECKING:
    from unikernel.devices import Offload

BENCH = str(Path(sys.executable).parent / "bench")


def invoke(store: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--store", str(store), *args])
    return result.exit_code, result.output


def test_run_then_show_json_and_export(tmp_path: Path) -> None:
    store = tmp_path / "b.sqlite"
    code, output = invoke(store, "run", "--suite", "boot", "--target", "process", "--repeat", "3")
    assert code == 0, output
    assert "time_to_ready" in output and "time_to_service" in output
    code, output = invoke(store, "show", "--last", "--format", "json")
    assert code == 0, output
    shown = json.loads(output)
    assert shown["complete"] is True and shown["metadata"]["cpu_count"] >= 1
    ready = next(r for r in shown["results"] if r["metric"] == "time_to_ready")
    assert ready["target"] == "process" and ready["n"] == 3 and ready["failed"] == 0
    assert ready["ci_low"] <= ready["median"] <= ready["ci_high"]
    code, output = invoke(store, "export", shown["run"], "--format", "csv")
    assert code == 0 and output.count("\n") >= 1 + 3 * 4
    code, output = invoke(store, "runs")
    assert code == 0 and shown["run"] in output


def test_unknown_names_say_what_is_known(tmp_path: Path) -> None:
    code, output = invoke(tmp_path / "b.sqlite", "run", "--suite", "bot")
    assert code == 2 and "unknown suite 'bot'" in output and "boot" in output
    code, output = invoke(tmp_path / "b.sqlite", "run", "--suite", "boot", "--target", "vmware")
    assert code == 2 and "unknown target vmware" in output and "process" in output
    code, output = invoke(tmp_path / "b.sqlite", "run", "--suite", "boot", "--param", "memory")
    assert code == 2 and "NAME=V1" in output


def test_show_on_an_empty_store_says_how_to_start(tmp_path: Path) -> None:
    code, output = invoke(tmp_path / "b.sqlite", "show")
    assert code == 1 and "bench run" in output


def test_list_shows_targets_and_availability(tmp_path: Path) -> None:
    code, output = invoke(tmp_path / "b.sqlite", "list")
    assert code == 0
    for name in ("boot", "process", "docker", "docker-minimal"):
        assert name in output


def test_sigterm_stops_the_run_keeps_samples_and_cleans_up(tmp_path: Path) -> None:
    store_path = tmp_path / "b.sqlite"
    proc = subprocess.Popen(
        [
            BENCH,
            "--store",
            str(store_path),
            "run",
            "--suite",
            "boot",
            "--target",
            "process",
            "--repeat",
            "1000",
            "--warmup",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        measured = 0
        while measured < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
            if store_path.exists():
                conn = sqlite3.connect(store_path)
                try:
                    measured = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
                except sqlite3.OperationalError:
                    measured = 0  # schema not created yet
                conn.close()
        assert measured >= 6, "the run measured nothing within 60 s"
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    with Store(store_path) as store:
        run = store.last_run()
        kept = store.samples(run.id)
    assert run.status == "interrupted" and not run.complete and run.ended is not None
    assert len(kept) >= 6
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    orphans = [
        p for p in processes_running(linux_script("boot_probe", "boot_probe.py")) if p.ppid() == 1
    ]
    assert orphans == []


def test_a_bad_parameter_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    code, output = invoke(
        store, "run", "--suite", "dns", "--target", "process", "--param", "names=7"
    )
    assert code == 2
    assert "--param" in output and "process: names=7: the benchmark zones have" in output
    assert "Traceback" not in output
    if store.exists():
        with Store(store) as opened:
            assert opened.runs() == []


def test_ctrl_c_while_bench_loads_ends_without_a_traceback() -> None:
    """Half a second of imports comes before click can catch an interrupt; at random moments of
    it (and of the command after it), Ctrl-C ends as "Aborted!", never with a traceback."""
    rng = random.Random(5)
    landed = 0
    for _ in range(12):
        proc = subprocess.Popen([BENCH, "list"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 0.7))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()
        if proc.returncode == 1:
            assert b"Aborted!" in err, err.decode()
            landed += 1
    assert landed > 0  # some interrupts came before the command had finished


def test_a_timeout_that_is_not_a_finite_number_of_seconds_is_refused(tmp_path: Path) -> None:
    for value in ("nan", "inf", "-1", "abc"):
        result = CliRunner().invoke(
            cli,
            ["--store", str(tmp_path / "s.sqlite"), "run", "--suite", "boot", "--timeout", value],
        )
        assert result.exit_code == 2, (value, result.output)
        assert "Invalid value for '--timeout'" in result.output, result.output
    assert not (tmp_path / "s.sqlite").exists()  # refused before any run was begun


# A store that is not one, or no longer one: every command says so and exits 2, touching nothing.

STORE_COMMANDS: dict[str, tuple[str, ...]] = {
    "run": ("run", "--suite", "boot", "--target", "process", "--repeat", "1", "--warmup", "0"),
    "show": ("show",),
    "show last": ("show", "last", "--format", "json"),
    "runs": ("runs",),
    "export": ("export", "last", "--format", "csv"),
    "compare": ("compare", "last~1", "last"),
    "history": ("history", "--suite", "boot"),
    "report": ("report", "--out", "{folder}/site"),
    "nightly": ("nightly", "{folder}/nightly.toml"),
}
NIGHTLY = """\
report_dir = "nightly"
[[job]]
suite = "boot"
targets = ["process"]
repeat = 5
warmup = 0
"""


@pytest.fixture(scope="module")
def healthy_store(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return real_store(tmp_path_factory.mktemp("healthy") / "b.sqlite").read_bytes()


@pytest.mark.parametrize("kind", BAD_STORES)
def test_every_command_refuses_a_store_that_is_not_one(
    kind: str, healthy_store: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "elsewhere"  # the command's own files: not beside the store
    folder.mkdir()
    (folder / "nightly.toml").write_text(NIGHTLY)
    path = not_a_store(kind, healthy_store, tmp_path / "store" / "b.sqlite")
    before = snapshot(path)
    for name, args in STORE_COMMANDS.items():
        argv = [arg.format(folder=folder) for arg in args]
        result = CliRunner().invoke(cli, ["--store", str(path), *argv])
        assert result.exit_code == 2, (name, result.output, result.exception)
        assert isinstance(result.exception, SystemExit), (name, result.exception)
        assert "Traceback" not in result.output
        assert str(path) in result.output, (name, result.output)
        expected = "is a directory" if kind == "directory" else BAD_STORES[kind]
        assert expected in result.output.replace("\n", " "), (name, result.output)
        assert snapshot(path) == before, name  # not a byte written, no -wal or -shm left
    assert not (folder / "site").exists() and not (folder / "nightly").exists()


def test_bench_run_on_a_damaged_store_measures_nothing_and_says_what_to_do(
    healthy_store: bytes, tmp_path: Path
) -> None:
    """The real command, as a user runs it: refused before any run row or measurement."""
    path = not_a_store("garbage in the middle", healthy_store, tmp_path / "b.sqlite")
    before = snapshot(path)
    done = subprocess.run(
        [BENCH, "run", "--suite", "boot", "--target", "process", "--repeat", "1"],
        env={**os.environ, "BENCH_STORE": str(path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert f"{path} is damaged" in " ".join(done.stderr.split())
    assert ".recover" in done.stderr
    assert snapshot(path) == before


# What --param takes: the suite's own parameters, each with values of its kind.


@pytest.mark.parametrize(
    ("suite", "value", "accepts"),
    [
        ("boot", "memory=abc", "a whole number of MiB"),
        ("boot", "memory=64,0", "a whole number of MiB"),
        ("threads", "period=soon", "a number of seconds"),
        ("threads", "mode=fast", "create or jitter"),
        ("tcp", "flows=1.5", "a whole number"),
        ("block", "depth=-1", "a whole number"),
        ("web", "generator=ab", "locust or wrk"),
    ],
)
def test_a_parameter_value_of_the_wrong_kind_is_refused_before_any_run(
    suite: str, value: str, accepts: str, tmp_path: Path
) -> None:
    store = tmp_path / "s.sqlite"
    result = CliRunner().invoke(
        cli,
        ["--store", str(store), "run", "--suite", suite, "--target", "process", "--param", value],
    )
    output = " ".join(result.output.split())
    name, _, values = value.partition("=")
    bad = next(v for v in values.split(",") if v not in ("64",))
    assert result.exit_code == 2, output
    assert "--param" in output and f"{name}={bad}" in output and accepts in output, output
    assert "Traceback" not in output
    assert not store.exists()  # refused before the store was opened, let alone a run begun


def test_a_parameter_no_target_of_the_suite_takes_is_refused_with_those_it_takes(
    tmp_path: Path,
) -> None:
    store = tmp_path / "s.sqlite"
    code, output = invoke(store, "run", "--suite", "boot", "--param", "memroy=64")
    output = " ".join(output.split())
    assert code == 2, output
    assert "memroy" in output and "the boot suite takes memory" in output, output
    # tcp launches no VM of a chosen size: memory would only label its samples.
    code, output = invoke(store, "run", "--suite", "tcp", "--param", "memory=64")
    output = " ".join(output.split())
    assert code == 2 and "memory" in output, output
    assert "direction, flows, offloads, seconds" in output, output
    assert not store.exists()


def test_a_parameter_some_targets_take_is_not_unknown(tmp_path: Path) -> None:
    """memoise is the unikernels' only: asked of a Linux target, it is no unknown name (the run
    stops at names=7, which the suite itself refuses)."""
    store = tmp_path / "s.sqlite"
    code, output = invoke(
        store,
        "run",
        "--suite",
        "dns",
        "--target",
        "process",
        "--param",
        "memoise=on",
        "--param",
        "names=7",
    )
    assert code == 2 and "the benchmark zones have" in output and "unknown" not in output, output
    assert all_suites()["dns"].check_params({"memoise": ["on"], "server": ["nsd"]}) is None


# What the tables show: text as it was written, brackets and all.


def test_show_says_whether_the_run_is_complete_and_keeps_brackets(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    command = "bench run --suite boot --note [/] [bold]x"
    with Store(path) as store:
        for run_id, status in (("r-done", "complete"), ("r-cut", "interrupted")):
            store.begin_run(Run(id=run_id, started=time.time(), command=command))
            store.add_sample(
                Sample(
                    run_id,
                    "boot",
                    "process",
                    "time_to_ready",
                    "s",
                    "lower",
                    {"app": "[web]"},
                    0,
                    time.time(),
                    0.01,
                )
            )
            store.end_run(run_id, time.time(), status)  # type: ignore[arg-type]
    code, output = invoke(path, "show", "r-done")
    assert code == 0, output
    assert "[complete]" in output and command in output and "app=[web]" in output, output
    code, output = invoke(path, "show", "r-cut")
    assert code == 0 and "[incomplete (interrupted)]" in output, output
    code, output = invoke(path, "runs")
    assert code == 0 and output.count(command) == 2, output


def test_last_names_the_same_run_in_compare_as_in_show_and_export(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store_run(store, "older", 1.0, {BOOT: noisy(0.030, seed=1)})
        store_run(store, "newer", 2.0, {BOOT: noisy(0.030, seed=2)})
    code, output = invoke(path, "compare", "last~1", "last", "--format", "json")
    assert code == 0, output
    compared = json.loads(output)
    assert (compared["base"]["run"], compared["new"]["run"]) == ("older", "newer")
    code, output = invoke(path, "show", "last", "--format", "json")
    assert code == 0 and json.loads(output)["run"] == "newer"
    code, output = invoke(path, "export", "last~1", "--format", "json")
    assert code == 0 and json.loads(output)["run"] == "older", output
    code, output = invoke(path, "compare", "last~2", "last")
    assert code == 1 and "only 2 runs" in output, output


class CheckFails(ProcessTarget):
    """A target whose own checks raise: its availability, or its parameters for a suite."""

    def __init__(self, name: str, broken: str) -> None:
        self.name = name
        self._broken = broken

    def availability(self) -> Availability:
        if self._broken == "availability":
            raise OSError("cannot read /dev/kvm")
        return super().availability()

    def link_offloads(self, workload: Workload) -> tuple[Offload, ...]:
        if self._broken == "link":
            raise RuntimeError("the link's driver is gone")
        return super().link_offloads(workload)


def test_a_target_whose_checks_raise_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = {
        "unsure": CheckFails("unsure", "availability"),
        "linkless": CheckFails("linkless", "link"),
        "process": ProcessTarget(),
    }
    monkeypatch.setattr(cli_module, "all_targets", lambda: dict(broken))
    store = tmp_path / "s.sqlite"
    # No target named: every available one, the unsure one skipped with its reason.
    status, output = invoke(store, "run", "--suite", "tcp", "--repeat", "1", "--warmup", "0")
    assert "skipping unsure: checking it failed: OSError('cannot read /dev/kvm')" in output
    assert "linkless: RuntimeError" in output, output
    with Store(store) as opened:
        samples = opened.samples(opened.last_run().id)
    failed = {s.target for s in samples if s.failure}
    measured = {s.target for s in samples if s.value is not None}
    assert "linkless" in failed and "process" in measured, output
    assert "unsure" not in failed | measured
    assert status == 1  # the linkless target's failures
