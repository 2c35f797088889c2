"""Store: queued firings (schema version 2) and the migration of a version-1 file."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from services.domain import OverlapPolicy
from services.store import Store
from services.store.db import MIGRATIONS, to_micros

SPEC = '{"tasks":["digits_mlp"]}'
T0 = datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _schedule(store, next_fire_time=T0):
    return store.create_schedule(
        "0 3 * * *", "UTC", SPEC, OverlapPolicy.QUEUE, next_fire_time=next_fire_time
    )[0]


def test_a_queued_firing_becomes_created_with_its_job(store):
    sid = _schedule(store).schedule_id
    queued = store.queue_firing(sid, T0)
    assert (queued.fire_time, queued.outcome, queued.job_id) == (T0, "queued", "")
    assert store.queue_firing(sid, T0) == queued  # idempotent
    # at most one queued firing per schedule: another slot is recorded as skipped
    assert store.queue_firing(sid, T0 + DAY).outcome == "skipped"
    assert store.queued_firings() == [queued]
    job, created = store.create_job(SPEC, schedule_id=sid, fire_time=T0)
    assert created and store.get_firing(sid, T0).outcome == "created"
    assert store.get_firing(sid, T0).job_id == job.job_id
    assert store.queued_firings() == []
    assert store.queue_firing(sid, T0 + 2 * DAY).outcome == "queued"  # room again
    store.delete_schedule(sid)
    assert store.queued_firings() == []


def test_the_one_queued_firing_rule_is_in_the_schema(store):
    sid = _schedule(store).schedule_id
    store.queue_firing(sid, T0)
    with pytest.raises(sqlite3.IntegrityError), store.db.transaction() as conn:
        conn.execute(
            "INSERT INTO firings VALUES (?, ?, NULL, 'queued', 0)", (sid, to_micros(T0 + DAY))
        )


def test_earliest_fire_time(store):
    assert store.earliest_fire_time() is None
    late = _schedule(store, T0 + DAY).schedule_id
    early = _schedule(store, T0).schedule_id
    assert store.earliest_fire_time() == T0
    store.set_paused(early, True, None)
    assert store.earliest_fire_time() == T0 + DAY
    store.set_paused(late, True, None)
    assert store.earliest_fire_time() is None


def test_a_version_1_file_is_migrated_with_its_firings(tmp_path):
    path = tmp_path / "star.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    for statement in MIGRATIONS[0][1]:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO schedules (schedule_id, cron, timezone, template_json, overlap_policy,"
        " next_fire_time, create_time, update_time)"
        " VALUES ('sched-1', '0 3 * * *', 'UTC', ?, 'queue', ?, 0, 0)",
        (SPEC, to_micros(T0 + DAY)),
    )
    conn.execute("INSERT INTO firings VALUES ('sched-1', ?, NULL, 'skipped', 0)", (to_micros(T0),))
    conn.close()
    store = Store(path)
    try:
        assert store.db.schema_version == MIGRATIONS[-1][0]
        kept = store.get_firing("sched-1", T0)
        assert (kept.outcome, kept.job_id) == ("skipped", "")
        assert store.queue_firing("sched-1", T0 + DAY).outcome == "queued"
        assert store.get_schedule("sched-1").next_fire_time == T0 + DAY
        template = json.loads(store.get_schedule("sched-1").template_json)  # v3: domain JSON
        assert template["tasks"] == ["digits_mlp"] and template["warm_start_checkpoint_id"] == ""
    finally:
        store.close()
