"""The scheduler: turns cron schedules into meta-training jobs, once per slot.

A schedule stores its ``next_fire_time`` (a slot of its cron expression in its time zone, as
computed by ``services.schedule.cron``). ``tick(now)`` handles every unpaused schedule whose
``next_fire_time <= now``:

Misfire rule (the service was down, or the loop woke late): the schedule fires ONCE, for the
latest slot at or before ``now`` (the firing and its job carry that slot as ``fire_time``);
the slots before it are not replayed and leave no record. Then ``next_fire_time`` becomes the
first slot strictly after ``now``. Nothing fires before its slot.

Exactly once per slot: a firing is keyed on ``(schedule_id, fire_time)`` in the store (the
``firings`` table; a job's ``UNIQUE(schedule_id, fire_time)``). The firing is recorded first
and ``next_fire_time`` advanced after, so a crash in between makes the next tick (of this or a
restarted scheduler) find the recorded firing and only advance.

Overlap policy, when the schedule's previous job (``last_job_id``) is still PENDING, RUNNING
or CANCELLING:

- SKIP: the firing is recorded as "skipped"; no job.
- QUEUE: the firing is recorded as "queued" in the store (it survives a restart) and its job
  is created as soon as the previous job has ended (then the firing becomes "created", with
  that slot's fire_time). A schedule has at most one queued firing: a slot that comes while
  one waits is recorded as "skipped".
- CANCEL_PREVIOUS: the previous job is cancelled (``jobs.cancel``). If that ended it (it was
  PENDING), the new job is created at once; if it is CANCELLING (writing its last
  checkpoint), the firing is queued as above and its job is created when the previous job is
  CANCELLED, so the two never run side by side and a warm start sees the final checkpoint.

A firing that finds the service at ``--max-jobs`` (ResourceExhausted) is queued the same way
and created when a job ends. A paused schedule's queued firing waits until it is resumed;
deleting a schedule drops it. The loop wakes when a job ends while firings are queued.

Warm start (``warm_start_from_previous``): the new job's spec is the template with
``warm_start_checkpoint_id`` = the latest checkpoint of the schedule's previous job, read when
the job is created. When the previous job has no checkpoint (or there is none yet), the
template is used as it is: its own ``warm_start_checkpoint_id`` if set, else a fresh start.

Pause / resume: pausing clears ``next_fire_time``; resuming computes it from now, so slots
missed while paused are not caught up. Deleting a schedule keeps its jobs (they run on).

At most ``max_schedules`` schedules exist (``star serve --max-schedules``; RESOURCE_EXHAUSTED
past it): each tick examines every due schedule under the scheduler's lock, and an every-minute
schedule costs about 5 ms per tick.

``run()`` sleeps until the earliest ``next_fire_time`` (at most ``MAX_SLEEP_S``, so a
changed wall clock is noticed) or until ``wake()`` (a schedule created or resumed, a job
ended while firings wait); no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from services.domain import (
    ACTIVE_STATES,
    Firing,
    Job,
    NotFound,
    OverlapPolicy,
    ResourceExhausted,
    Schedule,
    TrainingSpec,
    utc_now,
)
from services.schedule.cron import latest_fire_time, next_fire_time
from star_core.errors import ConfigError

logger = logging.getLogger(__name__)

# The longest the loop sleeps without reading the clock again (a wall-clock change, a schedule
# written to the store by someone else, are noticed within this many seconds).
MAX_SLEEP_S = 60.0
# The shortest sleep: a wait that ends a hair before the due time does not spin.
MIN_SLEEP_S = 0.01
# Schedules the service keeps at most (star serve --max-schedules).
DEFAULT_MAX_SCHEDULES = 100


class JobSubmitter(Protocol):
    """What the scheduler needs from the job manager (``services.manager.JobManager``)."""

    async def submit_spec_json(
        self,
        spec_json: str,
        *,
        request_id: str = "",
        schedule_id: str = "",
        fire_time: datetime | None = None,
    ) -> Job:
        """Create a PENDING training job (ResourceExhausted at --max-jobs); idempotent per
        (schedule_id, fire_time)."""

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job (a finished one is returned unchanged)."""


