"""The API against bad bytes, bad sequence numbers, stalled downloads, too many schedules and a
taken port, and DeleteJob (with ``star delete``), on the real server over a real store.

The server is ``tests/services/api_server.py`` (no Ray: these RPCs never reach the job
manager); the tests play the runner by writing jobs, events and checkpoints into the store.
"""

from __future__ import annotations

import hashlib
import socket
import time

import grpc
import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.api import convert
from services.cli.main import main
from services.domain import JobState
from services.exclusive import AddressInUse, check_address
from services.generated.star.v1 import job_pb2, schedule_pb2, service_pb2, service_pb2_grpc
from tests.services.api_server import ApiServer
from tests.services.service_fixtures import tiny_spec

METHODS = service_pb2.DESCRIPTOR.services_by_name["MetaTraining"].methods
# Bodies that no request message parses: a length past the end, a varint of 11 bytes, tag 0.
MALFORMED = (b"\x0a\x7fjunk", b"\x08" + b"\xff" * 11, b"\x00\x01")
# A checkpoint large enough that a client that does not read holds its stream open.
BIG = 16 << 20
# Seconds a test waits for the server to notice a cancelled stream.
CANCEL_WAIT_S = 10.0


@pytest.fixture
def api(tmp_path):
    server = ApiServer(tmp_path, max_fetch_streams=2)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def client(api):
    with grpc.insecure_channel(api.address) as channel:
        yield service_pb2_grpc.MetaTrainingStub(channel)


def _spec_json(**fields) -> str:
    request = service_pb2.SubmitJobRequest(spec=tiny_spec(**fields))
    return convert.submit_request(request).spec_json


def _run(api, steps=6, checkpoint_every=2, end=JobState.SUCCEEDED, **spec) -> str:
    """A job as a runner leaves it: metrics of every step, a checkpoint every few, its end."""
    job, _ = api.store.create_job(_spec_json(**spec))
    api.store.transition(job.job_id, JobState.RUNNING)
    for step in range(1, steps + 1):
        api.store.update_progress(job.job_id, step, {"meta_loss": 1.0 / step})
        if step % checkpoint_every == 0:
            data = f"theta of {job.job_id} at {step}".encode()
            api.store.add_checkpoint(job.job_id, step, *api.files.write(job.job_id, step, data))
    if end is not None:
        api.store.transition(job.job_id, end)
    return job.job_id


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service="star.v1.MetaTraining")
        status = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status
    return status == health_pb2.HealthCheckResponse.SERVING


