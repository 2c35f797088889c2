"""SQL of jobs, their events and their checkpoint index; every function runs inside the
caller's transaction (``conn``) and takes the current time ``now`` in microseconds.

Functions that record something return the seqs of the events they appended, so that the
``Store`` can notify its subscribers once the transaction has committed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from services.domain import (
    ACTIVE_STATES,
    DEVICES,
    AlreadyExists,
    CheckpointRecord,
    EventKind,
    FailedPrecondition,
    Job,
    JobEvent,
    JobKind,
    JobState,
    NotFound,
    ResourceExhausted,
    check_transition,
)
from services.store import rows

# States in which a runner may report progress and checkpoints.
RUNNING_STATES = (JobState.RUNNING.value, JobState.CANCELLING.value)


def job_row(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    return row


def append_event(
    conn: sqlite3.Connection, job_id: str, kind: EventKind, payload: Mapping[str, Any], now: int
) -> int:
    """Append an event (the job's next seq) with a snapshot of the job as it is now."""
    row = job_row(conn, job_id)
    seq = row["last_seq"] + 1
    conn.execute("UPDATE jobs SET last_seq = ? WHERE job_id = ?", (seq, job_id))
    conn.execute(
        "INSERT INTO events (job_id, seq, kind, step, payload, snapshot, time)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            job_id,
            seq,
            kind.value,
            row["step"],
            rows.dumps(dict(payload)),
            rows.snapshot_of(row),
            now,
        ),
    )
    return seq


def _existing_for_request(
    conn: sqlite3.Connection, request_id: str, spec_json: str, kind: JobKind
) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
    if row is None:
        return None
    if row["spec_json"] != spec_json or row["kind"] != kind.value:
        raise AlreadyExists(
            f"request_id {request_id!r} was used for job {row['job_id']} with a different spec"
        )
    return rows.job_from_row(row)


def _existing_for_firing(
    conn: sqlite3.Connection, schedule_id: str, fire_time: int | None
) -> Job | None:
    if conn.execute("SELECT 1 FROM schedules WHERE schedule_id = ?", (schedule_id,)).fetchone():
        row = conn.execute(
            "SELECT * FROM jobs WHERE schedule_id = ? AND fire_time = ?", (schedule_id, fire_time)
        ).fetchone()
        return None if row is None else rows.job_from_row(row)
    raise NotFound(f"schedule {schedule_id!r} not found")


def create_job(
    conn: sqlite3.Connection,
    spec_json: str,
    kind: JobKind,
    request_id: str,
    schedule_id: str,
    fire_time: int | None,
    max_active: int | None,
    now: int,
) -> tuple[Job, bool, list[int]]:
    """(job, created, seqs); see ``Store.create_job``."""
    if schedule_id and fire_time is None:
        raise ValueError("a job created by a schedule needs its fire_time")
    existing = request_id and _existing_for_request(conn, request_id, spec_json, kind)
    if not existing and schedule_id:
        existing = _existing_for_firing(conn, schedule_id, fire_time)
    if existing:
        return existing, False, []
    if max_active is not None and count_jobs(conn, ACTIVE_STATES) >= max_active:
        raise ResourceExhausted(f"the service already has {max_active} active jobs (--max-jobs)")
    job_id = rows.new_id("job")
    conn.execute(
        "INSERT INTO jobs (job_id, kind, state, spec_json, request_id, schedule_id, fire_time,"
        " create_time, update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job_id,
            kind.value,
            JobState.PENDING.value,
            spec_json,
            request_id or None,
            schedule_id or None,
            fire_time if schedule_id else None,
            now,
            now,
        ),
    )
    if schedule_id:
        conn.execute(  # a queued firing (services.schedule) becomes created
            "INSERT INTO firings (schedule_id, fire_time, job_id, outcome, time)"
            " VALUES (?, ?, ?, 'created', ?) ON CONFLICT (schedule_id, fire_time) DO UPDATE"
            " SET job_id = excluded.job_id, outcome = 'created', time = excluded.time"
            " WHERE outcome = 'queued'",
            (schedule_id, fire_time, job_id, now),
        )
        conn.execute(
            "UPDATE schedules SET last_job_id = ?, update_time = ? WHERE schedule_id = ?",
            (job_id, now, schedule_id),
        )
    reason = f"fired by schedule {schedule_id}" if schedule_id else "submitted"
    payload = {"from": None, "to": JobState.PENDING.value, "reason": reason}
    seq = append_event(conn, job_id, EventKind.STATE_CHANGE, payload, now)
    return rows.job_from_row(job_row(conn, job_id)), True, [seq]


