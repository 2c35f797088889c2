"""``services.client.StarClient`` against a small real gRPC server on loopback
(tests/services/star_stub_server.py) that pages, cuts streams and misbehaves on purpose:
pagination, the watch across cuts, the resumable and verified fetch, StarError's code and
field, the token, the spec forms submit takes."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest
from google.protobuf import json_format

from services.api import convert
from services.client import RetryPolicy, StarClient, StarError
from services.client.errors import field_of
from services.client.streams import part_path
from services.domain import JobState
from services.generated.star.v1 import job_pb2, schedule_pb2
from tests.services import star_stub_server
from tests.services.star_stub_server import SPEC, SPEC_YAML, job_events

# Reopen cut streams at once, at most 3 times in a row without progress.
FAST = RetryPolicy(attempts=3, backoff_s=0.0)


@pytest.fixture
def server():
    server, service, address = star_stub_server.start()
    try:
        yield service, address
    finally:
        server.stop(None)


@pytest.fixture
def star(server):
    service, address = server
    with StarClient(address, retry=FAST) as client:
        yield service, client


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


# ----- pagination -----------------------------------------------------------------------------


def add_jobs(service, count: int) -> None:
    for i in range(count):
        state = job_pb2.JOB_STATE_RUNNING if i % 2 else job_pb2.JOB_STATE_SUCCEEDED
        service.jobs[f"job-{i}"] = job_pb2.Job(job_id=f"job-{i}", state=state, step=i)


def pages(service, name: str) -> list[tuple[int, str]]:
    return [(r.page_size, r.page_token) for r in service.requests[name]]


def test_list_jobs_iterates_over_every_page(star):
    service, client = star
    add_jobs(service, 8)  # the server sends at most 3 per page
    assert [j.job_id for j in client.list_jobs()] == [f"job-{i}" for i in range(8)]
    assert pages(service, "ListJobs") == [(100, ""), (100, "3"), (100, "6")]


def test_list_jobs_stops_at_the_limit_asking_only_for_what_is_left(star):
    service, client = star
    add_jobs(service, 8)
    assert [j.job_id for j in client.list_jobs(limit=5)] == [f"job-{i}" for i in range(5)]
    assert pages(service, "ListJobs") == [(5, ""), (2, "3")]


@pytest.mark.parametrize(
    "state",
    ["running", "RUNNING", "JOB_STATE_RUNNING", job_pb2.JOB_STATE_RUNNING, JobState.RUNNING],
)
def test_list_jobs_filters_by_state_in_any_spelling(star, state):
    service, client = star
    add_jobs(service, 8)
    assert [j.job_id for j in client.list_jobs(states=[state])] == [
        "job-1",
        "job-3",
        "job-5",
        "job-7",
    ]
    assert {tuple(r.states) for r in service.requests["ListJobs"]} == {(job_pb2.JOB_STATE_RUNNING,)}


def test_an_unknown_state_or_limit_is_refused_before_any_call(star):
    service, client = star
    with pytest.raises(ValueError, match=r"unknown job state 'runing' \(one of pending, running"):
        client.list_jobs(states=["runing"])
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        client.list_jobs(limit=0)
    assert "ListJobs" not in service.requests


def test_list_schedules_iterates_over_every_page(star):
    service, client = star
    service.schedules = [schedule_pb2.Schedule(schedule_id=f"sched-{i}") for i in range(7)]
    assert [s.schedule_id for s in client.list_schedules(page_size=2)] == [
        f"sched-{i}" for i in range(7)
    ]
    assert pages(service, "ListSchedules") == [(2, ""), (2, "2"), (2, "4"), (2, "6")]


# ----- watch ----------------------------------------------------------------------------------


@pytest.fixture
def watched(star):
    service, client = star
    service.events["job-ok"] = job_events("job-ok", job_pb2.JOB_STATE_SUCCEEDED)
    service.jobs["job-ok"] = service.events["job-ok"][-1].job
    return service, client


def test_watch_reconnects_across_cuts_with_no_event_lost_or_repeated(watched):
    service, client = watched
    service.cut_watch_after = [2, 1]  # 2 events, cut; 1 event, cut; then the rest
    events = list(client.watch("job-ok"))
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events == service.events["job-ok"]
    assert [r.after_seq for r in service.requests["WatchJob"]] == [0, 2, 3]


def test_watch_resumes_after_the_given_seq_and_ends_at_the_terminal_event(watched):
    service, client = watched
    assert [e.seq for e in client.watch("job-ok", after_seq=4, from_step=2)] == [5, 6]
    (request,) = service.requests["WatchJob"]
    assert (request.job_id, request.after_seq, request.from_step) == ("job-ok", 4, 2)


def test_a_watch_after_the_last_event_gets_the_terminal_event_and_ends(watched):
    service, client = watched
    (event,) = client.watch("job-ok", after_seq=6)
    assert (event.seq, event.state_change.to_state) == (6, job_pb2.JOB_STATE_SUCCEEDED)
    assert len(service.requests["WatchJob"]) == 1


def test_a_stream_that_keeps_ending_before_the_job_is_a_star_error(watched):
    service, client = watched
    service.end_watch_early = True
    with pytest.raises(StarError) as err:
        list(client.watch("job-ok"))
    assert (err.value.code, err.value.method) == ("UNAVAILABLE", None)
    assert str(err.value) == (
        "lost the events of job-ok after seq 5: the stream ended before the job did"
        " (3 reconnections failed)"
    )
    assert [r.after_seq for r in service.requests["WatchJob"]] == [0, 5, 5, 5]


def test_watch_of_an_unknown_job_fails_at_once(watched):
    service, client = watched
    with pytest.raises(StarError) as err:
        next(client.watch("job-x"))
    assert (err.value.code, err.value.method) == ("NOT_FOUND", "WatchJob")
    assert len(service.requests["WatchJob"]) == 1


# ----- fetch ----------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(star):
    service, client = star
    service.data = os.urandom(5000)  # 5 chunks of 1 KiB
    return service, client


def offsets(service) -> list[int]:
    return [r.offset for r in service.requests["FetchCheckpoint"]]


def test_fetch_resumes_the_part_file_and_reopens_a_cut_stream(checkpoint, tmp_path):
    service, client = checkpoint
    out = tmp_path / "theta.safetensors"
    part_path(out).write_bytes(service.data[:1500])
    service.cut_fetch_after = [2]  # 2 chunks from byte 1500, then a cut
    seen = []
    fetched = client.fetch("ckpt-1", out, progress=lambda got, total: seen.append((got, total)))
    assert out.read_bytes() == service.data and not part_path(out).exists()
    assert offsets(service) == [1500, 3548]
    assert (fetched.path, fetched.size_bytes) == (out, 5000)
    assert fetched.sha256 == hashlib.sha256(service.data).hexdigest()
    assert seen[-1] == (5000, 5000) and [got for got, _ in seen] == sorted(got for got, _ in seen)


def test_fetch_into_a_directory_names_the_file_after_the_checkpoint(checkpoint, tmp_path):
    service, client = checkpoint
    fetched = client.fetch("ckpt-1", tmp_path)
    assert fetched.path == tmp_path / "ckpt-1.safetensors"
    assert fetched.path.read_bytes() == service.data


def test_fetch_detects_a_sha256_mismatch_and_leaves_no_file(checkpoint, tmp_path):
    service, client = checkpoint
    service.sha256 = "0" * 64
    out = tmp_path / "theta.safetensors"
    with pytest.raises(StarError) as err:
        client.fetch("ckpt-1", out)
    assert (err.value.code, err.value.method) == ("DATA_LOSS", None)
    assert f"announced 5000 bytes with sha256 {'0' * 64}" in err.value.message
    assert list(tmp_path.iterdir()) == []


# ----- errors ---------------------------------------------------------------------------------


def test_invalid_argument_carries_the_field_and_other_codes_none(star):
    service, client = star
    spec = job_pb2.JobSpec()
    spec.estimator.sigma = -1.0
    with pytest.raises(StarError) as err:
        client.submit(spec)
    assert (err.value.code, err.value.field, err.value.method) == (
        "INVALID_ARGUMENT",
        "spec.estimator.sigma",
        "SubmitJob",
    )
    assert err.value.message == "spec.estimator.sigma: must be > 0"
    with pytest.raises(StarError) as err:
        client.get_job("job-x")
    assert (err.value.code, err.value.field, str(err.value)) == (
        "NOT_FOUND",
        None,
        "job 'job-x' not found",
    )
    assert not err.value.transient


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("spec.estimator.sigma: sigma must be > 0", "spec.estimator.sigma"),
        ("spec.tasks[0]: unknown task 'x'", "spec.tasks[0]"),
        ("spec.worker_resources.node:a: must be > 0", "spec.worker_resources.node:a"),
        ("page_token: not a token of this listing", "page_token"),
        ("a spec must be at most 65536 bytes", None),
    ],
)
def test_the_field_is_the_path_an_invalid_argument_message_starts_with(message, field):
    assert field_of("INVALID_ARGUMENT", message) == field
    assert field_of("NOT_FOUND", message) is None


def test_no_server_is_unavailable():
    with StarClient(free_address(), timeout=5) as client, pytest.raises(StarError) as err:
        client.get_job("job-1")
    assert (err.value.code, err.value.method) == ("UNAVAILABLE", "GetJob")
    assert err.value.transient


def test_the_token_is_sent_as_bearer_metadata_on_unary_calls_and_streams(watched):
    service, client = watched
    service.token = "s3cret"
    with pytest.raises(StarError) as err:
        client.get_job("job-ok")  # the fixture's client has no token
    assert err.value.code == "UNAUTHENTICATED"
    with StarClient(client.server, token="wrong") as other, pytest.raises(StarError) as err:
        other.get_job("job-ok")
    assert err.value.code == "UNAUTHENTICATED"
    with StarClient(client.server, token="s3cret") as good:
        assert good.get_job("job-ok").job_id == "job-ok"
        assert len(list(good.watch("job-ok"))) == 6
    bearer = ("authorization", "Bearer s3cret")
    assert bearer in service.metadata["GetJob"][-1] and bearer in service.metadata["WatchJob"][-1]


# ----- the other calls ------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["proto", "dict", "yaml", "json", "training_spec"])
def test_submit_takes_a_spec_in_any_form(star, tmp_path, form):
    service, client = star
    want = json_format.ParseDict(SPEC, job_pb2.JobSpec())
    (tmp_path / "spec.yaml").write_text(SPEC_YAML)
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    training = convert.spec_from_proto(want)
    spec = {
        "proto": want,
        "dict": SPEC,
        "yaml": tmp_path / "spec.yaml",
        "json": str(tmp_path / "spec.json"),
        "training_spec": training,
    }[form]
    job = client.submit(spec)
    (request,) = service.requests["SubmitJob"]
    assert request.spec == (convert.spec_to_proto(training) if form == "training_spec" else want)
    assert job.job_id == "job-new" and len(request.request_id) == 32


def test_submit_refuses_an_unknown_field_before_any_call(star):
    service, client = star
    with pytest.raises(ValueError, match="spec: unknown field 'estimator.sigmaa'"):
        client.submit({"estimator": {"sigmaa": 0.1}})
    with pytest.raises(TypeError, match="spec must be a JobSpec"):
        client.submit(42)
    assert "SubmitJob" not in service.requests


def test_submit_sends_the_given_request_id(star):
    service, client = star
    client.submit({}, request_id="mine")
    assert service.requests["SubmitJob"][0].request_id == "mine"


def test_evaluate_sends_only_the_values_given(star):
    service, client = star
    service.jobs["job-eval"] = job_pb2.Job(job_id="job-eval", kind=job_pb2.JOB_KIND_EVALUATION)
    assert client.evaluate("ckpt-1", steps=100, baselines=["adam"]).job_id == "job-eval"
    (request,) = service.requests["Evaluate"]
    assert (request.checkpoint_id, request.steps, list(request.baselines)) == (
        "ckpt-1",
        100,
        ["adam"],
    )
    assert not request.HasField("seeds") and request.task == "" and len(request.request_id) == 32
    with pytest.raises(ValueError, match="steps: "):
        client.evaluate("ckpt-1", steps=2**40)


def test_cancel_and_delete_job(star):
    service, client = star
    add_jobs(service, 2)
    assert client.cancel("job-1").state == job_pb2.JOB_STATE_CANCELLED
    assert client.delete_job("job-1").deleted_checkpoints == 2
    assert list(service.jobs) == ["job-0"]
    assert [r.job_id for r in service.requests["DeleteJob"]] == ["job-1"]


def test_create_and_pause_a_schedule(star):
    service, client = star
    created = client.create_schedule(
        SPEC, "0 3 * * *", timezone="Europe/Zurich", overlap="cancel_previous"
    )
    assert created.schedule_id == "sched-1"
    (request,) = service.requests["CreateSchedule"]
    assert request.schedule.overlap_policy == schedule_pb2.OVERLAP_POLICY_CANCEL_PREVIOUS
    assert request.schedule.template == json_format.ParseDict(SPEC, job_pb2.JobSpec())
    assert (request.schedule.cron, request.schedule.timezone) == ("0 3 * * *", "Europe/Zurich")
    assert client.pause_schedule("sched-1").paused
    with pytest.raises(ValueError, match="unknown overlap policy 'later'"):
        client.create_schedule(SPEC, "0 3 * * *", overlap="later")


def test_health_reports_serving(star):
    _, client = star
    assert client.health(wait_for_ready=True) == "SERVING"
