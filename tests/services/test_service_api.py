"""The gRPC API's answers to bad input, authentication and evaluation, on the real server."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.api.server import build_server, stop_server
from services.generated.star.v1 import job_pb2, service_pb2, service_pb2_grpc
from tests.services.service_fixtures import stub, tiny_spec, watch
from tests.services.specs import malformed_specs

pytestmark = pytest.mark.slow


def _health(address: str, channel=None) -> int:
    own = channel is None
    channel = channel or grpc.insecure_channel(address)
    try:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service="star.v1.MetaTraining"))
            .status
        )
    finally:
        if own:
            channel.close()


def _count_jobs(client) -> int:
    count, token = 0, ""
    while True:
        page = client.ListJobs(service_pb2.ListJobsRequest(page_size=100, page_token=token))
        count += len(page.jobs)
        token = page.next_page_token
        if not token:
            return count


def test_200_malformed_specs_get_invalid_argument_naming_the_field(running_service, client):
    before = _count_jobs(client)
    cases = malformed_specs(200)
    assert len(cases) == 200
    for description, spec, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            client.SubmitJob(service_pb2.SubmitJobRequest(spec=spec), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, description
        assert err.value.details().startswith(f"{field}: "), (description, err.value.details())
    assert _count_jobs(client) == before
    assert _health(running_service.address) == health_pb2.HealthCheckResponse.SERVING


def test_unknown_ids_and_bad_requests(client):
    for call, request in (
        (client.GetJob, service_pb2.GetJobRequest(job_id="job-nope")),
        (client.CancelJob, service_pb2.CancelJobRequest(job_id="job-nope")),
        (client.ListCheckpoints, service_pb2.ListCheckpointsRequest(job_id="job-nope")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        client.ListJobs(service_pb2.ListJobsRequest(page_token="not-a-token"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("page_token: ")


@pytest.mark.parametrize(
    "checkpoint_id",
    ["../../../etc/passwd", "/etc/passwd", "ckpt-../../star.db", "..", "%2e%2e%2fstar.db"],
)
def test_a_checkpoint_id_cannot_read_outside_the_checkpoint_directory(client, checkpoint_id):
    with pytest.raises(grpc.RpcError) as err:
        list(
            client.FetchCheckpoint(service_pb2.FetchCheckpointRequest(checkpoint_id=checkpoint_id))
        )
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


def test_warm_start_from_an_unknown_or_unfitting_checkpoint_is_refused(client):
    spec = tiny_spec(warm_start_checkpoint_id="ckpt-0000000000000000")
    with pytest.raises(grpc.RpcError) as err:
        client.SubmitJob(service_pb2.SubmitJobRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("spec.warm_start_checkpoint_id: ")

    blackbox = tiny_spec(num_workers=1, outer_steps=1, checkpoint_interval=1)
    blackbox.optimizer.kind = "blackbox"
    job = client.SubmitJob(service_pb2.SubmitJobRequest(spec=blackbox))
    assert list(watch(client, job.job_id))[-1].state_change.to_state == job_pb2.JOB_STATE_SUCCEEDED
    (checkpoint,) = client.ListCheckpoints(
        service_pb2.ListCheckpointsRequest(job_id=job.job_id)
    ).checkpoints
    before = _count_jobs(client)
    with pytest.raises(grpc.RpcError) as err:
        client.SubmitJob(
            service_pb2.SubmitJobRequest(
                spec=tiny_spec(warm_start_checkpoint_id=checkpoint.checkpoint_id)
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'blackbox' optimizer" in err.value.details()
    assert _count_jobs(client) == before

    warm = blackbox.__deepcopy__()
    warm.warm_start_checkpoint_id = checkpoint.checkpoint_id
    job = client.SubmitJob(service_pb2.SubmitJobRequest(spec=warm))
    events = list(watch(client, job.job_id))
    assert events[-1].state_change.to_state == job_pb2.JOB_STATE_SUCCEEDED

    evaluation = client.Evaluate(
        service_pb2.EvaluateRequest(
            checkpoint_id=checkpoint.checkpoint_id, steps=30, seeds=2, baselines=["adam"]
        )
    )
    assert evaluation.kind == job_pb2.JOB_KIND_EVALUATION
    assert (
        list(watch(client, evaluation.job_id))[-1].state_change.to_state
        == job_pb2.JOB_STATE_SUCCEEDED
    )
    summaries = client.GetJob(service_pb2.GetJobRequest(job_id=evaluation.job_id)).evaluation
    assert [s.label for s in summaries] == ["checkpoint", "adam"]
    assert all(s.task == "nqm" and s.steps == 30 and len(s.curve) == 31 for s in summaries)


def test_a_token_guards_the_api_but_not_health_or_reflection(running_service):
    servicer = running_service.service.servicer
    guarded = running_service.call(build_server(servicer, port=0, token="s3cret"))
    address = f"127.0.0.1:{guarded.port}"
    channel = grpc.insecure_channel(address)
    client = service_pb2_grpc.MetaTrainingStub(channel)
    try:
        request = service_pb2.ListJobsRequest(page_size=1)
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
            with pytest.raises(grpc.RpcError) as err:
                client.ListJobs(request, metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            list(client.WatchJob(service_pb2.WatchJobRequest(job_id="job-x")))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        client.ListJobs(request, metadata=(("authorization", "Bearer s3cret"),))
        assert _health(address, channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()
        running_service.call(stop_server(guarded))


def test_the_server_is_still_serving(running_service):
    channel, client = stub(running_service.address)
    try:
        assert _health(running_service.address) == health_pb2.HealthCheckResponse.SERVING
        client.ListJobs(service_pb2.ListJobsRequest(page_size=1))
    finally:
        channel.close()


def test_a_job_asking_for_a_resource_no_node_has_warns_and_can_be_cancelled(client):
    spec = tiny_spec(num_workers=1)
    spec.worker_resources["no_such_node"] = 1.0
    job = client.SubmitJob(service_pb2.SubmitJobRequest(spec=spec))
    events = []
    for event in watch(client, job.job_id, timeout=300):
        events.append(event)
        if event.WhichOneof("event") == "log" and "no_such_node" in event.log.message:
            client.CancelJob(service_pb2.CancelJobRequest(job_id=job.job_id))
    assert events[-1].state_change.to_state == job_pb2.JOB_STATE_CANCELLED
    assert any(
        "no node of the cluster has no_such_node" in e.log.message
        for e in events
        if e.WhichOneof("event") == "log"
    )
