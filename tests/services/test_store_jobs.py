"""Store: jobs, idempotent creation, transitions, progress, events, pagination (real SQLite)."""

from __future__ import annotations

import itertools
import sqlite3
import threading

import pytest

from services.domain import (
    TRANSITIONS,
    AlreadyExists,
    EventKind,
    FailedPrecondition,
    JobKind,
    JobState,
    NotFound,
    ResourceExhausted,
)
from services.store import Store
from services.store.db import MIGRATIONS
from star_core.errors import ConfigError

S = JobState
SPEC = '{"tasks":["digits_mlp"]}'
# How to reach each state from PENDING.
PATHS = {
    S.PENDING: [],
    S.RUNNING: [S.RUNNING],
    S.CANCELLING: [S.RUNNING, S.CANCELLING],
    S.SUCCEEDED: [S.RUNNING, S.SUCCEEDED],
    S.FAILED: [S.FAILED],
    S.CANCELLED: [S.CANCELLED],
}


def _job_in(store: Store, state: JobState) -> str:
    job, _ = store.create_job(SPEC)
    for step in PATHS[state]:
        store.transition(job.job_id, step, f"to {step.value}")
    assert store.get_job(job.job_id).state is state
    return job.job_id


def test_create_and_get(store, clock):
    job, created = store.create_job(SPEC)
    assert created and job.state is S.PENDING and job.step == 0 and job.kind is JobKind.TRAINING
    assert job.create_time == clock.now == job.update_time
    assert store.get_job(job.job_id) == job
    with pytest.raises(NotFound):
        store.get_job("job-000000000000")


def test_same_request_id_same_spec_returns_the_same_job(store):
    first, created_first = store.create_job(SPEC, request_id="req-1")
    again, created_again = store.create_job(SPEC, request_id="req-1")
    assert (created_first, created_again) == (True, False)
    assert again == first
    assert store.count_jobs() == 1


def test_same_request_id_different_spec_or_kind_is_already_exists(store):
    store.create_job(SPEC, request_id="req-1")
    with pytest.raises(AlreadyExists, match="req-1"):
        store.create_job('{"tasks":["digits_cnn"]}', request_id="req-1")
    with pytest.raises(AlreadyExists):
        store.create_job(SPEC, request_id="req-1", kind=JobKind.EVALUATION)
    assert store.count_jobs() == 1


def test_concurrent_duplicate_submissions_create_one_job(tmp_path):
    stores = [Store(tmp_path / "star.db") for _ in range(2)]  # two connections, one file
    results, barrier = [], threading.Barrier(8)

    def submit(store):
        barrier.wait()
        results.append(store.create_job(SPEC, request_id="same")[0].job_id)

    try:
        threads = [threading.Thread(target=submit, args=(stores[i % 2],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 8 and len(set(results)) == 1
        assert stores[0].count_jobs() == 1
    finally:
        for store in stores:
            store.close()


def test_max_active_counts_only_active_jobs(store):
    done = _job_in(store, S.SUCCEEDED)
    store.create_job(SPEC)
    store.create_job(SPEC, max_active=2)
    with pytest.raises(ResourceExhausted):
        store.create_job(SPEC, max_active=2)
    assert store.count_jobs() == 3
    assert store.count_jobs([S.PENDING]) == 2 and store.get_job(done).state is S.SUCCEEDED


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobState, JobState)))
def test_every_transition_in_and_out_of_the_table(store, current, target):
    job_id = _job_in(store, current)
    before = store.get_job(job_id)
    if target in TRANSITIONS[current]:
        after = store.transition(job_id, target, "because")
        assert after.state is target and after.last_seq == before.last_seq + 1
        event = store.events_after(job_id, before.last_seq)[0]
        assert event.kind is EventKind.STATE_CHANGE
        assert event.payload == {"from": current.value, "to": target.value, "reason": "because"}
        assert event.job.state is target
    else:
        with pytest.raises(FailedPrecondition):
            store.transition(job_id, target, "because")
        assert store.get_job(job_id) == before


def test_failed_records_the_reason_as_error(store):
    job_id = _job_in(store, S.RUNNING)
    job = store.transition(job_id, S.FAILED, "worker image missing")
    assert job.error == "worker image missing"


