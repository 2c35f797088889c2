"""Retention of checkpoints and DeleteJob in the store: what is kept, what goes, in one
transaction; the files of dropped rows are deleted afterwards (CheckpointStore.delete)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from services.domain import FailedPrecondition, JobKind, JobState, NotFound, OverlapPolicy
from services.store import CheckpointStore, Store
from services.store.db import MIGRATIONS

SPEC = json.dumps({"tasks": ["nqm"]})


def _running(store: Store, spec_json: str = SPEC) -> str:
    job, _ = store.create_job(spec_json)
    store.transition(job.job_id, JobState.RUNNING)
    return job.job_id


def _write(store: Store, files: CheckpointStore, job_id: str, step: int, keep: int | None):
    stored = files.write(job_id, step, f"theta at {step}".encode())
    indexed = store.index_checkpoint(job_id, step, *stored, keep=keep)
    files.delete(indexed.dropped)
    return indexed


def _warm_start(checkpoint_id: str) -> str:
    return json.dumps({"tasks": ["nqm"], "warm_start_checkpoint_id": checkpoint_id})


@pytest.fixture
def files(tmp_path):
    return CheckpointStore(tmp_path / "checkpoints")


def test_retention_keeps_the_latest_and_deletes_older_rows_and_files(store, files):
    job_id = _running(store)
    written = [_write(store, files, job_id, step, keep=3) for step in range(1, 7)]
    assert [len(w.dropped) for w in written] == [0, 0, 0, 1, 1, 1]
    assert [w.dropped[0].step for w in written[3:]] == [1, 2, 3]
    kept = store.list_checkpoints(job_id)
    assert [c.step for c in kept] == [4, 5, 6]
    assert all(files.read_bytes(c) == f"theta at {c.step}".encode() for c in kept)
    on_disk = sorted(p.name for p in (files.root / job_id).iterdir())
    assert on_disk == sorted(c.file_name.split("/")[1] for c in kept)
    for gone in written[:3]:
        with pytest.raises(NotFound):
            store.get_checkpoint(gone.record.checkpoint_id)


def test_a_step_written_twice_keeps_the_later_file(store, files):
    job_id = _running(store)
    _write(store, files, job_id, 5, keep=1)
    again = _write(store, files, job_id, 5, keep=1)  # resumed after a restart: same step
    assert [c.checkpoint_id for c in store.list_checkpoints(job_id)] == [again.record.checkpoint_id]


def test_without_keep_every_checkpoint_stays(store, files):
    job_id = _running(store)
    for step in range(1, 8):
        files_written = files.write(job_id, step, b"x")
        store.add_checkpoint(job_id, step, *files_written)
    assert len(store.list_checkpoints(job_id)) == 7


@pytest.mark.parametrize("keep", [0, -1, True, 2.0])
def test_keep_must_be_a_positive_integer(store, files, keep):
    job_id = _running(store)
    stored = files.write(job_id, 1, b"x")
    with pytest.raises(ValueError, match="keep"):
        store.index_checkpoint(job_id, 1, *stored, keep=keep)
    assert store.list_checkpoints(job_id) == []  # the insert was rolled back with it


def test_checkpoints_that_something_uses_are_kept(store, files, clock):
    job_id = _running(store)
    first, second, third = (_write(store, files, job_id, s, keep=None).record for s in (1, 2, 3))
    # a job warm-starts from step 1, a schedule's template from step 2, an evaluation runs on 3
    user, _ = store.create_job(_warm_start(first.checkpoint_id))
    store.create_schedule(
        "0 3 * * *",
        "UTC",
        _warm_start(second.checkpoint_id),
        OverlapPolicy.SKIP,
        next_fire_time=clock(),
    )
    evaluation, _ = store.create_job(
        json.dumps({"checkpoint_id": third.checkpoint_id}), kind=JobKind.EVALUATION
    )
    _write(store, files, job_id, 4, keep=1)
    _write(store, files, job_id, 5, keep=1)
    assert [c.step for c in store.list_checkpoints(job_id)] == [1, 2, 3, 5]

    store.transition(evaluation.job_id, JobState.RUNNING)  # still active: still used
    _write(store, files, job_id, 6, keep=1)
    assert [c.step for c in store.list_checkpoints(job_id)] == [1, 2, 3, 6]
    store.transition(evaluation.job_id, JobState.SUCCEEDED)  # done: released
    assert [r.step for r in _write(store, files, job_id, 7, keep=1).dropped] == [3, 6]

    store.transition(user.job_id, JobState.CANCELLED)  # a finished user still uses it
    assert [r.step for r in _write(store, files, job_id, 8, keep=1).dropped] == [7]
    store.delete_job(user.job_id)
    assert [r.step for r in _write(store, files, job_id, 9, keep=1).dropped] == [1, 8]
    assert [c.step for c in store.list_checkpoints(job_id)] == [2, 9]  # the schedule's stays
    names = sorted(p.name for p in (files.root / job_id).iterdir())
    assert names == sorted(c.file_name.split("/")[1] for c in store.list_checkpoints(job_id))


def test_a_spec_that_is_not_json_uses_nothing(store, files):
    store.create_job("not json")
    job_id = _running(store)
    _write(store, files, job_id, 1, keep=1)
    assert len(_write(store, files, job_id, 2, keep=1).dropped) == 1


def _finished(store: Store, files: CheckpointStore, steps: int) -> tuple[str, list]:
    job_id = _running(store)
    records = [_write(store, files, job_id, s, keep=None).record for s in range(1, steps + 1)]
    store.transition(job_id, JobState.SUCCEEDED)
    return job_id, records


def test_delete_job_removes_its_records_and_unused_checkpoints(store, files):
    job_id, records = _finished(store, files, 3)
    user, _ = store.create_job(_warm_start(records[1].checkpoint_id))
    deleted = store.delete_job(job_id)
    assert [r.step for r in deleted.deleted] == [1, 3]
    assert [r.checkpoint_id for r in deleted.kept] == [records[1].checkpoint_id]
    assert deleted.released == []
    assert files.delete(deleted.deleted) == 2
    for call in (store.get_job, store.list_checkpoints, store.events_after):
        with pytest.raises(NotFound):
            call(job_id)
    assert store.count_jobs() == 1
    with store.db.read() as conn:
        count = conn.execute("SELECT COUNT(*) FROM events WHERE job_id = ?", (job_id,))
        assert count.fetchone()[0] == 0
    # the kept checkpoint still serves: its record (with the job that wrote it) and its file
    kept = store.get_checkpoint(records[1].checkpoint_id)
    assert kept.job_id == job_id and files.read_bytes(kept) == b"theta at 2"
    assert sorted(p.name for p in (files.root / job_id).iterdir()) == [kept.file_name.split("/")[1]]

    # deleting its last user releases it (row now, file by the caller)
    store.transition(user.job_id, JobState.CANCELLED)
    released = store.delete_job(user.job_id)
    assert released.deleted == [] and released.kept == []
    assert [r.checkpoint_id for r in released.released] == [kept.checkpoint_id]
    assert files.delete(released.released) == 1
    assert not (files.root / job_id).exists()  # the emptied job folder goes too
    with pytest.raises(NotFound):
        store.get_checkpoint(kept.checkpoint_id)


def test_deleting_a_schedule_releases_the_orphan_its_template_used(store, files, clock):
    job_id, records = _finished(store, files, 1)
    schedule, _ = store.create_schedule(
        "0 3 * * *",
        "UTC",
        _warm_start(records[0].checkpoint_id),
        OverlapPolicy.SKIP,
        next_fire_time=clock(),
    )
    assert store.delete_job(job_id).kept == records
    assert store.delete_schedule(schedule.schedule_id) == records
    with pytest.raises(NotFound):
        store.get_checkpoint(records[0].checkpoint_id)


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.RUNNING, JobState.CANCELLING])
def test_an_active_job_cannot_be_deleted(store, state):
    job, _ = store.create_job(SPEC)
    path = {
        JobState.PENDING: [],
        JobState.RUNNING: [JobState.RUNNING],
        JobState.CANCELLING: [JobState.RUNNING, JobState.CANCELLING],
    }[state]
    for to in path:
        store.transition(job.job_id, to)
    with pytest.raises(FailedPrecondition, match=f"is {state.value}"):
        store.delete_job(job.job_id)
    assert store.get_job(job.job_id).state is state
    with pytest.raises(NotFound):
        store.delete_job("job-nope")


def test_a_fired_job_can_be_deleted_and_its_slot_is_not_fired_again(store, clock):
    schedule, _ = store.create_schedule(
        "0 3 * * *", "UTC", SPEC, OverlapPolicy.SKIP, next_fire_time=clock()
    )
    job, _ = store.create_job(SPEC, schedule_id=schedule.schedule_id, fire_time=clock())
    store.transition(job.job_id, JobState.CANCELLED)
    store.delete_job(job.job_id)
    firing = store.get_firing(schedule.schedule_id, clock())  # what the scheduler checks
    assert (firing.outcome, firing.job_id) == ("created", "")
    assert store.get_schedule(schedule.schedule_id).last_job_id == job.job_id


def test_a_version_2_file_keeps_its_checkpoints_and_drops_their_foreign_key(tmp_path):
    path = tmp_path / "star.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    for _, statements in MIGRATIONS[:2]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (job_id, kind, state, spec_json, create_time, update_time)"
        " VALUES ('job-1', 'training', 'SUCCEEDED', '{}', 0, 0)"
    )
    conn.execute(
        "INSERT INTO checkpoints (checkpoint_id, job_id, step, file_name, size_bytes, sha256,"
        " create_time) VALUES ('ckpt-1', 'job-1', 4, 'job-1/a', 3, 'abc', 0)"
    )
    conn.close()
    store = Store(path)
    try:
        assert store.db.schema_version == MIGRATIONS[-1][0]
        (record,) = store.list_checkpoints("job-1")
        assert (record.checkpoint_id, record.step, record.file_name) == ("ckpt-1", 4, "job-1/a")
        with store.db.transaction() as conn:  # a checkpoint may now outlive its job row
            conn.execute("DELETE FROM jobs WHERE job_id = 'job-1'")
        assert store.get_checkpoint("ckpt-1").job_id == "job-1"
    finally:
        store.close()
