"""Scheduler: firings on time and once per slot, the misfire rule, overlap policies, warm start,
pause/resume and restarts, over a real SQLite Store with an injected clock.

``StoreJobs`` is a small real implementation of the manager's protocol (it creates and cancels
jobs in the store, as ``JobManager`` does, without running them); the tests play the runner by
moving jobs through their states.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest

from services.api import convert
from services.domain import Job, JobState, NotFound, OverlapPolicy, TrainingSpec
from services.generated.star.v1 import job_pb2, schedule_pb2, service_pb2
from services.schedule import Scheduler
from services.store import CheckpointStore, Store
from star_core.errors import ConfigError

T0 = datetime(2030, 1, 1, tzinfo=UTC)  # the FakeClock's start (conftest)
POLICIES = {
    OverlapPolicy.SKIP: schedule_pb2.OVERLAP_POLICY_SKIP,
    OverlapPolicy.QUEUE: schedule_pb2.OVERLAP_POLICY_QUEUE,
    OverlapPolicy.CANCEL_PREVIOUS: schedule_pb2.OVERLAP_POLICY_CANCEL_PREVIOUS,
}


class StoreJobs:
    """The manager's interface over a real Store: PENDING jobs, at most ``max_jobs`` active."""

    def __init__(self, store: Store, max_jobs: int | None = None):
        self.store = store
        self.max_jobs = max_jobs
        self.cancelled: list[str] = []

    async def submit_spec_json(
        self,
        spec_json: str,
        *,
        request_id: str = "",
        schedule_id: str = "",
        fire_time: datetime | None = None,
    ) -> Job:
        job, _ = self.store.create_job(
            spec_json,
            request_id=request_id,
            schedule_id=schedule_id,
            fire_time=fire_time,
            max_active=self.max_jobs,
        )
        return job

    async def cancel(self, job_id: str) -> Job:
        self.cancelled.append(job_id)
        return self.store.request_cancel(job_id)[0]


def submission(
    cron="0 3 * * *",
    timezone="UTC",
    policy=OverlapPolicy.SKIP,
    warm=False,
    paused=False,
    request_id="",
    seed=7,
):
    """A validated CreateScheduleRequest, as the servicer hands it to the scheduler."""
    template = job_pb2.JobSpec(tasks=["digits_mlp"], outer_steps=20, seed=seed)
    schedule = schedule_pb2.Schedule(
        cron=cron,
        timezone=timezone,
        template=template,
        overlap_policy=POLICIES[policy],
        paused=paused,
        warm_start_from_previous=warm,
    )
    return convert.schedule_request(
        service_pb2.CreateScheduleRequest(schedule=schedule, request_id=request_id)
    )


