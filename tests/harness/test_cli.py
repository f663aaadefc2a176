"""The bench command as users call it."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
from click.testing import CliRunner

from harness.cli import cli
from harness.store import Store
from tests.support.processes import processes_running
from workloads import linux_script

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
