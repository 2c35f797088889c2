"""The SQLite database of the service: one file, WAL mode, ordered migrations, one writer.

``Database(path)`` opens (or creates) the file and brings its schema up to date. All access goes
through one connection guarded by a lock, inside explicit transactions::

    with db.transaction() as conn:        # BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)
        conn.execute("UPDATE jobs SET ...")
    with db.read() as conn:               # a consistent snapshot for several SELECTs
        rows = conn.execute("SELECT ...").fetchall()

Settings and why:

- ``journal_mode=WAL``: readers in other processes never block the writer;
- ``synchronous=FULL``: a committed transaction survives a crash of the process *and* of the
  machine (every commit fsyncs the WAL; the service commits about once per outer step);
- ``busy_timeout``: another process holding the write lock (an old server still shutting down)
  makes us wait instead of failing with "database is locked";
- ``foreign_keys=ON``: events cannot point to a job that does not exist (checkpoints may,
  after their job is deleted: services.store.retention);
- one connection (``check_same_thread=False``) and a lock: threads of the service (gRPC handlers,
  the runner, the scheduler) take turns, so they never race for SQLite's own write lock.

Migrations: :data:`MIGRATIONS` is an ordered list of (version, steps); a step is an SQL
statement or a function of the connection (a change of stored JSON). The table
``schema_version`` holds the version of the file; opening applies every newer migration, each
in its own transaction. A file written by a newer version of the service is refused.
Times are stored as integer microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.domain import canonical_json

logger = logging.getLogger(__name__)

# How long a statement waits for another process's write lock before failing (milliseconds).
BUSY_TIMEOUT_MS = 10_000
MICROS = 1_000_000

_STATES = "'PENDING', 'RUNNING', 'CANCELLING', 'SUCCEEDED', 'FAILED', 'CANCELLED'"
_SCHEMA_V1 = (
    f"""CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,                 -- insertion order: the key of list pages
        job_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('training', 'evaluation')),
        state TEXT NOT NULL CHECK (state IN ({_STATES})),
        spec_json TEXT NOT NULL,
        request_id TEXT UNIQUE,                 -- NULL: no idempotency key
        schedule_id TEXT,                       -- kept when the schedule is deleted
        fire_time INTEGER,
        step INTEGER NOT NULL DEFAULT 0 CHECK (step >= 0),
        error TEXT NOT NULL DEFAULT '',
        device TEXT NOT NULL DEFAULT '',
        worker_nodes TEXT NOT NULL DEFAULT '[]',
        metrics TEXT NOT NULL DEFAULT '{{}}',
        evaluation TEXT NOT NULL DEFAULT '[]',
        last_seq INTEGER NOT NULL DEFAULT 0,
        create_time INTEGER NOT NULL,
        update_time INTEGER NOT NULL,
        UNIQUE (schedule_id, fire_time)
    )""",
    "CREATE INDEX jobs_by_state ON jobs (state, id)",
    """CREATE TABLE events (
        job_id TEXT NOT NULL REFERENCES jobs (job_id),
        seq INTEGER NOT NULL CHECK (seq >= 1),
        kind TEXT NOT NULL,
        step INTEGER NOT NULL,
        payload TEXT NOT NULL,
        snapshot TEXT NOT NULL,                 -- the job's changing fields after the event
        time INTEGER NOT NULL,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        checkpoint_id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL REFERENCES jobs (job_id),
        step INTEGER NOT NULL CHECK (step >= 0),
        file_name TEXT NOT NULL UNIQUE,         -- relative to the checkpoint root
        size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        create_time INTEGER NOT NULL
    )""",
    "CREATE INDEX checkpoints_by_job ON checkpoints (job_id, step, id)",
    """CREATE TABLE schedules (
        id INTEGER PRIMARY KEY,
        schedule_id TEXT NOT NULL UNIQUE,
        request_id TEXT UNIQUE,
        cron TEXT NOT NULL,
        timezone TEXT NOT NULL,
        template_json TEXT NOT NULL,
        overlap_policy TEXT NOT NULL CHECK (overlap_policy IN ('skip', 'queue', 'cancel_previous')),
        paused INTEGER NOT NULL DEFAULT 0,
        next_fire_time INTEGER,
        last_job_id TEXT NOT NULL DEFAULT '',
        warm_start_from_previous INTEGER NOT NULL DEFAULT 0,
        create_time INTEGER NOT NULL,
        update_time INTEGER NOT NULL
    )""",
    """CREATE TABLE firings (
        schedule_id TEXT NOT NULL REFERENCES schedules (schedule_id) ON DELETE CASCADE,
        fire_time INTEGER NOT NULL,
        job_id TEXT REFERENCES jobs (job_id),   -- NULL: the firing created no job
        outcome TEXT NOT NULL CHECK (outcome IN ('created', 'skipped')),
        time INTEGER NOT NULL,
        PRIMARY KEY (schedule_id, fire_time)
    )""",
)
# v2: a firing can be "queued" (it waits for the schedule's previous job to end, or for a free
# job slot; services.schedule): SQLite cannot change a CHECK, so the table is rebuilt. At most
# one queued firing per schedule (a partial unique index).
_SCHEMA_V2 = (
    """CREATE TABLE firings_v2 (
        schedule_id TEXT NOT NULL REFERENCES schedules (schedule_id) ON DELETE CASCADE,
        fire_time INTEGER NOT NULL,
        job_id TEXT REFERENCES jobs (job_id),   -- NULL: the firing created no job (yet)
        outcome TEXT NOT NULL CHECK (outcome IN ('created', 'skipped', 'queued')),
        time INTEGER NOT NULL,
        PRIMARY KEY (schedule_id, fire_time)
    )""",
    "INSERT INTO firings_v2 (schedule_id, fire_time, job_id, outcome, time)"
    " SELECT schedule_id, fire_time, job_id, outcome, time FROM firings",
    "DROP TABLE firings",
    "ALTER TABLE firings_v2 RENAME TO firings",
    "CREATE UNIQUE INDEX firings_one_queued ON firings (schedule_id) WHERE outcome = 'queued'",
)
# v3: checkpoints lose their foreign key to jobs. Deleting a job keeps the checkpoints that a
# warm start uses (services.store.retention); they keep the job_id of the job that wrote them
# after its row is gone. SQLite cannot drop a constraint, so the table is rebuilt.
_SCHEMA_V3 = (
    """CREATE TABLE checkpoints_v3 (
        id INTEGER PRIMARY KEY,
        checkpoint_id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,                   -- the job that wrote it (may be deleted)
        step INTEGER NOT NULL CHECK (step >= 0),
        file_name TEXT NOT NULL UNIQUE,         -- relative to the checkpoint root
        size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        create_time INTEGER NOT NULL
    )""",
    "INSERT INTO checkpoints_v3 (id, checkpoint_id, job_id, step, file_name, size_bytes,"
    " sha256, create_time) SELECT id, checkpoint_id, job_id, step, file_name, size_bytes,"
    " sha256, create_time FROM checkpoints",
    "DROP TABLE checkpoints",
    "ALTER TABLE checkpoints_v3 RENAME TO checkpoints",
    "CREATE INDEX checkpoints_by_job ON checkpoints (job_id, step, id)",
)


# v4: specs are stored as the domain's JSON (services.domain.spec: TrainingSpec.to_json,
# EvaluationJobSpec.to_json) instead of the proto JSON of a JobSpec / EvaluationJobSpec. Both
# have the same keys; proto JSON leaves out a field at its zero value (and rows written before
# a field existed lack it), the domain's JSON names it: these are the values added, as they
# were when this migration was written. Fields left out because they are unset (None in the
# domain: gpus_per_worker, evaluation, a switch the optimizer lacks) stay left out.
_TRAINING_FIELDS = {
    "task_args": {},
    "warm_start_checkpoint_id": "",
    "worker_resources": {},
    "cpus_per_worker": 1,
    "keep_checkpoints": 5,
}
_OPTIMIZER_FIELDS: dict[str, Any] = {"constants": {}}
_EVALUATION_FIELDS = {"task": "", "seeds": 3, "baselines": []}


def _with_fields(data: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a dict) with each missing key of ``fields`` set to its value."""
    return {**json.loads(json.dumps(fields)), **data}


