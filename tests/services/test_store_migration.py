"""Schema version 4: data directories written before specs were stored as domain JSON.

``fixtures/legacy_data_dir_v2`` and ``_v3`` were written by the service at schema versions 2
and 3 (``fixtures/make_legacy_data_dir.py``), specs in the protos' JSON. Opened by today's
code, each is migrated; jobs, specs and the schedule read back as they were, the same requests
are still recognized as the same (idempotency compares the stored JSON), and the job the old
service left RUNNING is requeued and resumes from its checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format

from services.api import convert
from services.domain import (
    EvaluationConfig,
    EvaluationJobSpec,
    JobKind,
    JobState,
    TrainingSpec,
)
from services.generated.star.v1 import job_pb2, service_pb2
from services.manager import JobManager
from services.store import CheckpointStore, Store
from services.store.db import MIGRATIONS, evaluation_spec_v4, training_spec_v4
from star_core.training import checkpoint as ckpt
from star_core.training.learner import Learner

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = {2: FIXTURES / "legacy_data_dir_v2", 3: FIXTURES / "legacy_data_dir_v3"}


@pytest.fixture(params=sorted(LEGACY), ids=lambda v: f"v{v}")
def legacy(request, tmp_path):
    """A copy of a legacy directory and its rows as the old service stored them."""
    data_dir = tmp_path / "data"
    shutil.copytree(LEGACY[request.param], data_dir)
    conn = sqlite3.connect(data_dir / "star.db")
    conn.row_factory = sqlite3.Row
    try:
        version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
        assert version == request.param
        jobs = {r["job_id"]: dict(r) for r in conn.execute("SELECT * FROM jobs")}
        schedules = {r["schedule_id"]: dict(r) for r in conn.execute("SELECT * FROM schedules")}
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    store = Store(data_dir / "star.db")
    try:
        yield data_dir, store, jobs, schedules, events
    finally:
        store.close()


def _by_request(jobs: dict, request_id: str) -> dict:
    return next(row for row in jobs.values() if row["request_id"] == request_id)


def test_specs_read_back_as_they_were(legacy):
    _, store, old_jobs, old_schedules, old_events = legacy
    assert store.db.schema_version == MIGRATIONS[-1][0] == 4
    for job_id, old in old_jobs.items():
        job = store.get_job(job_id)
        assert (job.state.value, job.step, job.kind.value) == (
            old["state"],
            old["step"],
            old["kind"],
        )
        assert json.loads(job.spec_json) != json.loads(old["spec_json"])  # converted
        proto = convert.job_to_proto(job)
        if job.kind is JobKind.TRAINING:
            spec = TrainingSpec.from_json(job.spec_json)
            assert spec.to_json() == job.spec_json  # canonical: what a new submission stores
            assert proto.spec == json_format.Parse(old["spec_json"], job_pb2.JobSpec())
            assert convert.spec_to_proto(spec) == proto.spec
        else:
            spec = EvaluationJobSpec.from_json(job.spec_json)
            assert spec.to_json() == job.spec_json
            before = json_format.Parse(old["spec_json"], job_pb2.EvaluationJobSpec())
            assert spec.checkpoint_id == before.checkpoint_id
            assert spec.evaluation == EvaluationConfig(seeds=3, baselines=("adam",))
            before.evaluation.seeds = 3  # unset before: the default, now resolved
            assert proto.evaluation_spec == before
    (schedule_id, old), *_ = old_schedules.items()
    schedule = store.get_schedule(schedule_id)
    template = TrainingSpec.from_json(schedule.template_json)
    assert template.to_json() == schedule.template_json
    assert template.config.optimizer.kind == "blackbox" and schedule.warm_start_from_previous
    expected = json_format.Parse(old["template_json"], job_pb2.JobSpec())
    assert convert.schedule_to_proto(schedule).template == expected
    assert schedule.cron == old["cron"] and schedule.last_job_id == old["last_job_id"]
    count = sum(len(store.events_after(job_id)) for job_id in old_jobs)
    assert count == old_events


def test_the_same_requests_are_still_the_same_jobs(legacy):
    _, store, old_jobs, old_schedules, _ = legacy
    train = _by_request(old_jobs, "legacy-train")
    spec = json_format.Parse(train["spec_json"], job_pb2.JobSpec())
    request = service_pb2.SubmitJobRequest(spec=spec, request_id="legacy-train")
    job, created = store.create_job(
        convert.submit_request(request).spec_json, request_id="legacy-train"
    )
    assert (job.job_id, created) == (train["job_id"], False)
    evaluation = _by_request(old_jobs, "legacy-eval")
    checkpoint_id = json.loads(evaluation["spec_json"])["checkpoint_id"]
    request = service_pb2.EvaluateRequest(
        checkpoint_id=checkpoint_id, baselines=["adam"], request_id="legacy-eval"
    )
    submission = convert.evaluate_request(request)
    job, created = store.create_job(
        submission.spec_json, kind=JobKind.EVALUATION, request_id="legacy-eval"
    )
    assert (job.job_id, created) == (evaluation["job_id"], False)


def test_the_interrupted_job_is_requeued_and_resumes_from_its_checkpoint(legacy):
    data_dir, store, old_jobs, _, _ = legacy
    files = CheckpointStore(data_dir / "checkpoints")
    asyncio.run(JobManager(store, files).recover())
    train = _by_request(old_jobs, "legacy-train")
    job = store.get_job(train["job_id"])
    assert (job.state, job.step) == (JobState.PENDING, 2)
    spec = TrainingSpec.from_json(job.spec_json)
    latest = store.latest_checkpoint(job.job_id)
    data = files.read_bytes(latest)
    state = Learner(spec.config).restore(data)  # what the learner actor does on resume
    assert state.step == 2
    saved = ckpt.named_leaves(ckpt.load_checkpoint(data).theta)
    restored = ckpt.named_leaves(state.theta)
    assert restored.keys() == saved.keys()
    assert all(np.array_equal(restored[name], saved[name]) for name in saved)
    warm_job = next(r for r in old_jobs.values() if r["kind"] == "training" and r is not train)
    warm = TrainingSpec.from_json(store.get_job(warm_job["job_id"]).spec_json)
    source = files.read_bytes(store.get_checkpoint(warm.warm_start_checkpoint_id))
    assert Learner(warm.config).warm_start_theta(source) is not None


def test_the_migration_fills_what_proto_json_left_out():
    before_new_fields = {"tasks": ["nqm"], "optimizer": {"kind": "blackbox"}, "num_workers": 3}
    assert training_spec_v4(before_new_fields) == {
        **before_new_fields,
        "optimizer": {"kind": "blackbox", "constants": {}},
        "task_args": {},
        "warm_start_checkpoint_id": "",
        "worker_resources": {},
        "cpus_per_worker": 1,
        "keep_checkpoints": 5,
    }
    evaluation = evaluation_spec_v4({"checkpoint_id": "ckpt-1", "evaluation": {"steps": 9}})
    assert evaluation == {
        "checkpoint_id": "ckpt-1",
        "evaluation": {"task": "", "steps": 9, "seeds": 3, "baselines": []},
    }


def test_a_spec_that_is_not_json_is_left_as_it_is(tmp_path):
    path = tmp_path / "star.db"
    shutil.copy(LEGACY[3] / "star.db", path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schedules SET template_json = 'not json'")
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        (schedule,), _ = store.list_schedules()
        assert schedule.template_json == "not json"
    finally:
        store.close()


@pytest.mark.processes  # a fresh interpreter
def test_the_migration_does_not_import_protobuf(tmp_path):
    shutil.copy(LEGACY[2] / "star.db", tmp_path / "star.db")
    script = (
        "import sys; from services.store import Store;"
        f" Store({str(tmp_path / 'star.db')!r}).close();"
        " print('google.protobuf' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"
