import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.model import Run, Sample
from harness.store import SCHEMA_VERSION, Store, StoreError, migrate


def sample(
    run_id: str, repeat: int, value: float | None = 1.0, failure: str | None = None
) -> Sample:
    return Sample(
        run_id=run_id,
        suite="boot",
        target="process",
        metric="time_to_ready",
        unit="s",
        better="lower",
        params={"memory": 64},
        repeat=repeat,
        time=time.time(),
        value=value,
        failure=failure,
    )


def test_samples_and_runs_round_trip(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        store.begin_run(Run(id="r1", started=1.0, command="bench run", metadata={"cpu_count": 2}))
        store.add_sample(sample("r1", 0, 0.5))
        store.add_sample(sample("r1", 1, None, "timed out after 1 s"))
        store.end_run("r1", 2.0, "complete")
        run = store.run("r1")
        samples = store.samples("r1")
    assert run.complete and run.metadata == {"cpu_count": 2} and run.ended == 2.0
    assert [s.value for s in samples] == [0.5, None]
    assert samples[1].failure == "timed out after 1 s"
    assert samples[0].params == {"memory": 64}


def test_a_sample_needs_exactly_a_value_or_a_failure(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        store.begin_run(Run(id="r1", started=1.0, command="bench run"))
        with pytest.raises(sqlite3.IntegrityError):
            store.add_sample(sample("r1", 0, None, None))


def test_runs_are_listed_newest_first_and_found_by_prefix(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        store.begin_run(Run(id="20260101-aa", started=1.0, command="old"))
        store.begin_run(Run(id="20260202-bb", started=2.0, command="new"))
        assert [r.id for r in store.runs()] == ["20260202-bb", "20260101-aa"]
        assert store.last_run().command == "new"
        assert store.run("20260101").command == "old"
        with pytest.raises(StoreError, match="matches several runs"):
            store.run("2026")
        with pytest.raises(StoreError, match="is not a stored run"):
            store.run("1999")


def test_empty_store_says_how_to_fill_it(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store, pytest.raises(StoreError, match="bench run"):
        store.last_run()


def test_store_uses_wal(tmp_path: Path) -> None:
    Store(tmp_path / "b.sqlite").close()
    conn = sqlite3.connect(tmp_path / "b.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_old_store_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, upto=1) == 1
    conn.execute(
        "INSERT INTO runs VALUES ('r0', 1.0, 2.0, 'bench run --suite boot', '{}', 'complete')"
    )
    conn.execute(
        "INSERT INTO samples (run_id, suite, target, metric, unit, better, params, repeat, time,"
        " value) VALUES ('r0', 'boot', 'docker', 'time_to_ready', 's', 'lower', '{}', 0, 1.5, 0.3)"
    )
    conn.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION > 1
        assert [s.value for s in store.samples("r0")] == [0.3]
    indexes = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "samples_by_series" in indexes


def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this unibench knows"):
        Store(path)


def test_a_killed_run_keeps_what_it_measured(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-run: its samples stay, and the run reads as incomplete."""
    path = tmp_path / "killed.sqlite"
    writer = textwrap.dedent(
        f"""
        import sys, time
        from harness.model import Run, Sample
        from harness.store import Store
        store = Store({str(path)!r})
        store.begin_run(Run(id="k1", started=time.time(), command="bench run"))
        for i in range(3):
            store.add_sample(Sample("k1", "boot", "process", "time_to_ready", "s", "lower", {{}},
                                    i, time.time(), 0.1 * (i + 1)))
        print("measured", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "measured"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with Store(path) as store:
        run = store.run("k1")
        values = [s.value for s in store.samples("k1")]
    assert not run.complete and run.status == "running" and run.ended is None
    assert values == pytest.approx([0.1, 0.2, 0.3])


def test_a_distribution_is_kept_with_its_sample(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        store.begin_run(Run(id="r1", started=1.0, command="bench run"))
        store.add_sample(sample("r1", 0, 0.5))
        store.add_sample(sample("r1", 1, 0.7), distribution=[0.1, 0.7, 2.0])
        kept = store.distributions("r1")
        assert [(s.repeat, q) for s, q in kept] == [(1, [0.1, 0.7, 2.0])]
        assert len(store.samples("r1")) == 2