def transition(
    conn: sqlite3.Connection,
    job_id: str,
    target: JobState,
    reason: str,
    rewind_to_step: int | None,
    now: int,
) -> tuple[Job, list[int]]:
    """Move a job along the transition table; see ``Store.transition``."""
    row = job_row(conn, job_id)
    current = JobState(row["state"])
    check_transition(job_id, current, target)
    step = row["step"]
    if rewind_to_step is not None:
        step = _rewound_step(conn, job_id, current, target, step, rewind_to_step)
    updates = {"state": target.value, "step": step, "update_time": now}
    if target is JobState.FAILED:
        updates["error"] = reason
    if target is JobState.PENDING:  # requeued: placed again when it next runs
        updates.update(device="", worker_nodes="[]")
    _update(conn, job_id, updates)
    payload = {"from": current.value, "to": target.value, "reason": reason}
    seq = append_event(conn, job_id, EventKind.STATE_CHANGE, payload, now)
    return rows.job_from_row(job_row(conn, job_id)), [seq]


def _rewound_step(
    conn: sqlite3.Connection,
    job_id: str,
    current: JobState,
    target: JobState,
    step: int,
    rewind_to: int,
) -> int:
    if not (current is JobState.RUNNING and target is JobState.PENDING):
        raise ValueError("rewind_to_step is only for a requeue (RUNNING -> PENDING)")
    latest = latest_checkpoint(conn, job_id)
    floor = latest.step if latest else 0
    if not floor <= rewind_to <= step:
        raise FailedPrecondition(
            f"job {job_id}: cannot rewind to step {rewind_to}; it must lie between its latest"
            f" checkpoint's step {floor} and its step {step}"
        )
    return rewind_to


def _update(conn: sqlite3.Connection, job_id: str, updates: Mapping[str, Any]) -> None:
    columns = ", ".join(f"{name} = ?" for name in updates)
    conn.execute(f"UPDATE jobs SET {columns} WHERE job_id = ?", (*updates.values(), job_id))


def request_cancel(
    conn: sqlite3.Connection, job_id: str, reason: str, now: int
) -> tuple[Job, bool, list[int]]:
    """(job, changed, seqs): PENDING -> CANCELLED, RUNNING -> CANCELLING, else no change."""
    state = JobState(job_row(conn, job_id)["state"])
    target = {JobState.PENDING: JobState.CANCELLED, JobState.RUNNING: JobState.CANCELLING}
    if state not in target:
        return rows.job_from_row(job_row(conn, job_id)), False, []
    job, seqs = transition(conn, job_id, target[state], reason, None, now)
    return job, True, seqs


def update_progress(
    conn: sqlite3.Connection, job_id: str, step: int, metrics: Mapping[str, float], now: int
) -> tuple[Job, list[int]]:
    """Record the step reached and metrics; see ``Store.update_progress``."""
    row = job_row(conn, job_id)
    if row["state"] not in RUNNING_STATES:
        raise FailedPrecondition(f"job {job_id} is {row['state']}: it reports no progress")
    if not isinstance(step, int) or isinstance(step, bool) or step < row["step"]:
        raise FailedPrecondition(
            f"job {job_id}: step {step!r} would move its step {row['step']} backwards"
        )
    reported = rows.check_metrics(metrics)
    merged = {**json.loads(row["metrics"]), **reported}
    _update(conn, job_id, {"step": step, "metrics": rows.dumps(merged), "update_time": now})
    payload = {"step": step, "metrics": reported}
    seq = append_event(conn, job_id, EventKind.METRICS, payload, now)
    return rows.job_from_row(job_row(conn, job_id)), [seq]


