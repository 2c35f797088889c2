"""Faults a cluster guarantees, on the real service: real Ray, gRPC on loopback, SQLite.

- the learner actor's process SIGKILLed two or more steps after a checkpoint: the job is
  requeued to that checkpoint and succeeds, its step never below it;
- the final evaluation raises: the job ends FAILED with the reason (never RUNNING for ever);
- a cancel during the final evaluation stops it: CANCELLED;
- Ray's control plane (the GCS process) stalled while a job is being started: the API still
  answers;
- a full disk fails the job and keeps its earlier checkpoints; retention keeps the latest ones;
- a job whose data is not prepared fails at once, its error naming the command that prepares it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import time

import pytest

from services.client import StarClient
from services.generated.star.v1 import job_pb2
from tests.services.service_fixtures import events as watch_all
from tests.services.service_fixtures import tiny_spec

pytestmark = pytest.mark.slow

# Seconds an API call may take while the GCS is stopped.
API_DEADLINE_S = 2.0
# Seconds the GCS stays stopped (short: Ray's own timeouts are much longer).
GCS_STOP_S = 5.0


def _state(event) -> int | None:
    return event.state_change.to_state if event.WhichOneof("event") == "state_change" else None


def _learner_pid(events) -> int:
    """The learner's pid, from the job's log line that says where it runs."""
    for event in events:
        if event.WhichOneof("event") == "log":
            found = re.search(r"learner.* \(node \S+, pid (\d+)\)$", event.log.message)
            if found:
                return int(found.group(1))
    raise AssertionError("the job's log does not say where its learner runs")


def test_a_killed_learner_resumes_from_the_checkpoint_and_the_job_succeeds(ray_session, client):
    spec = tiny_spec(outer_steps=40, checkpoint_interval=5)
    job = client.submit(spec)
    events, checkpoint, killed = [], None, False
    for event in client.watch(job.job_id):
        events.append(event)
        kind = event.WhichOneof("event")
        if kind == "checkpoint_written" and checkpoint is None:
            checkpoint = event.checkpoint_written.checkpoint.step
        if kind == "metrics" and checkpoint and not killed and event.metrics.step >= checkpoint + 2:
            os.kill(_learner_pid(events), signal.SIGKILL)
            killed = True
    assert killed, "the job ended before the learner could be killed"
    assert _state(events[-1]) == job_pb2.JOB_STATE_SUCCEEDED, events[-1]
    requeues = [
        i
        for i, e in enumerate(events)
        if _state(e) == job_pb2.JOB_STATE_PENDING and "learner lost" in e.state_change.reason
    ]
    assert len(requeues) == 1
    resumed_from = events[requeues[0]].job.step
    assert resumed_from >= checkpoint and resumed_from % 5 == 0
    after = [e for e in events[requeues[0] :] if e.WhichOneof("event") == "metrics"]
    assert [e.metrics.step for e in after] == list(range(resumed_from + 1, 41))
    first_checkpoint = next(
        i for i, e in enumerate(events) if e.WhichOneof("event") == "checkpoint_written"
    )
    assert min(e.job.step for e in events[first_checkpoint:]) >= checkpoint


def test_an_evaluation_that_raises_fails_the_job_with_the_reason(client):
    # fmnist_mlp reads prepared data that this machine does not have: the evaluation raises.
    spec = tiny_spec(outer_steps=2, checkpoint_interval=2)
    spec.evaluation.CopyFrom(job_pb2.EvaluationSpec(task="fmnist_mlp", steps=10, seeds=1))
    job = client.submit(spec)
    events = watch_all(client, job.job_id)
    assert _state(events[-1]) == job_pb2.JOB_STATE_FAILED
    assert "FileNotFoundError" in events[-1].job.error
    assert "star data prepare" in events[-1].job.error


def test_a_cancel_during_the_final_evaluation_ends_the_job_cancelled(client):
    spec = tiny_spec(outer_steps=2, checkpoint_interval=2)
    # An evaluation far longer than the test: a million inner steps on the quadratic.
    spec.evaluation.CopyFrom(job_pb2.EvaluationSpec(task="nqm", steps=1_000_000, seeds=4))
    job = client.submit(spec)
    cancelled_at = None
    for event in client.watch(job.job_id):
        if event.WhichOneof("event") == "log" and "evaluating" in event.log.message:
            client.cancel(job.job_id)
            cancelled_at = time.monotonic()
        last = event
    assert cancelled_at is not None
    assert _state(last) == job_pb2.JOB_STATE_CANCELLED
    assert time.monotonic() - cancelled_at < 60


def _gcs_pid(ray) -> int:
    node = ray._private.worker._global_node
    return node.all_processes["gcs_server"][0].process.pid


def test_a_stalled_gcs_does_not_freeze_the_api(ray_session, client):
    pid = _gcs_pid(ray_session)
    os.kill(pid, signal.SIGSTOP)
    try:
        job = client.submit(tiny_spec(outer_steps=3))  # its runner now blocks on Ray
        deadline = time.monotonic() + GCS_STOP_S
        answers = 0
        with StarClient(client.server, timeout=API_DEADLINE_S) as quick:
            while time.monotonic() < deadline:
                start = time.monotonic()
                quick.get_job(job.job_id)
                list(quick.list_jobs(limit=5))
                assert time.monotonic() - start < API_DEADLINE_S
                answers += 1
                time.sleep(0.2)
        assert answers >= 5
    finally:
        os.kill(pid, signal.SIGCONT)
    events = watch_all(client, job.job_id)
    assert _state(events[-1]) == job_pb2.JOB_STATE_SUCCEEDED


def test_a_full_disk_fails_the_job_and_keeps_the_earlier_checkpoints(
    running_service, client, tmp_path
):
    checkpoints = running_service.service.manager.checkpoints
    write = checkpoints.write
    calls = []

    def write_until_the_disk_is_full(job_id, step, data):
        calls.append(step)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(job_id, step, data)

    checkpoints.write = write_until_the_disk_is_full
    try:
        job = client.submit(tiny_spec(outer_steps=9, checkpoint_interval=3))
        events = watch_all(client, job.job_id)
    finally:
        del checkpoints.write  # the instance attribute: the class's method again
    assert _state(events[-1]) == job_pb2.JOB_STATE_FAILED
    assert "No space left on device" in events[-1].job.error
    (kept,) = client.checkpoints(job.job_id)
    assert kept.step == 3
    data = client.fetch(kept.checkpoint_id, tmp_path).path.read_bytes()  # sha256-checked
    assert hashlib.sha256(data).hexdigest() == kept.sha256


def test_a_job_keeps_its_latest_checkpoints_and_deletes_the_older_files(running_service, client):
    spec = tiny_spec(outer_steps=7, checkpoint_interval=1, keep_checkpoints=3)
    job = client.submit(spec)
    events = watch_all(client, job.job_id)
    assert _state(events[-1]) == job_pb2.JOB_STATE_SUCCEEDED
    written = [e for e in events if e.WhichOneof("event") == "checkpoint_written"]
    assert [e.checkpoint_written.checkpoint.step for e in written] == list(range(1, 8))
    assert [c.step for c in client.checkpoints(job.job_id)] == [5, 6, 7]
    folder = running_service.service.manager.checkpoints.root / job.job_id
    assert len(list(folder.iterdir())) == 3


def test_a_job_whose_data_is_not_prepared_fails_at_once_naming_the_fix(client):
    # This test session's data directory is empty: fmnist_mlp's data is not prepared.
    spec = tiny_spec(outer_steps=5)
    del spec.tasks[:]
    spec.tasks.append("fmnist_mlp")
    job = client.submit(spec)
    events = watch_all(client, job.job_id)
    assert _state(events[-1]) == job_pb2.JOB_STATE_FAILED
    error = events[-1].job.error
    assert "could not start" in error and "star data prepare fashion_mnist" in error, error
    restarts = [
        e for e in events if e.WhichOneof("event") == "log" and "restarting" in e.log.message
    ]
    assert restarts == []  # not retried: every restart would fail the same way
