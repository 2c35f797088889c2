"""SQL of schedules and their firings; every function runs inside the caller's transaction.

Cron parsing and the misfire rule belong to ``services.schedule``: this module stores what it
decides (``next_fire_time``) and keys every firing on ``(schedule_id, fire_time)``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from services.domain import (
    AlreadyExists,
    Firing,
    NotFound,
    OverlapPolicy,
    ResourceExhausted,
    Schedule,
)
from services.store import rows

# The filter key of schedule page tokens (schedules are not filtered).
_SCHEDULE_PAGES = "schedules"


def _row(conn: sqlite3.Connection, schedule_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM schedules WHERE schedule_id = ?", (schedule_id,)).fetchone()
    if row is None:
        raise NotFound(f"schedule {schedule_id!r} not found")
    return row


def get_schedule(conn: sqlite3.Connection, schedule_id: str) -> Schedule:
    return rows.schedule_from_row(_row(conn, schedule_id))


def create_schedule(
    conn: sqlite3.Connection,
    fields: dict[str, Any],
    request_id: str,
    now: int,
    max_schedules: int | None = None,
) -> tuple[Schedule, bool]:
    """(schedule, created); an existing request_id returns its schedule when ``fields`` match;
    ResourceExhausted when ``max_schedules`` schedules exist already."""
    if request_id:
        row = conn.execute("SELECT * FROM schedules WHERE request_id = ?", (request_id,)).fetchone()
        if row is not None:
            # next_fire_time is computed from the clock, not sent: a retry later still matches
            if any(
                row[name] != value for name, value in fields.items() if name != "next_fire_time"
            ):
                raise AlreadyExists(
                    f"request_id {request_id!r} was used for schedule {row['schedule_id']}"
                    " with a different request"
                )
            return rows.schedule_from_row(row), False
    if max_schedules is not None:
        count = conn.execute("SELECT COUNT(*) FROM schedules").fetchone()[0]
        if count >= max_schedules:
            raise ResourceExhausted(
                f"the service already has {count} schedules (--max-schedules {max_schedules});"
                " delete one first"
            )
    schedule_id = rows.new_id("sched")
    names = ", ".join(fields)
    marks = ", ".join("?" * len(fields))
    conn.execute(
        f"INSERT INTO schedules (schedule_id, request_id, create_time, update_time, {names})"
        f" VALUES (?, ?, ?, ?, {marks})",
        (schedule_id, request_id or None, now, now, *fields.values()),
    )
    return get_schedule(conn, schedule_id), True


def schedule_fields(
    cron: str,
    timezone: str,
    template_json: str,
    overlap_policy: OverlapPolicy,
    paused: bool,
    warm_start_from_previous: bool,
    next_fire_time: int | None,
) -> dict[str, Any]:
    """The column values of a new schedule (also what a repeated request_id is compared on)."""
    return {
        "cron": cron,
        "timezone": timezone,
        "template_json": template_json,
        "overlap_policy": overlap_policy.value,
        "paused": int(paused),
        "warm_start_from_previous": int(warm_start_from_previous),
        "next_fire_time": next_fire_time,
    }


def update_schedule(
    conn: sqlite3.Connection, schedule_id: str, updates: dict[str, Any], now: int
) -> Schedule:
    _row(conn, schedule_id)
    updates = {**updates, "update_time": now}
    columns = ", ".join(f"{name} = ?" for name in updates)
    conn.execute(
        f"UPDATE schedules SET {columns} WHERE schedule_id = ?", (*updates.values(), schedule_id)
    )
    return get_schedule(conn, schedule_id)


def delete_schedule(conn: sqlite3.Connection, schedule_id: str) -> None:
    """Delete a schedule and its firings (its jobs are kept and keep its id)."""
    _row(conn, schedule_id)
    conn.execute("DELETE FROM schedules WHERE schedule_id = ?", (schedule_id,))


def list_schedules(conn: sqlite3.Connection, size: int, token: str) -> tuple[list[Schedule], str]:
    """A page of schedules, oldest first."""
    limit = rows.page_size(size)
    after = rows.decode_token(token, _SCHEDULE_PAGES)
    found = conn.execute(
        "SELECT * FROM schedules WHERE id > ? ORDER BY id LIMIT ?", (after or 0, limit + 1)
    ).fetchall()
    page = found[:limit]
    next_token = rows.encode_token(page[-1]["id"], _SCHEDULE_PAGES) if len(found) > limit else ""
    return [rows.schedule_from_row(r) for r in page], next_token


def due_schedules(conn: sqlite3.Connection, now: int) -> list[Schedule]:
    """Unpaused schedules whose next_fire_time is at or before ``now``, earliest first."""
    found = conn.execute(
        "SELECT * FROM schedules WHERE paused = 0 AND next_fire_time IS NOT NULL"
        " AND next_fire_time <= ? ORDER BY next_fire_time, id",
        (now,),
    ).fetchall()
    return [rows.schedule_from_row(r) for r in found]


def get_firing(conn: sqlite3.Connection, schedule_id: str, fire_time: int) -> Firing | None:
    row = conn.execute(
        "SELECT * FROM firings WHERE schedule_id = ? AND fire_time = ?", (schedule_id, fire_time)
    ).fetchone()
    return None if row is None else rows.firing_from_row(row)


def record_skipped_firing(
    conn: sqlite3.Connection, schedule_id: str, fire_time: int, now: int
) -> Firing:
    """Record that a firing created no job; an already recorded firing is returned as it is."""
    return _record_firing(conn, schedule_id, fire_time, "skipped", now)


def queue_firing(conn: sqlite3.Connection, schedule_id: str, fire_time: int, now: int) -> Firing:
    """Record a queued firing; skipped instead if the schedule already has another queued one.
    An already recorded firing is returned as it is."""
    other = conn.execute(
        "SELECT 1 FROM firings WHERE schedule_id = ? AND outcome = 'queued' AND fire_time != ?",
        (schedule_id, fire_time),
    ).fetchone()
    return _record_firing(conn, schedule_id, fire_time, "skipped" if other else "queued", now)


def _record_firing(
    conn: sqlite3.Connection, schedule_id: str, fire_time: int, outcome: str, now: int
) -> Firing:
    _row(conn, schedule_id)
    existing = get_firing(conn, schedule_id, fire_time)
    if existing is not None:
        return existing
    conn.execute(
        "INSERT INTO firings (schedule_id, fire_time, job_id, outcome, time)"
        " VALUES (?, ?, NULL, ?, ?)",
        (schedule_id, fire_time, outcome, now),
    )
    firing = get_firing(conn, schedule_id, fire_time)
    if firing is None:  # cannot be: inserted just above, in the same transaction
        raise RuntimeError(f"firing {schedule_id} at {fire_time} was not recorded")
    return firing


def queued_firings(conn: sqlite3.Connection) -> list[Firing]:
    """Every queued firing, earliest fire_time first."""
    found = conn.execute(
        "SELECT * FROM firings WHERE outcome = 'queued' ORDER BY fire_time, schedule_id"
    ).fetchall()
    return [rows.firing_from_row(r) for r in found]


def earliest_fire_time(conn: sqlite3.Connection) -> int | None:
    """The smallest next_fire_time of the unpaused schedules (None: none will fire)."""
    return conn.execute("SELECT MIN(next_fire_time) FROM schedules WHERE paused = 0").fetchone()[0]
