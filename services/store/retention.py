"""Which checkpoints are kept, and the deletion of a job's records. SQL that runs inside the
caller's transaction (``conn``); the ``Store`` deletes the files of the rows it returns once the
transaction has committed.

A checkpoint is **used** while something may still read it:

- a job's spec names it as its warm start (the top-level key ``warm_start_checkpoint_id`` of
  the stored spec JSON), whatever the job's state: a requeued job reads it again, and a
  finished job's record says where it started;
- a schedule's template names it as its warm start (the same key of ``template_json``);
- an active (PENDING, RUNNING, CANCELLING) evaluation job evaluates it (the top-level key
  ``checkpoint_id`` of its spec JSON).

**Retention** (:func:`prune`, after a job indexes a new checkpoint): the job's latest ``keep``
checkpoints (by step, then by order of writing) stay, and so does every used one; the other
index rows are deleted in the transaction of the insert and returned. Their files are deleted
after the commit; a crash in between leaves files without an index row, which the start-up
sweep (``CheckpointStore.sweep``) removes. A checkpoint kept only because it was used is pruned
at the job's next checkpoint after its last user is deleted.

**Deleting a job** (:func:`delete_job`, terminal jobs only): its record, its events and its
unused checkpoint rows go. Its used checkpoints stay indexed, still carrying the ``job_id`` of
the job that wrote them although that job's row is gone (the checkpoints table has no foreign
key to jobs, schema version 3, for this reason): FetchCheckpoint, Evaluate and warm starts keep
working on them. Such an *orphan* checkpoint lives as long as it is used; deleting its last user
(a job or a schedule) deletes its row in the same transaction (:func:`release_orphans`). Firings
that created the job keep their row with ``job_id`` NULL, so the schedule never fires that slot
again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import NamedTuple

from services.domain import (
    ACTIVE_STATES,
    CheckpointRecord,
    FailedPrecondition,
    JobState,
    NotFound,
)
from services.store import rows

# The JSON keys (top level of the stored spec / template) that name a checkpoint in use.
WARM_START_KEY = "$.warm_start_checkpoint_id"
EVALUATED_KEY = "$.checkpoint_id"
_ACTIVE = tuple(s.value for s in ACTIVE_STATES)
# Every id that something uses (a spec that is not valid JSON names nothing).
_USED_SQL = f"""
    SELECT json_extract(spec_json, '{WARM_START_KEY}') AS id FROM jobs WHERE json_valid(spec_json)
    UNION SELECT json_extract(template_json, '{WARM_START_KEY}') FROM schedules
        WHERE json_valid(template_json)
    UNION SELECT json_extract(spec_json, '{EVALUATED_KEY}') FROM jobs
        WHERE kind = 'evaluation' AND state IN ({", ".join("?" * len(_ACTIVE))})
        AND json_valid(spec_json)
"""


class DeletedJob(NamedTuple):
    """What deleting a job did to checkpoints: ``deleted`` (the job's own, rows gone),
    ``kept`` (the job's own that something uses, still indexed) and ``released`` (orphans of
    earlier deleted jobs that nothing uses any more, rows gone). Files of deleted and released
    rows are the caller's to delete."""

    deleted: list[CheckpointRecord]
    kept: list[CheckpointRecord]
    released: list[CheckpointRecord]


def used_among(conn: sqlite3.Connection, checkpoint_ids: Collection[str]) -> set[str]:
    """Those of ``checkpoint_ids`` that a job or a schedule uses (see the module docstring)."""
    if not checkpoint_ids:
        return set()
    marks = ", ".join("?" * len(checkpoint_ids))
    found = conn.execute(
        f"SELECT id FROM ({_USED_SQL}) WHERE id IN ({marks})",
        (*_ACTIVE, *checkpoint_ids),
    ).fetchall()
    return {row[0] for row in found}


def _drop(conn: sqlite3.Connection, records: list[CheckpointRecord]) -> None:
    conn.executemany(
        "DELETE FROM checkpoints WHERE checkpoint_id = ?", [(r.checkpoint_id,) for r in records]
    )


def _unused(
    conn: sqlite3.Connection, records: list[CheckpointRecord]
) -> tuple[list[CheckpointRecord], list[CheckpointRecord]]:
    """``(unused, used)`` of ``records``, each in the given order."""
    used = used_among(conn, [r.checkpoint_id for r in records])
    return (
        [r for r in records if r.checkpoint_id not in used],
        [r for r in records if r.checkpoint_id in used],
    )


def prune(conn: sqlite3.Connection, job_id: str, keep: int) -> list[CheckpointRecord]:
    """Delete the index rows of the job's checkpoints older than its latest ``keep`` that
    nothing uses; returns them (oldest first)."""
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    older = conn.execute(
        "SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step DESC, id DESC LIMIT -1 OFFSET ?",
        (job_id, keep),
    ).fetchall()
    dropped, _ = _unused(conn, [rows.checkpoint_from_row(r) for r in reversed(older)])
    _drop(conn, dropped)
    return dropped


def release_orphans(conn: sqlite3.Connection) -> list[CheckpointRecord]:
    """Delete the rows of checkpoints whose job is gone and that nothing uses; returns them."""
    found = conn.execute(
        "SELECT * FROM checkpoints AS c WHERE NOT EXISTS"
        " (SELECT 1 FROM jobs AS j WHERE j.job_id = c.job_id) ORDER BY id"
    ).fetchall()
    released, _ = _unused(conn, [rows.checkpoint_from_row(r) for r in found])
    _drop(conn, released)
    return released


def delete_job(conn: sqlite3.Connection, job_id: str) -> DeletedJob:
    """Delete a terminal job's records (see the module docstring); FailedPrecondition for an
    active job, NotFound for an unknown one."""
    state = JobState(_job_state(conn, job_id))
    if not state.is_terminal():
        raise FailedPrecondition(
            f"job {job_id} is {state.value}: only a finished job can be deleted (cancel it first)"
        )
    found = conn.execute(
        "SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step, id", (job_id,)
    ).fetchall()
    conn.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
    conn.execute("UPDATE firings SET job_id = NULL WHERE job_id = ?", (job_id,))
    conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
    deleted, kept = _unused(conn, [rows.checkpoint_from_row(r) for r in found])
    _drop(conn, deleted)
    return DeletedJob(deleted, kept, release_orphans(conn))


def _job_state(conn: sqlite3.Connection, job_id: str) -> str:
    row = conn.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    return row["state"]