def training_spec_v4(data: dict[str, Any]) -> dict[str, Any]:
    """A training spec (or schedule template) in proto JSON -> the domain's JSON."""
    data = _with_fields(data, _TRAINING_FIELDS)
    if isinstance(data.get("optimizer"), dict):
        data["optimizer"] = _with_fields(data["optimizer"], _OPTIMIZER_FIELDS)
    if isinstance(data.get("evaluation"), dict):
        data["evaluation"] = _with_fields(data["evaluation"], _EVALUATION_FIELDS)
    return data


def evaluation_spec_v4(data: dict[str, Any]) -> dict[str, Any]:
    """An evaluation job's spec in proto JSON -> the domain's JSON."""
    data = _with_fields(data, {"checkpoint_id": ""})
    data["evaluation"] = _with_fields(data.get("evaluation") or {}, _EVALUATION_FIELDS)
    return data


def _converted(text: str, convert: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
    """``text`` converted (unchanged when it is not a JSON object: logged, left for the
    service to report when the job runs)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        logger.warning("stored spec is not a JSON object, left as it is: %.200s", text)
        return text
    return canonical_json(convert(data))


def _specs_to_domain_json(conn: sqlite3.Connection) -> None:
    rows = conn.execute("SELECT id, kind, spec_json FROM jobs").fetchall()
    for row in rows:
        convert = training_spec_v4 if row["kind"] == "training" else evaluation_spec_v4
        conn.execute(
            "UPDATE jobs SET spec_json = ? WHERE id = ?",
            (_converted(row["spec_json"], convert), row["id"]),
        )
    for row in conn.execute("SELECT id, template_json FROM schedules").fetchall():
        conn.execute(
            "UPDATE schedules SET template_json = ? WHERE id = ?",
            (_converted(row["template_json"], training_spec_v4), row["id"]),
        )


_SCHEMA_V4 = (_specs_to_domain_json,)
# A step of a migration: an SQL statement, or a function that changes rows.
Step = str | Callable[[sqlite3.Connection], None]
# (version, steps), in order. Never edit a released migration: append a new one.
MIGRATIONS: tuple[tuple[int, tuple[Step, ...]], ...] = (
    (1, _SCHEMA_V1),
    (2, _SCHEMA_V2),
    (3, _SCHEMA_V3),
    (4, _SCHEMA_V4),
)


def to_micros(time: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch."""
    if time.tzinfo is None:
        raise ValueError(f"time {time!r} must be timezone-aware")
    delta = time - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * MICROS + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime of integer microseconds since the epoch."""
    return datetime.fromtimestamp(micros // MICROS, UTC).replace(microsecond=micros % MICROS)


class Database:
    """The service's SQLite file; see the module docstring."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1e3
        )
        self._conn.row_factory = sqlite3.Row
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            f"busy_timeout={BUSY_TIMEOUT_MS}",
        ):
            self._conn.execute(f"PRAGMA {pragma}")
        self._migrate()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): committed on exit, rolled back on error.

        Nested use from the same thread joins the outer transaction.
        """
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every SELECT inside sees the same committed snapshot."""
        with self._lock:
            if self._conn.in_transaction:
                yield self._conn
                return
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        with self.read() as conn:
            return _version(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            if conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        current = self.schema_version
        latest = MIGRATIONS[-1][0]
        if current > latest:
            raise RuntimeError(
                f"{self.path} has schema version {current}, newer than this service's {latest}:"
                " upgrade the service"
            )
        for version, steps in MIGRATIONS:
            if version <= current:
                continue
            with self.transaction() as conn:
                for step in steps:
                    if callable(step):
                        step(conn)
                    else:
                        conn.execute(step)
                conn.execute("UPDATE schema_version SET version = ?", (version,))
            logger.info("%s: migrated the schema to version %d", self.path, version)


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT version FROM schema_version").fetchone()[0])
