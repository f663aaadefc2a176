"""The results store: SQLite, one row per sample, committed as soon as it is measured.

WAL mode lets `bench show` read while a run writes. The schema version lives in SQLite's own
`user_version`; MIGRATIONS[i] upgrades version i to i + 1, so an old store is upgraded in place
and keeps its data. Opening checks the file first (is it a SQLite database, one of ours, every
page readable) and refuses, writing nothing, what is not a healthy store: a run must not measure
for minutes into a file that cannot keep what it measures.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shlex
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

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


BUSY_TIMEOUT = 10.0  # seconds an opener or writer waits for another's lock
SQLITE_MAGIC = b"SQLite format 3\x00"  # how every SQLite database file begins
HEADER_SIZE = 100
LAST = re.compile(r"last(?:~(\d+))?")  # the newest run, or the Nth before it


class StoreError(Exception):
    """What went wrong, said for the user: the commands print it instead of a traceback."""


class StoreUnusable(StoreError):
    """The file named is not a store this unibench can use (not one, damaged, newer); the
    commands exit 2 on it."""


def default_path() -> Path:
    return Path(os.environ.get("BENCH_STORE", DEFAULT_PATH))


def migrate(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> int:
    """Applies the migrations the store lacks, each in its own transaction; returns the version.
    Each step reads the version again under the write lock (BEGIN IMMEDIATE), so of several
    processes opening an old store at once one migrates it and the others find it done."""
    version = _version(conn)
    while version < upto:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _version(conn)
            if version < upto:
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version = _version(conn)
    return max(version, upto)


def _version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreUnusable(
            f"the store has schema version {version}, newer than this unibench knows "
            f"({SCHEMA_VERSION}); upgrade unibench or use another --store"
        )
    return version


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration one by one: executescript() would commit the transaction
    the migration must run in."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""
    if statement.strip():
        raise ValueError(f"a migration ends in an unfinished statement: {statement.strip()!r}")


class Store:
    def __init__(self, path: Path | str) -> None:
        """Opens the store at `path`, made if there is no file there; raises StoreUnusable,
        having written nothing, if the file there is not a healthy store."""
        self.path = Path(path)
        if not os.path.lexists(self.path):
            _create(self.path)
        _check_file(self.path)
        try:
            # mode=rw: never makes a file; one appearing here was made whole by _create.
            self._conn = sqlite3.connect(
                self.path.absolute().as_uri() + "?mode=rw",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT,
            )
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot open {self.path}: {exc}") from exc
        try:
            self._conn.row_factory = sqlite3.Row
            # Reads and checks first: what is refused must be left as it was found.
            _check_pages(self._conn, self.path)
            _check_is_ours(self._conn, self.path)
            _use_wal(self._conn, self.path)
            self._conn.execute("PRAGMA foreign_keys = ON")
            migrate(self._conn)
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
                raise damaged(self.path, str(exc), untouched=True) from exc
            if isinstance(exc, sqlite3.OperationalError):
                raise _cannot_open(self.path, exc) from exc
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        # Damage the opening check could not see (it came later) is said as such too.
        if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
            raise damaged(self.path, str(exc), untouched=False) from exc

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

    def end_abandoned_runs(self, alive: Callable[[str], bool]) -> list[str]:
        """Marks interrupted the runs still 'running' whose harness is gone (killed with
        SIGKILL, or its machine lost): `alive` tells from a run's harness_owner token. Their
        end is their last sample's time, or their start. Returns their ids."""
        rows = self._conn.execute(
            "SELECT id, started, metadata FROM runs WHERE status = 'running'"
        ).fetchall()
        ended = []
        for row in rows:
            owner = json.loads(row["metadata"]).get("harness_owner")
            if not isinstance(owner, str) or alive(owner):
                continue  # a run from before owners were recorded is left as it was
            last = self._conn.execute(
                "SELECT max(time) FROM samples WHERE run_id = ?", (row["id"],)
            ).fetchone()[0]
            self.end_run(row["id"], last or row["started"], "interrupted")
            ended.append(row["id"])
        return ended

    # Reading.

    def runs(self) -> list[Run]:
        """All runs, newest first."""
        rows = self._conn.execute("SELECT * FROM runs ORDER BY started DESC, rowid DESC")
        return [_run_from_row(row) for row in rows]

    def run(self, run_id: str) -> Run:
        """The run named `run_id`: its id, a prefix of its id alone, `last` (the newest run) or
        `last~N` (the Nth before the newest), as every command taking a RUN reads it."""
        row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None and (back := LAST.fullmatch(run_id)):
            return self._run_back(int(back.group(1) or 0))
        if row is None:
            matches = self._conn.execute(
                "SELECT * FROM runs WHERE id LIKE ? ORDER BY started DESC", (run_id + "%",)
            ).fetchall()
            if len(matches) != 1:
                known = ", ".join(r.id for r in self.runs()[:5]) or "none yet"
                how = "matches several runs" if matches else "is not a stored run"
                raise StoreError(
                    f"{run_id!r} {how} in {self.path}; recent runs: {known} "
                    "(or last, last~1, ... counting back from the newest)"
                )
            row = matches[0]
        return _run_from_row(row)

    def _run_back(self, back: int) -> Run:
        runs = self.runs()
        if back == 0 or not runs:
            return self.last_run()
        if back >= len(runs):
            raise StoreError(
                f"last~{back}: only {len(runs)} runs are stored in {self.path}, the oldest is "
                f"last~{len(runs) - 1}"
            )
        return runs[back]

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
    """The store at `path` (default: $BENCH_STORE, else results/bench.sqlite), checked: raises
    StoreUnusable if the file is not a healthy store."""
    return Store(path if path is not None else default_path())