@pytest.mark.parametrize(
    ("state", "result", "changed"),
    [
        (S.PENDING, S.CANCELLED, True),
        (S.RUNNING, S.CANCELLING, True),
        (S.CANCELLING, S.CANCELLING, False),
        (S.SUCCEEDED, S.SUCCEEDED, False),
        (S.FAILED, S.FAILED, False),
        (S.CANCELLED, S.CANCELLED, False),
    ],
)
def test_request_cancel(store, state, result, changed):
    job_id = _job_in(store, state)
    seq = store.get_job(job_id).last_seq
    job, did_change = store.request_cancel(job_id)
    assert (job.state, did_change) == (result, changed)
    assert job.last_seq == seq + changed


def test_step_never_goes_back(store):
    job_id = _job_in(store, S.RUNNING)
    store.update_progress(job_id, 5, {"meta_loss": 0.5, "dropped_estimates": 1})
    job = store.update_progress(job_id, 5, {"meta_loss": 0.4})  # same step: more metrics
    assert job.step == 5 and job.metrics == {"meta_loss": 0.4, "dropped_estimates": 1.0}
    with pytest.raises(FailedPrecondition, match="backwards"):
        store.update_progress(job_id, 4, {"meta_loss": 0.3})
    assert store.get_job(job_id).step == 5
    assert [
        e.payload["step"] for e in store.events_after(job_id) if e.kind is EventKind.METRICS
    ] == [5, 5]


@pytest.mark.parametrize("state", [S.PENDING, S.SUCCEEDED, S.CANCELLED])
def test_progress_of_a_job_that_is_not_running_is_refused(store, state):
    job_id = _job_in(store, state)
    with pytest.raises(FailedPrecondition):
        store.update_progress(job_id, 1, {})


def test_requeue_rewinds_to_the_latest_checkpoint_and_no_further(store):
    job_id = _job_in(store, S.RUNNING)
    store.update_progress(job_id, 30, {})
    store.add_checkpoint(job_id, 20, f"{job_id}/a", 10, "0" * 64)
    store.set_placement(job_id, "gpu", ["node-a", "node-b"])
    for bad in (19, 31):
        with pytest.raises(FailedPrecondition, match="rewind"):
            store.transition(job_id, S.PENDING, "restart", rewind_to_step=bad)
    job = store.transition(job_id, S.PENDING, "restart", rewind_to_step=20)
    assert (job.state, job.step, job.device, job.worker_nodes) == (S.PENDING, 20, "", ())
    store.transition(job_id, S.RUNNING, "resumed")
    assert store.update_progress(job_id, 21, {}).step == 21


def test_placement_and_evaluation(store):
    job_id = _job_in(store, S.RUNNING)
    job = store.set_placement(job_id, "cpu", ["n1", "n2"])
    assert (job.device, job.worker_nodes) == ("cpu", ("n1", "n2"))
    with pytest.raises(ValueError, match="device"):
        store.set_placement(job_id, "tpu", [])
    summary = {"label": "adam", "task": "digits_mlp", "steps": 10, "seeds": [0, 1]}
    assert store.set_evaluation(job_id, [summary]).evaluation == (summary,)


def test_events_are_monotonic_and_survive_a_reopen(tmp_path, clock):
    path = tmp_path / "star.db"
    store = Store(path, clock=clock)
    job_id = _job_in(store, S.RUNNING)
    for step in range(1, 4):
        clock.advance(1.5)
        store.update_progress(job_id, step, {"meta_loss": 1.0 / step})
    store.log(job_id, "WARNING", "worker 1 restarted")
    store.transition(job_id, S.SUCCEEDED, "done")
    before = store.events_after(job_id)
    store.close()

    reopened = Store(path, clock=clock)
    try:
        events = reopened.events_after(job_id)
        assert events == before
        assert [e.seq for e in events] == list(range(1, 8))
        assert [e.kind.value for e in events] == [
            "state_change",
            "state_change",
            "metrics",
            "metrics",
            "metrics",
            "log",
            "state_change",
        ]
        assert [e.job.step for e in events] == [0, 0, 1, 2, 3, 3, 3]
        assert [e.job.state for e in events][-2:] == [S.RUNNING, S.SUCCEEDED]
        assert events[3].job.metrics == {"meta_loss": 0.5}
        assert events[5].payload == {"level": "WARNING", "message": "worker 1 restarted"}
        assert [e.seq for e in reopened.events_after(job_id, after_seq=4)] == [5, 6, 7]
        assert [e.seq for e in reopened.events_after(job_id, after_seq=2, limit=2)] == [3, 4]
        # from_step skips earlier metrics only
        assert [e.seq for e in reopened.events_after(job_id, from_step=3)] == [1, 2, 5, 6, 7]
        assert reopened.get_job(job_id).last_seq == 7
        assert reopened.db.schema_version == MIGRATIONS[-1][0]
    finally:
        reopened.close()