def _raw_call(channel: grpc.Channel, method, body: bytes, metadata=()):
    """Send ``body`` as the request of ``method``, bytes as they are."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:
        return list(channel.unary_stream(path)(body, timeout=10, metadata=metadata))
    return channel.unary_unary(path)(body, timeout=10, metadata=metadata)


def test_every_rpc_answers_bytes_that_do_not_parse_with_invalid_argument(api):
    assert len(METHODS) == 14
    with grpc.insecure_channel(api.address) as channel:
        for method in METHODS:
            request_type = getattr(service_pb2, method.input_type.name, None) or getattr(
                job_pb2, method.input_type.name
            )
            for body in MALFORMED:
                with pytest.raises(DecodeError):  # the premise: it really does not parse
                    request_type.FromString(body)
                with pytest.raises(grpc.RpcError) as err:
                    _raw_call(channel, method, body)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method.name
                assert err.value.details().startswith("malformed request"), err.value.details()
        # the health service's requests too
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        with pytest.raises(grpc.RpcError) as err:
            check(MALFORMED[0], timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # and the service is still there, answering well-formed requests
        stub = service_pb2_grpc.MetaTrainingStub(channel)
        assert stub.ListJobs(service_pb2.ListJobsRequest()).jobs == []
    assert _serving(api.address)


def test_a_malformed_request_without_the_token_is_refused_for_the_token(api):
    guarded = api.serve(token="s3cret")
    method = METHODS[0]  # SubmitJob
    with grpc.insecure_channel(f"127.0.0.1:{guarded.port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            _raw_call(channel, method, MALFORMED[0])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            _raw_call(channel, method, MALFORMED[0], (("authorization", "Bearer s3cret"),))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _watch(client, job_id: str, **fields) -> list[job_pb2.JobEvent]:
    request = service_pb2.WatchJobRequest(job_id=job_id, **fields)
    return list(client.WatchJob(request, timeout=30))


@pytest.mark.parametrize("after_seq", [1 << 63, (1 << 64) - 1])
def test_an_after_seq_past_int64_is_invalid_argument(api, client, after_seq):
    job_id = _run(api)
    with pytest.raises(grpc.RpcError) as err:
        _watch(client, job_id, after_seq=after_seq)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("after_seq: ")
    # the largest seq there can be: the finished job's terminal event again
    (last,) = _watch(client, job_id, after_seq=(1 << 63) - 1)
    assert last.state_change.to_state == job_pb2.JOB_STATE_SUCCEEDED
    assert _serving(api.address)


def test_after_seq_takes_precedence_over_from_step(api, client):
    job_id = _run(api, steps=6)
    events = _watch(client, job_id)
    metrics = [e.metrics.step for e in events if e.WhichOneof("event") == "metrics"]
    assert metrics == [1, 2, 3, 4, 5, 6]
    # from_step alone skips the metrics of earlier steps
    alone = _watch(client, job_id, from_step=5)
    assert [e.metrics.step for e in alone if e.WhichOneof("event") == "metrics"] == [5, 6]
    # resuming after seq 3 (the metrics of step 1) with from_step 5: every event after seq 3
    resumed = _watch(client, job_id, after_seq=3, from_step=5)
    assert [e.seq for e in resumed] == [e.seq for e in events if e.seq > 3]
    assert [e.metrics.step for e in resumed if e.WhichOneof("event") == "metrics"] == [
        2,
        3,
        4,
        5,
        6,
    ]


def _fetch_request(checkpoint_id: str) -> service_pb2.FetchCheckpointRequest:
    return service_pb2.FetchCheckpointRequest(checkpoint_id=checkpoint_id)


def test_fetch_streams_are_bounded_and_a_slot_frees_when_a_client_leaves(api, client):
    job_id = _run(api, steps=0, end=None)
    data = bytes(range(256)) * (BIG // 256)
    record = api.store.add_checkpoint(job_id, 0, *api.files.write(job_id, 0, data))
    stalled = [client.FetchCheckpoint(_fetch_request(record.checkpoint_id)) for _ in range(2)]
    for stream in stalled:
        assert len(next(stream).data) == 1 << 20  # open, then never read again
    with pytest.raises(grpc.RpcError) as err:
        next(client.FetchCheckpoint(_fetch_request(record.checkpoint_id)))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 2, --max-fetch-streams" in err.value.details()
    assert _serving(api.address)

    stalled[0].cancel()
    deadline = time.monotonic() + CANCEL_WAIT_S
    while True:  # the server notices the cancelled stream a moment later
        try:
            chunks = list(client.FetchCheckpoint(_fetch_request(record.checkpoint_id)))
            break
        except grpc.RpcError as retry:
            if retry.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert hashlib.sha256(b"".join(c.data for c in chunks)).hexdigest() == record.sha256
    stalled[1].cancel()


def _schedule(**template) -> service_pb2.CreateScheduleRequest:
    schedule = schedule_pb2.Schedule(
        cron="0 3 * * *",
        timezone="UTC",
        template=tiny_spec(**template),
        overlap_policy=schedule_pb2.OVERLAP_POLICY_SKIP,
    )
    return service_pb2.CreateScheduleRequest(schedule=schedule)


def test_the_number_of_schedules_is_bounded(api, client):
    for seed in range(3):  # the ApiServer's scheduler takes 3
        client.CreateSchedule(_schedule(seed=seed))
    with pytest.raises(grpc.RpcError) as err:
        client.CreateSchedule(_schedule(seed=9))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-schedules 3" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        request = _schedule()
        request.schedule.cron = "R * * * *"
        client.CreateSchedule(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("schedule.cron: ")


def test_delete_job_removes_the_job_and_keeps_what_a_warm_start_uses(api, client):
    job_id = _run(api, steps=6)
    first, used, last = api.store.list_checkpoints(job_id)
    user = _run(api, steps=0, warm_start_checkpoint_id=used.checkpoint_id)
    response = client.DeleteJob(service_pb2.DeleteJobRequest(job_id=job_id))
    assert response.deleted_checkpoints == 2
    assert list(response.kept_checkpoint_ids) == [used.checkpoint_id]
    for call, request in (
        (client.GetJob, service_pb2.GetJobRequest(job_id=job_id)),
        (client.ListCheckpoints, service_pb2.ListCheckpointsRequest(job_id=job_id)),
        (client.DeleteJob, service_pb2.DeleteJobRequest(job_id=job_id)),
        (client.WatchJob, service_pb2.WatchJobRequest(job_id=job_id)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            list(call(request)) if call is client.WatchJob else call(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (api.files.root / first.file_name).exists()
    assert not (api.files.root / last.file_name).exists()
    kept = b"".join(c.data for c in client.FetchCheckpoint(_fetch_request(used.checkpoint_id)))
    assert hashlib.sha256(kept).hexdigest() == used.sha256
    assert [j.job_id for j in client.ListJobs(service_pb2.ListJobsRequest()).jobs] == [user]

    # its last user deleted, the kept checkpoint goes too
    response = client.DeleteJob(service_pb2.DeleteJobRequest(job_id=user))
    assert (response.deleted_checkpoints, list(response.kept_checkpoint_ids)) == (0, [])
    assert not (api.files.root / job_id).exists()
    with pytest.raises(grpc.RpcError) as err:
        list(client.FetchCheckpoint(_fetch_request(used.checkpoint_id)))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_delete_job_refuses_active_unknown_and_empty_ids(api, client):
    active = _run(api, steps=2, end=None)
    for job_id, code, words in (
        (active, grpc.StatusCode.FAILED_PRECONDITION, "is RUNNING"),
        ("job-nope", grpc.StatusCode.NOT_FOUND, "job-nope"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "job_id: "),
    ):
        with pytest.raises(grpc.RpcError) as err:
            client.DeleteJob(service_pb2.DeleteJobRequest(job_id=job_id))
        assert err.value.code() == code
        assert words in err.value.details()
    assert client.GetJob(service_pb2.GetJobRequest(job_id=active)).step == 2
    assert len(api.store.list_checkpoints(active)) == 1


def test_deleting_a_schedule_deletes_the_checkpoint_only_its_template_kept(api, client):
    job_id = _run(api, steps=2)
    (record,) = api.store.list_checkpoints(job_id)
    schedule = client.CreateSchedule(_schedule(warm_start_checkpoint_id=record.checkpoint_id))
    response = client.DeleteJob(service_pb2.DeleteJobRequest(job_id=job_id))
    assert list(response.kept_checkpoint_ids) == [record.checkpoint_id]
    assert (api.files.root / record.file_name).is_file()
    client.DeleteSchedule(service_pb2.DeleteScheduleRequest(schedule_id=schedule.schedule_id))
    assert not (api.files.root / record.file_name).exists()
    assert not (api.files.root / job_id).exists()


def test_star_delete(api, capsys):
    job_id = _run(api, steps=4)
    used = api.store.list_checkpoints(job_id)[0]
    _run(api, steps=0, warm_start_checkpoint_id=used.checkpoint_id)
    running = _run(api, steps=1, end=None)
    assert main(["delete", job_id, "--server", api.address]) == 0
    out, err = capsys.readouterr()
    assert out == (
        f"{job_id}: deleted (1 checkpoint files; kept 1 used as warm start: {used.checkpoint_id})\n"
    )
    assert err == ""
    for target, words in ((job_id, "not found"), (running, "only a finished job")):
        assert main(["delete", target, "--server", api.address]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and words in err


def test_a_second_server_on_the_same_port_is_refused(api):
    port = api.servers[0].port
    with pytest.raises(AddressInUse, match=f"cannot listen on 127.0.0.1:{port}"):
        api.serve(port=port)
    with pytest.raises(AddressInUse, match="the port is in use"):
        check_address("127.0.0.1", port)
    check_address("127.0.0.1", 0)  # any free port: nothing to check
    assert _serving(api.address)


def test_the_port_check_lets_a_restart_through_time_wait():
    """A server that just stopped leaves connections in TIME_WAIT on its port: the check (as
    gRPC's own bind) must not take them for a server."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end goes to TIME_WAIT
    listener.close()
    client.close()
    check_address("127.0.0.1", port)