# Opening: what is checked before a store is used, and how a new one is made.


def _create(path: Path) -> None:
    """Makes a new, empty store at `path`, whole or not at all: built aside and linked into
    place, so processes opening it at once never see one half made (nor an empty file, which
    is refused: a file emptied by accident must not be taken for a new store)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.new")
        os.close(os.open(aside, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask's mode
    except OSError as exc:
        raise StoreUnusable(f"cannot make a store at {path}: {exc}") from exc
    try:
        conn = sqlite3.connect(aside, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            migrate(conn)
        finally:
            conn.close()  # the last connection: checkpoints and removes the -wal and -shm
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another process made it first: all use theirs
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            if not os.path.lexists(path):  # no hard links here: a rename, all but atomic
                os.rename(aside, path)
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnusable(f"cannot make a store at {path}: {exc}") from exc
    finally:
        for leftover in (aside, Path(f"{aside}-wal"), Path(f"{aside}-shm")):
            leftover.unlink(missing_ok=True)


def _check_file(path: Path) -> None:
    """Refuses, from its bytes alone and before SQLite touches it, a file that is no database."""
    try:
        with path.open("rb") as file:
            head = file.read(HEADER_SIZE)
    except IsADirectoryError as exc:
        raise StoreUnusable(
            f"{path} is a directory, not a store: name a file, new or a store, with --store or "
            "$BENCH_STORE"
        ) from exc
    except OSError as exc:
        raise StoreUnusable(f"cannot read {path}: {exc.strerror}") from exc
    if not head:
        raise StoreUnusable(
            f"{path} is an empty file, not a store: remove it to start a new store there, or "
            "name another with --store or $BENCH_STORE"
        )
    if not head.startswith(SQLITE_MAGIC[: len(head)]):
        raise StoreUnusable(
            f"{path} is not a SQLite database, so not a store (it begins {head[:24]!r}): name "
            "the store with --store or $BENCH_STORE, or move this file aside to start a new "
            "store there"
        )
    if len(head) < HEADER_SIZE:
        raise damaged(path, f"it ends within SQLite's header, at byte {len(head)}", True)


def _check_pages(conn: sqlite3.Connection, path: Path) -> None:
    """Reads every page and checks each table's b-tree (quick_check: integrity_check would
    also match every index to its table, at three times the cost). 40 ms on a store of
    100,000 samples whose pages are in the OS cache."""
    rows = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
    if rows != ["ok"]:
        problems = [line for row in rows for line in row.splitlines() if line[:3] != "***"]
        raise damaged(path, "; ".join(problems), untouched=True)


def _check_is_ours(conn: sqlite3.Connection, path: Path) -> None:
    """Refuses another program's database: our tables would be added to it, and WAL set."""
    if _version(conn) > 0:
        return
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    if tables:
        raise StoreUnusable(
            f"{path} is a SQLite database but not a unibench store (it holds "
            f"{', '.join(tables[:5])}{', ...' if len(tables) > 5 else ''}): name the store "
            "with --store or $BENCH_STORE"
        )


def _use_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Switches an old store to WAL. The switch needs the file to itself and SQLite does not
    wait for that: with other processes opening the store too, try again until the timeout."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as exc:
            if _primary_code(exc) != sqlite3.SQLITE_BUSY:
                raise
        if time.monotonic() > deadline:
            raise StoreError(f"{path} could not be switched to WAL: another process holds it")
        time.sleep(0.01)


def _primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's result code, without its extended part; None if Python raised the error."""
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite said the file is damaged (not that a statement or a lock failed)."""
    return _primary_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _cannot_open(path: Path, exc: sqlite3.OperationalError) -> StoreError:
    if _primary_code(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"{path} stayed locked by another process for {BUSY_TIMEOUT:.0f} s ({exc}); try "
            "again once it is done"
        )
    return StoreUnusable(f"cannot use {path} as the store: {exc}")


def damaged(path: Path, what: str, untouched: bool) -> StoreUnusable:
    """The error for a damaged store, with what to do about it."""
    found = "nothing was written to it" if untouched else "found while using it"
    aside = shlex.quote(f"{path}.damaged")
    return StoreUnusable(
        f"{path} is damaged ({what}); {found}. Move it aside, and the next run starts a new "
        f"store there: mv {shlex.quote(str(path))} {aside}. To save what it holds: "
        f"sqlite3 {aside} .recover | sqlite3 {shlex.quote(f'{path}.recovered')} "
        "(a sqlite3 built with .recover), then use that with --store"
    )
