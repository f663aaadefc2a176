import hashlib
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from harness import store as store_module
from harness.model import Run, Sample
from harness.store import SCHEMA_VERSION, Store, StoreError, StoreUnusable, migrate


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


# Opening a store: several processes at once, and files that are not (or no longer) stores.


def open_and_describe(path: Path, barrier: Any, results: Any) -> None:
    """One opener of `path` among several started together: what it found, or its error."""
    barrier.wait()
    try:
        with Store(path) as store:
            tables = [
                row[0]
                for row in store._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            results.put(("ok", store.schema_version, tables, len(store.runs())))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}", [], 0))


def open_at_once(path: Path, openers: int = 8) -> list[tuple[str, object, list[str], int]]:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(openers)
    results = context.Queue()
    processes = [
        context.Process(target=open_and_describe, args=(path, barrier, results))
        for _ in range(openers)
    ]
    for process in processes:
        process.start()
    found = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return found


TABLES = ["distributions", "runs", "samples"]


def test_processes_opening_a_new_store_at_once_all_get_the_whole_schema(tmp_path: Path) -> None:
    for attempt in range(5):
        path = tmp_path / f"new{attempt}" / "b.sqlite"
        found = open_at_once(path)
        assert found == [("ok", SCHEMA_VERSION, TABLES, 0)] * 8, found
        # Nothing of the making (the stores built aside) is left once every opener closed it.
        # The store's own -wal and -shm may stay: SQLite removes them only when the last to
        # close gets the lock, which openers closing at the same moment may all miss.
        names = {p.name for p in path.parent.iterdir()}
        assert "b.sqlite" in names and names <= {"b.sqlite", "b.sqlite-wal", "b.sqlite-shm"}
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


def test_processes_opening_an_old_store_at_once_migrate_it_once(tmp_path: Path) -> None:
    for attempt in range(3):
        path = tmp_path / f"old{attempt}.sqlite"
        conn = sqlite3.connect(path, isolation_level=None)  # rollback journal, as stores were
        migrate(conn, upto=1)
        conn.execute("INSERT INTO runs VALUES ('r0', 1.0, 2.0, 'bench run', '{}', 'complete')")
        conn.close()
        found = open_at_once(path)
        assert found == [("ok", SCHEMA_VERSION, TABLES, 1)] * 8, found
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


def real_store(path: Path, samples: int = 3000) -> Path:
    """A store written as bench writes one: a run of `samples` samples, some with quantiles."""
    with Store(path) as store:
        store.begin_run(Run(id="r1", started=1.0, command="bench run --suite boot"))
        for repeat in range(samples):
            quantiles = [0.1, 0.2, 0.3] if repeat % 100 == 0 else None
            store.add_sample(sample("r1", repeat, 0.001 * repeat), distribution=quantiles)
        store.end_run("r1", 2.0, "complete")
    return path


@pytest.fixture(scope="module")
def healthy_store(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real store of a few thousand samples, to damage copies of."""
    path = real_store(tmp_path_factory.mktemp("healthy") / "b.sqlite")
    return path.read_bytes()


def with_garbage_in_the_middle(store: bytes) -> bytes:
    page = 4096
    middle = len(store) // page // 2 * page
    garbage = random.Random(3).randbytes(3 * page)
    return store[:middle] + garbage + store[middle + len(garbage) :]


def not_a_store(kind: str, healthy: bytes, path: Path) -> Path:
    """A file at `path` that must not be taken for a store, of the given kind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "directory":
        path.mkdir()
        return path
    foreign = sqlite3.connect(path)  # written before the kinds that overwrite it
    foreign.execute("CREATE TABLE contacts (name TEXT)")
    foreign.commit()
    foreign.close()
    contents = {
        "text": b"memory=64\nthis is not a database\n",
        "empty": b"",
        "truncated": healthy[: len(healthy) // 2],
        "half a header": healthy[:60],
        "garbage in the middle": with_garbage_in_the_middle(healthy),
    }
    if kind in contents:
        path.write_bytes(contents[kind])
    return path


BAD_STORES = {
    "text": "not a SQLite database",
    "empty": "empty",
    "truncated": "damaged",
    "half a header": "damaged",
    "garbage in the middle": "damaged",
    "directory": "directory",
    "foreign": "not a unibench store",
}


def snapshot(path: Path) -> dict[str, str]:
    """Every file of the store's folder, by name, with its contents' hash."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "directory"
        for p in path.parent.iterdir()
    }


@pytest.mark.parametrize("kind", BAD_STORES)
def test_what_is_not_a_healthy_store_is_refused_and_left_as_it_was(
    kind: str, healthy_store: bytes, tmp_path: Path
) -> None:
    path = not_a_store(kind, healthy_store, tmp_path / "b.sqlite")
    before = snapshot(path)
    with pytest.raises(StoreUnusable, match=BAD_STORES[kind]) as refused:
        Store(path)
    assert str(path) in str(refused.value)
    assert snapshot(path) == before  # not one byte written, no -wal or -shm left beside it


def test_a_damaged_store_is_refused_with_what_to_do(healthy_store: bytes, tmp_path: Path) -> None:
    path = not_a_store("garbage in the middle", healthy_store, tmp_path / "b.sqlite")
    with pytest.raises(StoreUnusable) as refused:
        Store(path)
    message = str(refused.value)
    assert "nothing was written to it" in message
    assert f"sqlite3 {path}.damaged .recover" in message and "mv " in message


def test_a_healthy_store_passes_the_check_and_keeps_its_samples(
    healthy_store: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "b.sqlite"
    path.write_bytes(healthy_store)
    with Store(path) as store:
        assert len(store.samples("r1")) == 3000
        assert len(store.distributions("r1")) == 30


def test_damage_found_while_reading_is_a_store_error(
    healthy_store: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage the opening check did not see (it came later) is still said as a damaged store,
    not as SQLite's bare error; an error that is no damage stays what it is."""
    path = not_a_store("garbage in the middle", healthy_store, tmp_path / "b.sqlite")
    monkeypatch.setattr(store_module, "_check_pages", lambda conn, path: None)
    with pytest.raises(StoreUnusable, match="damaged") as refused, Store(path) as store:
        store.samples("r1")
    assert "found while using it" in str(refused.value)
    path.write_bytes(healthy_store)
    with pytest.raises(sqlite3.IntegrityError), Store(path) as store:
        store.add_sample(sample("r1", 0, None, None))


def test_last_and_the_runs_before_it_are_found_by_name(tmp_path: Path) -> None:
    with Store(tmp_path / "b.sqlite") as store:
        with pytest.raises(StoreError, match="bench run"):
            store.run("last")
        for n in range(3):
            store.begin_run(Run(id=f"2026010{n}-aa", started=float(n), command=f"run {n}"))
        assert store.run("last").id == "20260102-aa"
        assert store.run("last~0").id == "20260102-aa"
        assert store.run("last~2").id == "20260100-aa"
        with pytest.raises(StoreError, match="only 3 runs"):
            store.run("last~3")
        with pytest.raises(StoreError, match="is not a stored run"):
            store.run("last~x")