def at(day: int, hour: int, minute: int = 0, second: float = 0.0) -> datetime:
    return datetime(2030, 1, day, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


def finish(store: Store, job_id: str, state: JobState = JobState.SUCCEEDED) -> None:
    store.transition(job_id, JobState.RUNNING)
    store.transition(job_id, state)


def jobs_of(store: Store, schedule_id: str) -> list[Job]:
    jobs, _ = store.list_jobs(page_size=1000)
    return sorted((j for j in jobs if j.schedule_id == schedule_id), key=lambda j: j.fire_time)


@pytest.fixture
def jobs(store):
    return StoreJobs(store)


@pytest.fixture
def scheduler(store, jobs, clock):
    return Scheduler(store, jobs, clock=clock)


def test_fires_on_time_once_per_slot(store, scheduler, clock):
    schedule = asyncio.run(scheduler.create(submission()))
    assert schedule.next_fire_time == at(1, 3)
    assert asyncio.run(scheduler.tick(at(1, 2, 59, 59.999999))) == []  # never early
    [firing] = asyncio.run(scheduler.tick(at(1, 3)))
    assert (firing.fire_time, firing.outcome) == (at(1, 3), "created")
    job = store.get_job(firing.job_id)
    assert (job.schedule_id, job.fire_time, job.state) == (
        schedule.schedule_id,
        at(1, 3),
        JobState.PENDING,
    )
    assert job.spec_json == schedule.template_json
    assert asyncio.run(scheduler.tick(at(1, 3, 0, 30))) == []  # the slot fired once
    assert asyncio.run(scheduler.tick(at(1, 23))) == []
    assert store.get_schedule(schedule.schedule_id).next_fire_time == at(2, 3)
    finish(store, job.job_id)
    [second] = asyncio.run(scheduler.tick(at(2, 3, 0, 1)))
    assert second.fire_time == at(2, 3) and second.job_id != job.job_id
    assert store.get_schedule(schedule.schedule_id).last_job_id == second.job_id
    assert store.count_jobs() == 2


def test_downtime_of_five_slots_fires_once_for_the_latest(store, scheduler):
    schedule = asyncio.run(scheduler.create(submission(cron="0 * * * *")))
    [first] = asyncio.run(scheduler.tick(at(1, 1)))
    finish(store, first.job_id)
    # down from 01:10 to 06:20: the slots 02:00 .. 06:00 were missed
    fired = asyncio.run(scheduler.tick(at(1, 6, 20)))
    assert [(f.fire_time, f.outcome) for f in fired] == [(at(1, 6), "created")]
    assert [j.fire_time for j in jobs_of(store, schedule.schedule_id)] == [at(1, 1), at(1, 6)]
    for hour in range(2, 6):  # the older slots left no record
        assert store.get_firing(schedule.schedule_id, at(1, hour)) is None
    assert store.get_schedule(schedule.schedule_id).next_fire_time == at(1, 7)


def test_skip_while_the_previous_job_is_active(store, scheduler):
    schedule = asyncio.run(scheduler.create(submission(policy=OverlapPolicy.SKIP)))
    [first] = asyncio.run(scheduler.tick(at(1, 3)))
    store.transition(first.job_id, JobState.RUNNING)
    [skipped] = asyncio.run(scheduler.tick(at(2, 3)))
    assert (skipped.fire_time, skipped.outcome, skipped.job_id) == (at(2, 3), "skipped", "")
    assert store.get_schedule(schedule.schedule_id).last_job_id == first.job_id
    store.transition(first.job_id, JobState.SUCCEEDED)
    assert asyncio.run(scheduler.tick(at(2, 12))) == []  # a skipped slot stays skipped
    [third] = asyncio.run(scheduler.tick(at(3, 3)))
    assert third.outcome == "created" and store.count_jobs() == 2


def test_queue_waits_for_the_previous_job_and_survives_a_restart(tmp_path, store, jobs, clock):
    scheduler = Scheduler(store, jobs, clock=clock)
    schedule = asyncio.run(scheduler.create(submission(policy=OverlapPolicy.QUEUE)))
    sid = schedule.schedule_id
    [first] = asyncio.run(scheduler.tick(at(1, 3)))
    store.transition(first.job_id, JobState.RUNNING)
    [queued] = asyncio.run(scheduler.tick(at(2, 3)))
    assert (queued.fire_time, queued.outcome, queued.job_id) == (at(2, 3), "queued", "")
    # one queued firing per schedule: the next slot while it waits is skipped
    [later] = asyncio.run(scheduler.tick(at(3, 3)))
    assert (later.fire_time, later.outcome) == (at(3, 3), "skipped")
    assert asyncio.run(scheduler.tick(at(3, 4))) == [] and store.count_jobs() == 1
    # restart: a new store and scheduler over the same file still hold the queued firing
    store.close()
    reopened = Store(tmp_path / "star.db", clock=clock)
    try:
        again = Scheduler(reopened, StoreJobs(reopened), clock=clock)
        assert [f.fire_time for f in reopened.queued_firings()] == [at(2, 3)]
        reopened.transition(first.job_id, JobState.SUCCEEDED)
        [created] = asyncio.run(again.tick(at(3, 5)))
        assert (created.fire_time, created.outcome) == (at(2, 3), "created")
        job = reopened.get_job(created.job_id)
        assert job.fire_time == at(2, 3) and reopened.get_schedule(sid).last_job_id == job.job_id
        assert reopened.queued_firings() == [] and reopened.count_jobs() == 2
        assert asyncio.run(again.tick(at(3, 6))) == []
    finally:
        reopened.close()


def test_cancel_previous(store, scheduler, jobs):
    schedule = asyncio.run(scheduler.create(submission(policy=OverlapPolicy.CANCEL_PREVIOUS)))
    [first] = asyncio.run(scheduler.tick(at(1, 3)))
    # a PENDING previous job is cancelled at once: the new job is created in the same tick
    [second] = asyncio.run(scheduler.tick(at(2, 3)))
    assert second.outcome == "created" and jobs.cancelled == [first.job_id]
    assert store.get_job(first.job_id).state is JobState.CANCELLED
    # a RUNNING one goes through CANCELLING: the firing waits until it is CANCELLED
    store.transition(second.job_id, JobState.RUNNING)
    [third] = asyncio.run(scheduler.tick(at(3, 3)))
    assert third.outcome == "queued" and jobs.cancelled == [first.job_id, second.job_id]
    assert store.get_job(second.job_id).state is JobState.CANCELLING
    assert asyncio.run(scheduler.tick(at(3, 4))) == []  # still checkpointing
    store.transition(second.job_id, JobState.CANCELLED)
    [created] = asyncio.run(scheduler.tick(at(3, 5)))
    assert (created.fire_time, created.outcome) == (at(3, 3), "created")
    assert store.get_schedule(schedule.schedule_id).last_job_id == created.job_id


def test_warm_start_from_the_previous_jobs_latest_checkpoint(tmp_path, store, scheduler):
    files = CheckpointStore(tmp_path / "checkpoints")
    schedule = asyncio.run(scheduler.create(submission(warm=True)))
    [first] = asyncio.run(scheduler.tick(at(1, 3)))
    assert store.get_job(first.job_id).spec_json == schedule.template_json  # nothing before
    store.transition(first.job_id, JobState.RUNNING)
    for step in (5, 10):
        store.add_checkpoint(first.job_id, step, *files.write(first.job_id, step, b"t" * step))
    latest = store.latest_checkpoint(first.job_id)
    assert latest.step == 10
    store.transition(first.job_id, JobState.SUCCEEDED)
    [second] = asyncio.run(scheduler.tick(at(2, 3)))
    spec = TrainingSpec.from_json(store.get_job(second.job_id).spec_json)
    template = TrainingSpec.from_json(schedule.template_json)
    assert spec == dataclasses.replace(template, warm_start_checkpoint_id=latest.checkpoint_id)
    # the previous job ended without a checkpoint: the template as it is (a fresh start)
    finish(store, second.job_id, JobState.FAILED)
    [third] = asyncio.run(scheduler.tick(at(3, 3)))
    assert store.get_job(third.job_id).spec_json == schedule.template_json
    assert TrainingSpec.from_json(schedule.template_json).warm_start_checkpoint_id == ""


def test_pause_and_resume_skip_the_paused_slots(store, scheduler, clock):
    schedule = asyncio.run(scheduler.create(submission()))
    sid = schedule.schedule_id
    paused = asyncio.run(scheduler.pause(sid))
    assert paused.paused and paused.next_fire_time is None
    assert asyncio.run(scheduler.pause(sid)) == paused  # pausing again changes nothing
    assert asyncio.run(scheduler.tick(at(5, 12))) == []
    clock.now = at(5, 12)
    resumed = asyncio.run(scheduler.resume(sid))
    assert not resumed.paused and resumed.next_fire_time == at(6, 3)  # no catch-up
    assert asyncio.run(scheduler.resume(sid)) == resumed
    [firing] = asyncio.run(scheduler.tick(at(6, 3)))
    assert firing.fire_time == at(6, 3) and store.count_jobs() == 1
    asyncio.run(scheduler.delete(sid))
    with pytest.raises(NotFound):
        store.get_schedule(sid)
    assert store.get_job(firing.job_id).schedule_id == sid  # its jobs stay
    with pytest.raises(NotFound):
        asyncio.run(scheduler.pause(sid))


def test_a_timezone_with_daylight_saving(store, scheduler, clock):
    # New York, 2030-03-10: 02:00 EST -> 03:00 EDT (02:30 does not happen that night)
    clock.now = datetime(2030, 3, 8, 12, tzinfo=UTC)
    schedule = asyncio.run(
        scheduler.create(submission(cron="30 2 * * *", timezone="America/New_York"))
    )
    times = []
    for day in range(9, 13):
        fired = asyncio.run(scheduler.tick(datetime(2030, 3, day, 12, tzinfo=UTC)))
        times += [f.fire_time for f in fired]
        for firing in fired:
            finish(store, firing.job_id)
    utc = [t.strftime("%d %H:%M") for t in times]
    assert utc == ["09 07:30", "10 07:30", "11 06:30", "12 06:30"]  # EST, gap -> 03:30 EDT, EDT
    assert store.get_schedule(schedule.schedule_id).next_fire_time == datetime(
        2030, 3, 13, 6, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("cron", "timezone", "field"),
    [
        ("0 3 * *", "UTC", "schedule.cron"),
        ("0 25 * * *", "UTC", "schedule.cron"),
        ("0 0 30 2 *", "UTC", "schedule.cron"),  # valid fields, no such date
        ("0 3 * * *", "Mars/Olympus_Mons", "schedule.timezone"),
        ("0 3 * * *", "../../etc/passwd", "schedule.timezone"),
    ],
)
def test_an_invalid_cron_or_timezone_names_the_field(store, scheduler, cron, timezone, field):
    with pytest.raises(ConfigError) as err:
        asyncio.run(scheduler.create(submission(cron=cron, timezone=timezone)))
    assert err.value.field == field
    assert store.list_schedules()[0] == []


def test_a_restart_never_fires_a_slot_twice(tmp_path, store, scheduler, clock):
    schedule = asyncio.run(scheduler.create(submission(cron="0 * * * *")))
    sid = schedule.schedule_id
    [first] = asyncio.run(scheduler.tick(at(1, 1)))
    finish(store, first.job_id)
    # a scheduler that died after creating the 02:00 job but before advancing the schedule
    store.create_job(schedule.template_json, schedule_id=sid, fire_time=at(1, 2))
    assert store.get_schedule(sid).next_fire_time == at(1, 2)
    store.close()
    for _ in range(2):  # restart twice, ticking in the same slot
        reopened = Store(tmp_path / "star.db", clock=clock)
        try:
            again = Scheduler(reopened, StoreJobs(reopened), clock=clock)
            assert asyncio.run(again.tick(at(1, 2, 30))) == []
            assert reopened.get_schedule(sid).next_fire_time == at(1, 3)
            assert [j.fire_time for j in jobs_of(reopened, sid)] == [at(1, 1), at(1, 2)]
        finally:
            reopened.close()


def test_create_is_idempotent_on_request_id(store, scheduler, clock):
    first = asyncio.run(scheduler.create(submission(request_id="nightly-1")))
    clock.advance(3 * 86_400)  # a retry days later: a different first next_fire_time
    again = asyncio.run(scheduler.create(submission(request_id="nightly-1")))
    assert again == first and len(store.list_schedules()[0]) == 1


async def _wait_for_jobs(store: Store, count: int, timeout: float = 5.0) -> list[Job]:
    """Poll the store (test side only) until it holds ``count`` jobs."""
    for _ in range(int(timeout / 0.02)):
        jobs, _ = store.list_jobs(page_size=1000)
        if len(jobs) >= count:
            return jobs
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} jobs did not appear within {timeout} s")


