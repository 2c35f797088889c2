"""The gRPC API's answers to bad input, authentication and evaluation, on the real server."""

from __future__ import annotations

import grpc
import pytest

from services.api.server import build_server, stop_server
from services.client import StarClient, StarError
from services.domain import CHECKPOINT_LABEL
from services.generated.star.v1 import job_pb2, service_pb2, service_pb2_grpc
from tests.services.service_fixtures import events, tiny_spec
from tests.services.specs import malformed_specs

pytestmark = pytest.mark.slow


def _count_jobs(client: StarClient) -> int:
    return sum(1 for _ in client.list_jobs())


def test_200_malformed_specs_get_invalid_argument_naming_the_field(running_service, client):
    before = _count_jobs(client)
    cases = malformed_specs(200)
    assert len(cases) == 200
    for description, spec, field in cases:
        with pytest.raises(StarError) as err:
            client.submit(spec)
        assert err.value.code == "INVALID_ARGUMENT", description
        assert err.value.message.startswith(f"{field}: "), (description, err.value.message)
        assert err.value.field == field, (description, err.value.message)
    assert _count_jobs(client) == before
    assert client.health() == "SERVING"


def test_unknown_ids_and_bad_requests(client):
    for call in (client.get_job, client.cancel, client.checkpoints):
        with pytest.raises(StarError) as err:
            call("job-nope")
        assert err.value.code == "NOT_FOUND"
    # A page token the server never issued (the client only sends the server's own tokens).
    with pytest.raises(StarError) as err:
        client._call("ListJobs", service_pb2.ListJobsRequest(page_token="not-a-token"))
    assert (err.value.code, err.value.field) == ("INVALID_ARGUMENT", "page_token")


@pytest.mark.parametrize(
    "checkpoint_id",
    ["../../../etc/passwd", "/etc/passwd", "ckpt-../../star.db", "..", "%2e%2e%2fstar.db"],
)
def test_a_checkpoint_id_cannot_read_outside_the_checkpoint_directory(
    client, checkpoint_id, tmp_path
):
    with pytest.raises(StarError) as err:
        client.fetch(checkpoint_id, tmp_path / "out")
    assert err.value.code in ("NOT_FOUND", "INVALID_ARGUMENT")
    assert err.value.method == "FetchCheckpoint" and list(tmp_path.iterdir()) == []


def test_warm_start_from_an_unknown_or_unfitting_checkpoint_is_refused(client):
    spec = tiny_spec(warm_start_checkpoint_id="ckpt-0000000000000000")
    with pytest.raises(StarError) as err:
        client.submit(spec)
    assert (err.value.code, err.value.field) == (
        "INVALID_ARGUMENT",
        "spec.warm_start_checkpoint_id",
    )

    blackbox = tiny_spec(num_workers=1, outer_steps=1, checkpoint_interval=1)
    blackbox.optimizer.kind = "blackbox"
    job = client.submit(blackbox)
    assert events(client, job.job_id)[-1].state_change.to_state == job_pb2.JOB_STATE_SUCCEEDED
    (checkpoint,) = client.checkpoints(job.job_id)
    before = _count_jobs(client)
    with pytest.raises(StarError) as err:
        client.submit(tiny_spec(warm_start_checkpoint_id=checkpoint.checkpoint_id))
    assert err.value.code == "INVALID_ARGUMENT"
    assert "'blackbox' optimizer" in err.value.message
    assert _count_jobs(client) == before

    warm = blackbox.__deepcopy__()
    warm.warm_start_checkpoint_id = checkpoint.checkpoint_id
    job = client.submit(warm)
    assert events(client, job.job_id)[-1].state_change.to_state == job_pb2.JOB_STATE_SUCCEEDED

    evaluation = client.evaluate(checkpoint.checkpoint_id, steps=30, seeds=2, baselines=["adam"])
    assert evaluation.kind == job_pb2.JOB_KIND_EVALUATION
    assert (
        events(client, evaluation.job_id)[-1].state_change.to_state == job_pb2.JOB_STATE_SUCCEEDED
    )
    summaries = client.get_job(evaluation.job_id).evaluation
    assert [s.label for s in summaries] == [CHECKPOINT_LABEL, "adam"]
    assert all(s.task == "nqm" and s.steps == 30 and len(s.curve) == 31 for s in summaries)


def test_a_token_guards_the_api_but_not_health_or_reflection(running_service):
    servicer = running_service.service.servicer
    guarded = running_service.call(build_server(servicer, port=0, token="s3cret"))
    address = f"127.0.0.1:{guarded.port}"
    try:
        for token in (None, "wrong"):
            with StarClient(address, token=token) as client:
                with pytest.raises(StarError) as err:
                    next(client.list_jobs(limit=1), None)
                assert err.value.code == "UNAUTHENTICATED"
                with pytest.raises(StarError) as err:
                    next(client.watch("job-x"))
                assert err.value.code == "UNAUTHENTICATED"
                assert client.health() == "SERVING"
        # The token without "Bearer " (a form the client never sends) is refused too.
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as raw:
                service_pb2_grpc.MetaTrainingStub(channel).ListJobs(
                    service_pb2.ListJobsRequest(page_size=1),
                    metadata=(("authorization", "s3cret"),),
                    timeout=30,
                )
            assert raw.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with StarClient(address, token="s3cret") as client:
            next(client.list_jobs(limit=1), None)
    finally:
        running_service.call(stop_server(guarded))


def test_the_server_is_still_serving(client):
    assert client.health() == "SERVING"
    next(client.list_jobs(limit=1), None)


def test_a_job_asking_for_a_resource_no_node_has_warns_and_can_be_cancelled(client):
    spec = tiny_spec(num_workers=1)
    spec.worker_resources["no_such_node"] = 1.0
    job = client.submit(spec)
    seen = []
    for event in client.watch(job.job_id, timeout=300):
        seen.append(event)
        if event.WhichOneof("event") == "log" and "no_such_node" in event.log.message:
            client.cancel(job.job_id)
    assert seen[-1].state_change.to_state == job_pb2.JOB_STATE_CANCELLED
    assert any(
        "no node of the cluster has no_such_node" in e.log.message
        for e in seen
        if e.WhichOneof("event") == "log"
    )