class Scheduler:
    """Fires schedules into ``jobs`` (see the module docstring). ``clock`` returns the current
    time (timezone-aware); tests inject one. Use it from one event loop."""

    def __init__(
        self,
        store: Any,
        jobs: JobSubmitter,
        clock: Callable[[], datetime] = utc_now,
        max_schedules: int = DEFAULT_MAX_SCHEDULES,
    ):
        self.store = store
        self.jobs = jobs
        self._clock = clock
        self.max_schedules = max_schedules
        self._lock = asyncio.Lock()  # one tick or change of a schedule at a time
        self._wake = asyncio.Event()
        self._stopping = False
        self._has_queued = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick, sleep until the next due time or a wake-up, repeat until ``stop()``."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        unsubscribe = self.store.subscribe(self._on_job_event)
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self.tick()
                except Exception:  # a broken store call: the next wake-up retries
                    logger.exception("scheduler tick failed")
                timeout = await self._sleep_seconds()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            unsubscribe()

    def stop(self) -> None:
        """End ``run()`` (it returns after the current tick)."""
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Look at the schedules now (one was created or resumed)."""
        self._wake.set()

    async def _sleep_seconds(self) -> float:
        earliest = await self._call(self.store.earliest_fire_time)
        if earliest is None:
            return MAX_SLEEP_S
        wait = (earliest - self._clock()).total_seconds()
        return min(max(wait, MIN_SLEEP_S), MAX_SLEEP_S)

    def _on_job_event(self, job_id: str, seq: int) -> None:
        """Store listener (any thread): wake the loop when a job ends while firings wait."""
        if not self._has_queued or self._loop is None:
            return
        try:
            ended = self.store.get_job(job_id).state.is_terminal()
            if ended:
                self._loop.call_soon_threadsafe(self._wake.set)
        except Exception:  # a closed loop or store: nothing to wake
            logger.debug("scheduler: no wake-up for job %s #%d", job_id, seq, exc_info=True)

    # -- firing --------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> list[Firing]:
        """Fire what is due at ``now`` (default: the clock); returns the firings recorded or
        created by this call (queued firings whose job was created included)."""
        now = now or self._clock()
        async with self._lock:
            fired = await self._dispatch_queued()
            for schedule in await self._call(self.store.due_schedules, now):
                try:
                    firing = await self._fire_due(schedule, now)
                except Exception:  # one broken schedule does not stop the others
                    logger.exception("schedule %s: firing failed", schedule.schedule_id)
                    continue
                if firing is not None:
                    fired.append(firing)
            self._has_queued = bool(await self._call(self.store.queued_firings))
        return fired

    async def _fire_due(self, schedule: Schedule, now: datetime) -> Firing | None:
        sid, since = schedule.schedule_id, schedule.next_fire_time
        if since is None:  # cannot be: a due schedule has its next firing time
            return None
        try:
            fire_time = latest_fire_time(schedule.cron, schedule.timezone, since, now)
            following = next_fire_time(schedule.cron, schedule.timezone, now)
        except ConfigError as err:  # stored before a stricter check: stop it, do not spin
            logger.error("schedule %s: %s; pausing it", sid, err)
            await self._call(self.store.set_paused, sid, True, None)
            return None
        try:
            if await self._call(self.store.get_firing, sid, fire_time) is not None:
                return None  # fired before a restart; only the advance was missing
            return await self._fire(schedule, fire_time)
        finally:
            await self._call(self.store.set_next_fire_time, sid, following)

    async def _fire(self, schedule: Schedule, fire_time: datetime) -> Firing:
        previous = await self._active_previous(schedule)
        if previous is None:
            return await self._create(schedule, fire_time)
        policy = schedule.overlap_policy
        if policy is OverlapPolicy.SKIP:
            logger.info(
                "schedule %s: skipping %s, job %s is %s",
                schedule.schedule_id,
                fire_time.isoformat(),
                previous.job_id,
                previous.state.value,
            )
            return await self._call(
                self.store.record_skipped_firing, schedule.schedule_id, fire_time
            )
        if policy is OverlapPolicy.CANCEL_PREVIOUS:
            await self.jobs.cancel(previous.job_id)
            if await self._active_previous(schedule) is None:
                return await self._create(schedule, fire_time)
        return await self._queue(schedule, fire_time, f"job {previous.job_id} is still active")

    async def _active_previous(self, schedule: Schedule) -> Job | None:
        """The schedule's previous job if it is still PENDING, RUNNING or CANCELLING."""
        latest = await self._call(self.store.get_schedule, schedule.schedule_id)
        if not latest.last_job_id:
            return None
        try:
            job = await self._call(self.store.get_job, latest.last_job_id)
        except NotFound:
            return None
        return job if job.state in ACTIVE_STATES else None

    async def _create(self, schedule: Schedule, fire_time: datetime) -> Firing:
        sid = schedule.schedule_id
        spec_json = await self._spec_for(schedule)
        try:
            job = await self.jobs.submit_spec_json(spec_json, schedule_id=sid, fire_time=fire_time)
        except ResourceExhausted as err:
            return await self._queue(schedule, fire_time, str(err))
        logger.info("schedule %s: fired %s as job %s", sid, fire_time.isoformat(), job.job_id)
        return await self._call(self.store.get_firing, sid, fire_time)

    async def _queue(self, schedule: Schedule, fire_time: datetime, why: str) -> Firing:
        # From here on a job that ends wakes the loop (_on_job_event); and one more tick right
        # after this one catches a previous job that ended while the firing was being queued.
        self._has_queued = True
        firing = await self._call(self.store.queue_firing, schedule.schedule_id, fire_time)
        self._wake.set()
        logger.info(
            "schedule %s: firing %s %s (%s)",
            schedule.schedule_id,
            fire_time.isoformat(),
            firing.outcome,
            why,
        )
        return firing

    async def _spec_for(self, schedule: Schedule) -> str:
        """The template, warm-started from the previous job's latest checkpoint if asked."""
        latest = await self._call(self.store.get_schedule, schedule.schedule_id)
        if not (latest.warm_start_from_previous and latest.last_job_id):
            return latest.template_json
        checkpoint = await self._call(self.store.latest_checkpoint, latest.last_job_id)
        if checkpoint is None:  # the template as it is: its own warm start, or fresh
            return latest.template_json
        template = TrainingSpec.from_json(latest.template_json)
        spec = dataclasses.replace(template, warm_start_checkpoint_id=checkpoint.checkpoint_id)
        return spec.to_json()

    async def _dispatch_queued(self) -> list[Firing]:
        """Create the jobs of queued firings whose previous job has ended."""
        created = []
        for firing in await self._call(self.store.queued_firings):
            try:
                schedule = await self._call(self.store.get_schedule, firing.schedule_id)
            except NotFound:  # deleted meanwhile (its firings went with it)
                continue
            if schedule.paused or await self._active_previous(schedule) is not None:
                continue
            result = await self._create(schedule, firing.fire_time)
            if result.outcome == "created":
                created.append(result)
        return created

    # -- changes of schedules (the servicer's CreateSchedule, Pause, Resume, Delete) ------------

    async def create(self, submission: Any) -> Schedule:
        """Store a validated ``convert.ScheduleSubmission`` with its first next_fire_time.

        ConfigError ``schedule.cron`` / ``schedule.timezone`` (paths in CreateScheduleRequest)
        for a cron expression or time zone that does not parse. The same request_id returns
        the same schedule (store rules). ResourceExhausted at ``max_schedules``."""
        try:
            first = next_fire_time(submission.cron, submission.timezone, self._clock())
        except ConfigError as err:
            raise err.within("schedule") from err
        async with self._lock:
            schedule, _ = await self._call(
                self.store.create_schedule,
                submission.cron,
                submission.timezone,
                submission.template_json,
                submission.overlap_policy,
                next_fire_time=None if submission.paused else first,
                paused=submission.paused,
                warm_start_from_previous=submission.warm_start_from_previous,
                request_id=submission.request_id,
                max_schedules=self.max_schedules,
            )
        self.wake()
        return schedule

    async def pause(self, schedule_id: str) -> Schedule:
        """Stop firing (a paused schedule is returned unchanged); NotFound if unknown."""
        async with self._lock:
            schedule = await self._call(self.store.get_schedule, schedule_id)
            if schedule.paused:
                return schedule
            return await self._call(self.store.set_paused, schedule_id, True, None)

    async def resume(self, schedule_id: str) -> Schedule:
        """Fire again from the first slot after now (no catch-up of the paused time); an
        unpaused schedule is returned unchanged. NotFound if unknown."""
        async with self._lock:
            schedule = await self._call(self.store.get_schedule, schedule_id)
            if not schedule.paused:
                return schedule
            following = next_fire_time(schedule.cron, schedule.timezone, self._clock())
            schedule = await self._call(self.store.set_paused, schedule_id, False, following)
        self.wake()
        return schedule

    async def delete(self, schedule_id: str) -> list[Any]:
        """Delete a schedule and its firings (a queued one is dropped); its jobs stay. Returns
        the checkpoints whose rows went with it (``Store.delete_schedule``: files to delete)."""
        async with self._lock:
            return await self._call(self.store.delete_schedule, schedule_id)