def test_events_of_an_unknown_job(store):
    with pytest.raises(NotFound):
        store.events_after("job-nope")


def test_pagination_with_a_state_filter(store):
    ids = [store.create_job(SPEC)[0].job_id for _ in range(9)]
    running = ids[::2]  # 5 jobs
    for job_id in running:
        store.transition(job_id, S.RUNNING)
    seen, token, pages = [], "", 0
    while True:
        page, token = store.list_jobs([S.RUNNING, S.CANCELLING], page_size=2, page_token=token)
        pages += 1
        seen += [j.job_id for j in page]
        assert all(j.state is S.RUNNING for j in page)
        if pages == 1:  # a job created meanwhile does not shift the next pages
            store.transition(store.create_job(SPEC)[0].job_id, S.RUNNING)
        if not token:
            break
    assert pages == 3 and seen == running[::-1]  # newest first, no gaps, no repeats
    everything, token = store.list_jobs(page_size=100)
    assert len(everything) == 10 and token == ""
    first, token = store.list_jobs(page_size=0)
    assert len(first) == 10


def test_bad_pages(store):
    for _ in range(3):
        store.create_job(SPEC)
    _, token = store.list_jobs([S.PENDING], page_size=1)
    with pytest.raises(ConfigError) as err:
        store.list_jobs([S.RUNNING], page_size=1, page_token=token)
    assert err.value.field == "page_token"
    for garbage in ("not-a-token", "eyJ4IjogMX0", "!!!"):
        with pytest.raises(ConfigError) as err:
            store.list_jobs(page_token=garbage)
        assert err.value.field == "page_token"
    with pytest.raises(ConfigError) as err:
        store.list_jobs(page_size=-1)
    assert err.value.field == "page_size"


def test_concurrent_writers_do_not_hit_database_is_locked(tmp_path):
    path = tmp_path / "star.db"
    shared, other = Store(path), Store(path)  # one shared by 6 threads, one more connection
    errors: list[BaseException] = []
    job_ids: list[str] = []

    def work(store: Store, worker: int) -> None:
        try:
            for i in range(10):
                job, _ = store.create_job(SPEC, request_id=f"w{worker}-{i}")
                store.transition(job.job_id, S.RUNNING)
                for step in (1, 2):
                    store.update_progress(job.job_id, step, {"meta_loss": float(step)})
                store.list_jobs([S.RUNNING], page_size=5)
                job_ids.append(job.job_id)
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [
        threading.Thread(target=work, args=(other if w >= 6 else shared, w)) for w in range(8)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert shared.count_jobs([S.RUNNING]) == 80 and len(set(job_ids)) == 80
        for job_id in job_ids[::7]:
            assert [e.seq for e in shared.events_after(job_id)] == [1, 2, 3, 4]
    finally:
        shared.close()
        other.close()


def test_subscribers_hear_each_committed_event(store):
    heard, reads = [], []

    def listener(job_id, seq):
        heard.append((job_id, seq))
        reads.append(store.events_after(job_id, seq - 1)[0].seq)  # may read the store

    def broken(job_id, seq):
        raise RuntimeError("a listener bug")

    store.subscribe(broken)
    unsubscribe = store.subscribe(listener)
    job_id = _job_in(store, S.RUNNING)
    store.update_progress(job_id, 1, {})
    assert heard == [(job_id, 1), (job_id, 2), (job_id, 3)] and reads == [1, 2, 3]
    with pytest.raises(FailedPrecondition):
        store.update_progress(job_id, 0, {})  # rolled back: nobody hears anything
    unsubscribe()
    store.log(job_id, "INFO", "hello")
    assert len(heard) == 3 and store.get_job(job_id).last_seq == 4


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "star.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(path)


def test_the_file_is_in_wal_mode_with_foreign_keys(store):
    with store.db.read() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(sqlite3.IntegrityError), store.db.transaction() as conn:
        conn.execute(
            "INSERT INTO events (job_id, seq, kind, step, payload, snapshot, time)"
            " VALUES ('nojob', 1, 'log', 0, '{}', '{}', 0)"
        )
