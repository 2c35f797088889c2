"""``Store``: the service's records (jobs, events, checkpoint index, schedules) in SQLite.

Every method is one transaction; methods that change a job also append its event in that same
transaction, so the record and its event are committed together or not at all. Subscribers
(``subscribe``) are called after the commit with ``(job_id, seq)`` of each new event.
See ``services.store`` for how the pieces are meant to be used.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from services.domain import (
    CheckpointRecord,
    EventKind,
    Firing,
    Job,
    JobEvent,
    JobKind,
    JobState,
    OverlapPolicy,
    Schedule,
)
from services.store import jobs, retention, schedules
from services.store.db import Database, from_micros, to_micros
from services.store.retention import DeletedJob

logger = logging.getLogger(__name__)

# Events returned by one events_after call at most.
MAX_EVENTS_PER_CALL = 1000

Listener = Callable[[str, int], None]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class IndexedCheckpoint(NamedTuple):
    """A new index row and the rows retention dropped for it (their files are to delete)."""

    record: CheckpointRecord
    dropped: list[CheckpointRecord]


class Store:
    """Jobs, events, checkpoints index and schedules over one SQLite file (see the module doc).

    ``clock`` returns the current time (timezone-aware); tests inject a fake one.
    """

    def __init__(self, path: str | Path, clock: Clock = utc_now):
        self.db = Database(path)
        self._clock = clock
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # -- notifications -------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(job_id, seq)`` after every committed event; returns unsubscribe.

        Listeners run on the thread that committed, after the commit, outside the store's lock
        (they may read the store). They must be quick and must not block: an asyncio server
        bridges with ``loop.call_soon_threadsafe``. An exception in a listener is logged and
        does not affect the write or the other listeners. Writes from several threads may
        notify out of order (seq 6 before seq 5): treat a notification as "there is something
        new", and read ``events_after(job_id, last_seq_seen)``.
        """
        with self._listeners_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, job_id: str, seqs: Sequence[int]) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for seq in seqs:
            for listener in listeners:
                try:
                    listener(job_id, seq)
                except Exception:
                    logger.exception("store listener %r failed on %s #%d", listener, job_id, seq)

    @contextlib.contextmanager
    def _write(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        with self.db.transaction() as conn:
            yield conn, to_micros(self._clock())

    def _micros(self, time: datetime | None) -> int | None:
        return None if time is None else to_micros(time)

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(
        self,
        spec_json: str,
        *,
        kind: JobKind = JobKind.TRAINING,
        request_id: str = "",
        schedule_id: str = "",
        fire_time: datetime | None = None,
        max_active: int | None = None,
    ) -> tuple[Job, bool]:
        """Create a PENDING job; returns ``(job, created)``.

        spec_json: the canonical JSON of the validated spec (``TrainingSpec.to_json``).
        request_id: idempotency key. A known request_id with the same spec_json and kind returns
          the existing job (created False); with a different one it raises AlreadyExists.
        schedule_id, fire_time: the schedule firing that creates the job. A firing that already
          created a job returns that job (created False), so a scheduler that crashed between
          creating the job and advancing the schedule cannot start two. Records the firing and
          sets the schedule's last_job_id. NotFound for an unknown schedule.
        max_active: raise ResourceExhausted when this many jobs are already PENDING, RUNNING or
          CANCELLING (checked in the same transaction as the insert).
        The job's first event (seq 1) is its creation: a state change from None to PENDING.
        """
        with self._write() as (conn, now):
            job, created, seqs = jobs.create_job(
                conn,
                spec_json,
                kind,
                request_id,
                schedule_id,
                self._micros(fire_time),
                max_active,
                now,
            )
        self._notify(job.job_id, seqs)
        return job, created

    def get_job(self, job_id: str) -> Job:
        """The job (NotFound if unknown)."""
        with self.db.read() as conn:
            return jobs.rows.job_from_row(jobs.job_row(conn, job_id))

    def list_jobs(
        self, states: Iterable[JobState] | None = None, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Job], str]:
        """``(jobs, next_page_token)``: newest first, only ``states`` (None/empty: all).

        page_size 0 means 50, larger than 1000 means 1000, negative is ConfigError. The token is
        opaque and bound to the state filter (ConfigError(page_token) if it is not ours or was
        issued for another filter); "" on the last page. Jobs created after the first page do
        not shift later pages (the token is a position, not an offset).
        """
        with self.db.read() as conn:
            return jobs.list_jobs(conn, states, page_size, page_token)

    def count_jobs(self, states: Iterable[JobState] | None = None) -> int:
        """How many jobs are in ``states`` (None: all)."""
        with self.db.read() as conn:
            return jobs.count_jobs(conn, states)

    def transition(
        self, job_id: str, to: JobState, reason: str = "", *, rewind_to_step: int | None = None
    ) -> Job:
        """Move a job to ``to`` if the transition table allows it, else FailedPrecondition.

        FAILED stores ``reason`` as the job's error. A requeue (RUNNING -> PENDING) clears the
        placement and may rewind the step to where the job will resume: ``rewind_to_step``
        must lie between the latest checkpoint's step (0 without one) and the current step.
        Whether asking for a change that already happened is an error is the caller's choice:
        cancelling a finished job, for instance, is a no-op for the API (use request_cancel),
        but ``transition(SUCCEEDED -> CANCELLING)`` raises FailedPrecondition.
        """
        with self._write() as (conn, now):
            job, seqs = jobs.transition(conn, job_id, to, reason, rewind_to_step, now)
        self._notify(job_id, seqs)
        return job

    def request_cancel(self, job_id: str, reason: str = "cancel requested") -> tuple[Job, bool]:
        """CancelJob's change, atomically: ``(job, changed)``.

        PENDING -> CANCELLED (nothing runs yet), RUNNING -> CANCELLING (the runner checkpoints,
        then moves it to CANCELLED); CANCELLING or a terminal state: unchanged, changed False.
        """
        with self._write() as (conn, now):
            job, changed, seqs = jobs.request_cancel(conn, job_id, reason, now)
        self._notify(job_id, seqs)
        return job, changed

    def update_progress(self, job_id: str, step: int, metrics: Mapping[str, float]) -> Job:
        """Record that a RUNNING/CANCELLING job reached outer ``step``, with its metrics.

        The step never goes backwards: a smaller step raises FailedPrecondition (a stale
        runner); the same step is allowed (more metrics). ``metrics`` are merged into the job's
        latest metrics; the METRICS event carries the reported ones.
        """
        with self._write() as (conn, now):
            job, seqs = jobs.update_progress(conn, job_id, step, metrics, now)
        self._notify(job_id, seqs)
        return job

    def set_placement(self, job_id: str, device: str, worker_nodes: Sequence[str]) -> Job:
        """Where the job's workers run: device "cpu" or "gpu", one Ray node id per worker."""
        jobs.check_device(device)
        nodes = jobs.rows.dumps([str(n) for n in worker_nodes])
        with self._write() as (conn, now):
            return jobs.set_fields(conn, job_id, {"device": device, "worker_nodes": nodes}, now)

    def set_evaluation(self, job_id: str, summaries: Sequence[Mapping[str, Any]]) -> Job:
        """Store evaluation summaries (JSON objects with EvaluationSummary's fields)."""
        payload = jobs.rows.dumps([dict(s) for s in summaries])
        with self._write() as (conn, now):
            return jobs.set_fields(conn, job_id, {"evaluation": payload}, now)

    # -- events --------------------------------------------------------------------------------

    def append_event(self, job_id: str, kind: EventKind, payload: Mapping[str, Any]) -> int:
        """Append an event (payload per ``EventKind``'s docstring); returns its seq."""
        with self._write() as (conn, now):
            seq = jobs.append_event(conn, job_id, kind, payload, now)
        self._notify(job_id, [seq])
        return seq

    def log(self, job_id: str, level: str, message: str) -> int:
        """Append a LOG event (level INFO, WARNING or ERROR); returns its seq."""
        if level not in ("INFO", "WARNING", "ERROR"):
            raise ValueError(f"level must be INFO, WARNING or ERROR, got {level!r}")
        return self.append_event(job_id, EventKind.LOG, {"level": level, "message": message})

    def events_after(
        self,
        job_id: str,
        after_seq: int = 0,
        limit: int = MAX_EVENTS_PER_CALL,
        from_step: int = 0,
    ) -> list[JobEvent]:
        """The job's events with seq > after_seq in order (at most ``limit``, capped at 1000).

        from_step > 0 skips METRICS events of earlier steps (WatchJob's from_step); the other
        kinds are always returned. NotFound for an unknown job.
        """
        limit = max(0, min(limit, MAX_EVENTS_PER_CALL))
        with self.db.read() as conn:
            return jobs.events_after(conn, job_id, after_seq, limit, from_step)

    # -- checkpoints index ---------------------------------------------------------------------

    def add_checkpoint(
        self, job_id: str, step: int, file_name: str, size_bytes: int, sha256: str
    ) -> CheckpointRecord:
        """Index a checkpoint file written by ``CheckpointStore.write`` and append its
        CHECKPOINT_WRITTEN event, keeping every earlier checkpoint. A finished job takes no
        checkpoints (FailedPrecondition)."""
        return self.index_checkpoint(job_id, step, file_name, size_bytes, sha256).record

    def index_checkpoint(
        self,
        job_id: str,
        step: int,
        file_name: str,
        size_bytes: int,
        sha256: str,
        *,
        keep: int | None = None,
    ) -> IndexedCheckpoint:
        """``add_checkpoint`` with retention: with ``keep``, the index rows of the job's
        checkpoints older than its latest ``keep`` that no warm start uses are deleted in the
        same transaction (``services.store.retention``) and returned as ``dropped``; delete
        their files after this returns (``CheckpointStore.delete``)::

            stored = files.write(job_id, step, data)
            indexed = store.index_checkpoint(job_id, step, *stored, keep=spec.keep_checkpoints)
            files.delete(indexed.dropped)
        """
        with self._write() as (conn, now):
            record, seqs = jobs.add_checkpoint(
                conn, job_id, step, file_name, size_bytes, sha256, now
            )
            dropped = [] if keep is None else retention.prune(conn, job_id, keep)
        self._notify(job_id, seqs)
        return IndexedCheckpoint(record, dropped)

    def delete_job(self, job_id: str) -> DeletedJob:
        """Delete a finished job's record, events and unused checkpoint rows (DeleteJob; see
        ``services.store.retention``). FailedPrecondition for an active job, NotFound for an
        unknown one. The files of ``deleted`` and ``released`` are the caller's to delete."""
        with self._write() as (conn, _):
            return retention.delete_job(conn, job_id)

    def checkpoint_file_names(self) -> set[str]:
        """The file name of every indexed checkpoint (the start-up sweep keeps only these)."""
        with self.db.read() as conn:
            return {r[0] for r in conn.execute("SELECT file_name FROM checkpoints")}

    def get_checkpoint(self, checkpoint_id: str) -> CheckpointRecord:
        """The checkpoint (NotFound if unknown)."""
        with self.db.read() as conn:
            return jobs.get_checkpoint(conn, checkpoint_id)

    def list_checkpoints(self, job_id: str) -> list[CheckpointRecord]:
        """The job's checkpoints by step, oldest first (NotFound for an unknown job)."""
        with self.db.read() as conn:
            return jobs.list_checkpoints(conn, job_id)

    def latest_checkpoint(self, job_id: str) -> CheckpointRecord | None:
        """The checkpoint of the highest step (the latest written among equal steps)."""
        with self.db.read() as conn:
            return jobs.latest_checkpoint(conn, job_id)

    # -- schedules -----------------------------------------------------------------------------

    def create_schedule(
        self,
        cron: str,
        timezone: str,
        template_json: str,
        overlap_policy: OverlapPolicy,
        *,
        next_fire_time: datetime | None,
        paused: bool = False,
        warm_start_from_previous: bool = False,
        request_id: str = "",
        max_schedules: int | None = None,
    ) -> tuple[Schedule, bool]:
        """Store a schedule (cron and timezone validated by the caller); ``(schedule, created)``.

        A known request_id with identical fields returns that schedule; otherwise AlreadyExists.
        max_schedules: ResourceExhausted when this many schedules exist already (checked in
        the transaction of the insert; a known request_id is answered first).
        """
        fields = schedules.schedule_fields(
            cron,
            timezone,
            template_json,
            overlap_policy,
            paused,
            warm_start_from_previous,
            self._micros(next_fire_time),
        )
        with self._write() as (conn, now):
            return schedules.create_schedule(conn, fields, request_id, now, max_schedules)

    def get_schedule(self, schedule_id: str) -> Schedule:
        with self.db.read() as conn:
            return schedules.get_schedule(conn, schedule_id)

    def list_schedules(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Schedule], str]:
        """``(schedules, next_page_token)``, oldest first; page rules as in list_jobs."""
        with self.db.read() as conn:
            return schedules.list_schedules(conn, page_size, page_token)

    def set_paused(
        self, schedule_id: str, paused: bool, next_fire_time: datetime | None
    ) -> Schedule:
        """Pause (next_fire_time None) or resume (with the next time computed by the caller)."""
        updates = {"paused": int(paused), "next_fire_time": self._micros(next_fire_time)}
        with self._write() as (conn, now):
            return schedules.update_schedule(conn, schedule_id, updates, now)

    def set_next_fire_time(self, schedule_id: str, next_fire_time: datetime | None) -> Schedule:
        with self._write() as (conn, now):
            return schedules.update_schedule(
                conn, schedule_id, {"next_fire_time": self._micros(next_fire_time)}, now
            )

    def delete_schedule(self, schedule_id: str) -> list[CheckpointRecord]:
        """Delete a schedule and its firings; its jobs stay (with their schedule_id). Returns
        the checkpoints of deleted jobs that only its template used (rows gone; their files
        are the caller's to delete: ``services.store.retention``)."""
        with self._write() as (conn, _):
            schedules.delete_schedule(conn, schedule_id)
            return retention.release_orphans(conn)

    def due_schedules(self, now: datetime) -> list[Schedule]:
        """Unpaused schedules whose next_fire_time <= now, earliest first."""
        with self.db.read() as conn:
            return schedules.due_schedules(conn, to_micros(now))

    def get_firing(self, schedule_id: str, fire_time: datetime) -> Firing | None:
        """What the firing ``(schedule_id, fire_time)`` did, None if it has not happened."""
        with self.db.read() as conn:
            return schedules.get_firing(conn, schedule_id, to_micros(fire_time))

    def record_skipped_firing(self, schedule_id: str, fire_time: datetime) -> Firing:
        """Record a firing that created no job (overlap policy SKIP); idempotent."""
        with self._write() as (conn, now):
            return schedules.record_skipped_firing(conn, schedule_id, to_micros(fire_time), now)

    def queue_firing(self, schedule_id: str, fire_time: datetime) -> Firing:
        """Record a firing that waits for its job (``services.schedule``); idempotent. A
        schedule has at most one queued firing: while it has another, this one is recorded as
        skipped. ``create_job`` with the same (schedule_id, fire_time) turns it into created."""
        with self._write() as (conn, now):
            return schedules.queue_firing(conn, schedule_id, to_micros(fire_time), now)

    def queued_firings(self) -> list[Firing]:
        """Every queued firing, earliest fire_time first."""
        with self.db.read() as conn:
            return schedules.queued_firings(conn)

    def earliest_fire_time(self) -> datetime | None:
        """The earliest next_fire_time of the unpaused schedules (None when none will fire)."""
        with self.db.read() as conn:
            micros = schedules.earliest_fire_time(conn)
        return None if micros is None else from_micros(micros)