def test_run_sleeps_until_the_slot_and_wakes_on_a_new_schedule(store, jobs):
    start = time.monotonic()
    base = at(1, 3) - timedelta(seconds=0.6)  # the slot is 0.6 s of real time away
    clock = lambda: base + timedelta(seconds=time.monotonic() - start)  # noqa: E731
    scheduler = Scheduler(store, jobs, clock=clock)
    ticks = []
    due_schedules = store.due_schedules
    store.due_schedules = lambda now: ticks.append(now) or due_schedules(now)

    async def main():
        task = asyncio.create_task(scheduler.run())
        try:
            await asyncio.sleep(0.05)  # no schedule yet: the loop sleeps MAX_SLEEP_S
            await scheduler.create(submission())  # wakes it
            await asyncio.sleep(0.3)
            assert store.count_jobs() == 0  # not before its slot
            [job] = await _wait_for_jobs(store, 1)
            assert job.fire_time == at(1, 3) and at(1, 3) <= clock() < at(1, 3, 0, 2)
        finally:
            scheduler.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert 2 <= len(ticks) <= 4  # start, wake-up, the slot (+ one early by a hair): no polling
    assert all(t >= at(1, 3) for t in ticks[2:])


def test_the_loop_creates_a_queued_job_when_a_job_ends(store, clock):
    jobs = StoreJobs(store, max_jobs=1)
    other, _ = store.create_job(submission(seed=1).template_json)  # takes the only job slot
    scheduler = Scheduler(store, jobs, clock=clock)

    async def main():
        schedule = await scheduler.create(submission())
        clock.now = at(1, 3)
        task = asyncio.create_task(scheduler.run())
        try:
            for _ in range(250):  # the firing found the service full: queued
                if store.get_firing(schedule.schedule_id, at(1, 3)) is not None:
                    break
                await asyncio.sleep(0.02)
            assert store.get_firing(schedule.schedule_id, at(1, 3)).outcome == "queued"
            await asyncio.to_thread(finish, store, other.job_id)  # a runner ends its job
            jobs_now = await _wait_for_jobs(store, 2)  # within seconds, not MAX_SLEEP_S
            created = store.get_firing(schedule.schedule_id, at(1, 3))
            assert created.outcome == "created" and created.job_id in {j.job_id for j in jobs_now}
        finally:
            scheduler.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_a_random_cron_field_is_refused_naming_schedule_cron(store, scheduler):
    with pytest.raises(ConfigError) as err:
        asyncio.run(scheduler.create(submission(cron="R * * * *")))
    assert err.value.field == "schedule.cron"
    assert store.list_schedules()[0] == []


def test_the_number_of_schedules_is_bounded(store, jobs, clock):
    from services.domain import ResourceExhausted

    scheduler = Scheduler(store, jobs, clock=clock, max_schedules=2)
    first = asyncio.run(scheduler.create(submission(request_id="a")))
    asyncio.run(scheduler.create(submission(seed=2)))
    with pytest.raises(ResourceExhausted, match="2 schedules.*--max-schedules 2"):
        asyncio.run(scheduler.create(submission(seed=3)))
    # a retried request is still answered; a deleted schedule frees its place
    assert asyncio.run(scheduler.create(submission(request_id="a"))) == first
    asyncio.run(scheduler.delete(first.schedule_id))
    asyncio.run(scheduler.create(submission(seed=3)))
    assert len(store.list_schedules()[0]) == 2
