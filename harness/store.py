"""The results store: SQLite, one row per sample, committed as soon as it is measured.

WAL mode lets `bench show` read while a run writes. The schema version lives in SQLite's own
`user_version`; MIGRATIONS[i] upgrades version i to i + 1, so an old store is upgraded in place
and keeps its data.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.model import Run, RunStatus, Sample, canonical_params

DEFAULT_PATH = Path("results/bench.sqlite")

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: runs and their samples.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        started REAL NOT NULL,
        ended REAL,
        command TEXT NOT NULL,
        metadata TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'interrupted'))
    );
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        suite TEXT NOT NULL,
        target TEXT NOT NULL,
        metric TEXT NOT NULL,
        unit TEXT NOT NULL,
        better TEXT NOT NULL CHECK (better IN ('lower', 'higher')),
        params TEXT NOT NULL,
        repeat INTEGER NOT NULL,
        time REAL NOT NULL,
        value REAL,
        failure TEXT,
        CHECK ((value IS NULL) <> (failure IS NULL))
    );
    """,
    # 1 -> 2: history queries walk one series across runs.
    """
    CREATE INDEX samples_by_run ON samples (run_id);
    CREATE INDEX samples_by_series ON samples (suite, target, metric);
    """,
    # 2 -> 3: a sample may carry the distribution it summarises (quantiles, for CDFs).
    """
    CREATE TABLE distributions (
        sample_id INTEGER PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
        quantiles TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    pass


def default_path() -> Path:
    return Path(os.environ.get("BENCH_STORE", DEFAULT_PATH))


def migrate(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> int:
    """Applies the migrations the store lacks, each in its own transaction; returns the version."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store has schema version {version}, newer than this unibench knows "
            f"({SCHEMA_VERSION}); upgrade unibench or use another --store"
        )
    for step in range(version, upto):
        conn.executescript(f"BEGIN; {MIGRATIONS[step]} PRAGMA user_version = {step + 1}; COMMIT;")
    return max(version, upto)


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA busy_timeout = 10000")
        migrate(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        version: int = self._conn.execute("PRAGMA user_version").fetchone()[0]
        return version

    # Writing. The connection autocommits: each statement is its own transaction, so what was
    # measured survives a crash right after.

    def begin_run(self, run: Run) -> None:
        self._conn.execute(
            "INSERT INTO runs (id, started, ended, command, metadata, status)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run.id, run.started, run.ended, run.command, json.dumps(run.metadata), run.status),
        )

    def add_sample(self, sample: Sample, distribution: Sequence[float] | None = None) -> None:
        """Stores a sample and, if given, the distribution it summarises, in one transaction."""
        with self._conn:
            self._conn.execute("BEGIN")
            cursor = self._insert_sample(sample)
            if distribution is not None:
                self._conn.execute(
                    "INSERT INTO distributions (sample_id, quantiles) VALUES (?, ?)",
                    (cursor.lastrowid, json.dumps(list(distribution))),
                )

    def _insert_sample(self, sample: Sample) -> sqlite3.Cursor:
        return self._conn.execute(
            "INSERT INTO samples (run_id, suite, target, metric, unit, better, params,"
            " repeat, time, value, failure) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sample.run_id,
                sample.suite,
                sample.target,
                sample.metric,
                sample.unit,
                sample.better,
                canonical_params(sample.params),
                sample.repeat,
                sample.time,
                sample.value,
                sample.failure,
            ),
        )

    def update_metadata(self, run_id: str, metadata: dict[str, object]) -> None:
        self._conn.execute(
            "UPDATE runs SET metadata = ? WHERE id = ?", (json.dumps(metadata), run_id)
        )

    def end_run(self, run_id: str, ended: float, status: RunStatus) -> None:
        self._conn.execute(
            "UPDATE runs SET ended = ?, status = ? WHERE id = ?", (ended, status, run_id)
        )

    # Reading.

    def runs(self) -> list[Run]:
        """All runs, newest first."""
        rows = self._conn.execute("SELECT * FROM runs ORDER BY started DESC, rowid DESC")
        return [_run_from_row(row) for row in rows]

    def run(self, run_id: str) -> Run:
        row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            matches = self._conn.execute(
                "SELECT * FROM runs WHERE id LIKE ? ORDER BY started DESC", (run_id + "%",)
            ).fetchall()
            if len(matches) != 1:
                known = ", ".join(r.id for r in self.runs()[:5]) or "none yet"
                how = "matches several runs" if matches else "is not a stored run"
                raise StoreError(f"{run_id!r} {how} in {self.path}; recent runs: {known}")
            row = matches[0]
        return _run_from_row(row)

    def last_run(self) -> Run:
        runs = self.runs()
        if not runs:
            raise StoreError(f"no runs stored in {self.path} yet; start one with `bench run`")
        return runs[0]

    def distributions(self, run_id: str) -> list[tuple[Sample, list[float]]]:
        """The samples of a run that carry a distribution, with its quantiles."""
        rows = self._conn.execute(
            "SELECT samples.*, distributions.quantiles FROM samples JOIN distributions"
            " ON distributions.sample_id = samples.id WHERE run_id = ? ORDER BY samples.id",
            (run_id,),
        ).fetchall()
        return [
            (sample, json.loads(row["quantiles"]))
            for sample, row in zip(_samples_from_rows(rows), rows, strict=True)
        ]

    def samples(self, run_id: str) -> list[Sample]:
        rows = self._conn.execute(
            "SELECT * FROM samples WHERE run_id = ? ORDER BY id", (run_id,)
        ).fetchall()
        return list(_samples_from_rows(rows))

    # Across runs: what history, nightly and the report read.

    def series(
        self, suite: str, target: str | None = None, metric: str | None = None
    ) -> list[tuple[Run, list[Sample]]]:
        """Every run holding samples of the suite (optionally one target, one metric), oldest
        first, each with those samples in the order they were measured."""
        where = ["suite = ?"]
        args: list[str] = [suite]
        for column, value in (("target", target), ("metric", metric)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        rows = self._conn.execute(
            "SELECT samples.* FROM samples JOIN runs ON runs.id = samples.run_id"
            f" WHERE {' AND '.join(where)} ORDER BY runs.started, runs.rowid, samples.id",
            args,
        ).fetchall()
        by_run: dict[str, list[Sample]] = {}
        for sample in _samples_from_rows(rows):
            by_run.setdefault(sample.run_id, []).append(sample)
        return [(self.run(run_id), samples) for run_id, samples in by_run.items()]

    def suites(self, run_id: str) -> list[str]:
        """The suites a run holds samples of, in the order they were first measured."""
        rows = self._conn.execute(
            "SELECT suite FROM samples WHERE run_id = ? GROUP BY suite ORDER BY MIN(id)",
            (run_id,),
        )
        return [row["suite"] for row in rows]


def _run_from_row(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"],
        started=row["started"],
        ended=row["ended"],
        command=row["command"],
        metadata=json.loads(row["metadata"]),
        status=row["status"],
    )


def _samples_from_rows(rows: Sequence[sqlite3.Row]) -> Iterator[Sample]:
    for row in rows:
        yield Sample(
            run_id=row["run_id"],
            suite=row["suite"],
            target=row["target"],
            metric=row["metric"],
            unit=row["unit"],
            better=row["better"],
            params=json.loads(row["params"]),
            repeat=row["repeat"],
            time=row["time"],
            value=row["value"],
            failure=row["failure"],
        )


def open_store(path: Path | str | None = None) -> Store:
    return Store(path if path is not None else default_path())
