"""Store: checkpoint index and schedules with their firings (real SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.domain import (
    AlreadyExists,
    EventKind,
    FailedPrecondition,
    JobState,
    NotFound,
    OverlapPolicy,
)
from star_core.errors import ConfigError

SPEC = '{"tasks":["digits_mlp"]}'
T0 = datetime(2030, 1, 1, 3, 0, tzinfo=UTC)


def _schedule(store, **kwargs):
    args = {"next_fire_time": T0, **kwargs}
    return store.create_schedule("0 3 * * *", "UTC", SPEC, OverlapPolicy.SKIP, **args)


def test_checkpoint_index(store, clock):
    job, _ = store.create_job(SPEC)
    store.transition(job.job_id, JobState.RUNNING)
    assert store.latest_checkpoint(job.job_id) is None
    first = store.add_checkpoint(job.job_id, 10, f"{job.job_id}/a", 100, "a" * 64)
    clock.advance(1)
    second = store.add_checkpoint(job.job_id, 20, f"{job.job_id}/b", 200, "b" * 64)
    again = store.add_checkpoint(job.job_id, 20, f"{job.job_id}/c", 300, "c" * 64)
    assert store.list_checkpoints(job.job_id) == [first, second, again]
    assert store.latest_checkpoint(job.job_id) == again
    assert store.get_checkpoint(first.checkpoint_id) == first
    assert first.checkpoint_id.startswith("ckpt-") and first.create_time == T0.replace(hour=0)
    event = store.events_after(job.job_id)[-1]
    assert event.kind is EventKind.CHECKPOINT_WRITTEN
    assert event.payload["checkpoint_id"] == again.checkpoint_id
    assert (event.payload["step"], event.payload["size_bytes"]) == (20, 300)
    with pytest.raises(NotFound):
        store.get_checkpoint("ckpt-unknown")
    with pytest.raises(NotFound):
        store.list_checkpoints("job-unknown")
    store.transition(job.job_id, JobState.SUCCEEDED)
    with pytest.raises(FailedPrecondition):
        store.add_checkpoint(job.job_id, 30, f"{job.job_id}/d", 1, "d" * 64)


def test_schedule_lifecycle(store):
    schedule, created = _schedule(store, warm_start_from_previous=True)
    assert created and schedule.schedule_id.startswith("sched-")
    assert (schedule.paused, schedule.next_fire_time, schedule.last_job_id) == (False, T0, "")
    assert schedule.warm_start_from_previous and schedule.overlap_policy is OverlapPolicy.SKIP
    assert store.get_schedule(schedule.schedule_id) == schedule
    paused = store.set_paused(schedule.schedule_id, True, None)
    assert paused.paused and paused.next_fire_time is None
    assert store.due_schedules(T0 + timedelta(days=9)) == []
    resumed = store.set_paused(schedule.schedule_id, False, T0 + timedelta(days=1))
    assert not resumed.paused and resumed.next_fire_time == T0 + timedelta(days=1)
    store.delete_schedule(schedule.schedule_id)
    with pytest.raises(NotFound):
        store.get_schedule(schedule.schedule_id)
    with pytest.raises(NotFound):
        store.delete_schedule(schedule.schedule_id)


def test_schedule_request_id_is_idempotent(store):
    first, _ = _schedule(store, request_id="s-1")
    again, created = _schedule(store, request_id="s-1")
    assert again == first and not created
    with pytest.raises(AlreadyExists):
        _schedule(store, request_id="s-1", paused=True)


def test_a_firing_creates_at_most_one_job(store):
    schedule, _ = _schedule(store)
    job, created = store.create_job(SPEC, schedule_id=schedule.schedule_id, fire_time=T0)
    again, created_again = store.create_job(SPEC, schedule_id=schedule.schedule_id, fire_time=T0)
    assert created and not created_again and again == job
    assert (job.schedule_id, job.fire_time) == (schedule.schedule_id, T0)
    assert store.get_schedule(schedule.schedule_id).last_job_id == job.job_id
    firing = store.get_firing(schedule.schedule_id, T0)
    assert (firing.job_id, firing.outcome) == (job.job_id, "created")
    # a skipped firing is recorded once and never turns into a job
    later = T0 + timedelta(days=1)
    skipped = store.record_skipped_firing(schedule.schedule_id, later)
    assert (skipped.job_id, skipped.outcome) == ("", "skipped")
    assert store.record_skipped_firing(schedule.schedule_id, later) == skipped
    assert store.get_firing(schedule.schedule_id, later + timedelta(days=1)) is None
    assert store.count_jobs() == 1
    # deleting the schedule keeps its jobs
    store.delete_schedule(schedule.schedule_id)
    assert store.get_job(job.job_id).schedule_id == schedule.schedule_id
    with pytest.raises(NotFound):
        store.create_job(SPEC, schedule_id=schedule.schedule_id, fire_time=later)


def test_due_schedules_and_next_fire_time(store):
    early, _ = _schedule(store, next_fire_time=T0)
    late, _ = _schedule(store, next_fire_time=T0 + timedelta(hours=2))
    assert [s.schedule_id for s in store.due_schedules(T0 - timedelta(seconds=1))] == []
    assert [s.schedule_id for s in store.due_schedules(T0)] == [early.schedule_id]
    both = store.due_schedules(T0 + timedelta(hours=3))
    assert [s.schedule_id for s in both] == [early.schedule_id, late.schedule_id]
    store.set_next_fire_time(early.schedule_id, T0 + timedelta(days=1))
    assert [s.schedule_id for s in store.due_schedules(T0 + timedelta(hours=3))] == [
        late.schedule_id
    ]


def test_schedule_pages(store):
    ids = [_schedule(store)[0].schedule_id for _ in range(5)]
    page, token = store.list_schedules(page_size=2)
    seen = [s.schedule_id for s in page]
    while token:
        page, token = store.list_schedules(page_size=2, page_token=token)
        seen += [s.schedule_id for s in page]
    assert seen == ids
    store.create_job(SPEC)
    store.create_job(SPEC)
    _, job_token = store.list_jobs(page_size=1)
    with pytest.raises(ConfigError):
        store.list_schedules(page_token=job_token)