def set_fields(conn: sqlite3.Connection, job_id: str, updates: Mapping[str, Any], now: int) -> Job:
    """Update plain columns (placement, evaluation) of an existing job."""
    job_row(conn, job_id)
    _update(conn, job_id, {**updates, "update_time": now})
    return rows.job_from_row(job_row(conn, job_id))


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


def count_jobs(conn: sqlite3.Connection, states: Iterable[JobState] | None) -> int:
    where, args = _state_filter(states)
    return conn.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]


def _state_filter(states: Iterable[JobState] | None) -> tuple[str, tuple[Any, ...]]:
    values = tuple(sorted({s.value for s in states or ()}))
    if not values:
        return "WHERE 1", ()
    return f"WHERE state IN ({', '.join('?' * len(values))})", values


def list_jobs(
    conn: sqlite3.Connection, states: Iterable[JobState] | None, size: int, token: str
) -> tuple[list[Job], str]:
    """A page of jobs, newest first; see ``Store.list_jobs``."""
    states = list(states or ())
    limit = rows.page_size(size)
    key = rows.filter_key(states)
    before = rows.decode_token(token, key)
    where, args = _state_filter(states)
    if before is not None:
        where, args = f"{where} AND id < ?", (*args, before)
    found = conn.execute(
        f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?", (*args, limit + 1)
    ).fetchall()
    page = found[:limit]
    next_token = rows.encode_token(page[-1]["id"], key) if len(found) > limit else ""
    return [rows.job_from_row(r) for r in page], next_token


def events_after(
    conn: sqlite3.Connection, job_id: str, after_seq: int, limit: int, from_step: int
) -> list[JobEvent]:
    """Events with seq > after_seq, in order; metrics events of steps < from_step skipped."""
    job = rows.job_from_row(job_row(conn, job_id))
    found = conn.execute(
        "SELECT * FROM events WHERE job_id = ? AND seq > ? AND (kind != ? OR step >= ?)"
        " ORDER BY seq LIMIT ?",
        (job_id, after_seq, EventKind.METRICS.value, from_step, limit),
    ).fetchall()
    return [rows.event_from_row(r, job) for r in found]


def add_checkpoint(
    conn: sqlite3.Connection,
    job_id: str,
    step: int,
    file_name: str,
    size_bytes: int,
    sha256: str,
    now: int,
) -> tuple[CheckpointRecord, list[int]]:
    """Index a written checkpoint file; see ``Store.add_checkpoint``."""
    state = JobState(job_row(conn, job_id)["state"])
    if state.is_terminal():
        raise FailedPrecondition(f"job {job_id} is {state.value}: it writes no checkpoints")
    checkpoint_id = rows.new_id("ckpt", rows.CHECKPOINT_ID_BYTES)
    conn.execute(
        "INSERT INTO checkpoints (checkpoint_id, job_id, step, file_name, size_bytes, sha256,"
        " create_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (checkpoint_id, job_id, step, file_name, size_bytes, sha256, now),
    )
    record = get_checkpoint(conn, checkpoint_id)
    payload = rows.checkpoint_payload(record, now)
    seq = append_event(conn, job_id, EventKind.CHECKPOINT_WRITTEN, payload, now)
    return record, [seq]


def get_checkpoint(conn: sqlite3.Connection, checkpoint_id: str) -> CheckpointRecord:
    row = conn.execute(
        "SELECT * FROM checkpoints WHERE checkpoint_id = ?", (checkpoint_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"checkpoint {checkpoint_id!r} not found")
    return rows.checkpoint_from_row(row)


def list_checkpoints(conn: sqlite3.Connection, job_id: str) -> list[CheckpointRecord]:
    job_row(conn, job_id)
    found = conn.execute(
        "SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step, id", (job_id,)
    ).fetchall()
    return [rows.checkpoint_from_row(r) for r in found]


def latest_checkpoint(conn: sqlite3.Connection, job_id: str) -> CheckpointRecord | None:
    row = conn.execute(
        "SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step DESC, id DESC LIMIT 1",
        (job_id,),
    ).fetchone()
    return None if row is None else rows.checkpoint_from_row(row)
