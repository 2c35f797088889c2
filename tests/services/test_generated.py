"""The generated gRPC code is fresh (what `make proto` writes now) and has the spec's names."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from services.generated.star.v1 import job_pb2, schedule_pb2, service_pb2, service_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "services" / "generated"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "scripts" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    return module


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_code_equals_a_fresh_generation(tmp_path):
    _load_generator().generate(tmp_path / "generated")
    fresh, committed = _tree(tmp_path / "generated"), _tree(GENERATED)
    assert sorted(committed) == sorted(fresh), "run `make proto` and commit services/generated"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `make proto` and commit them"


def test_generated_imports_use_the_package_path():
    for path in GENERATED.rglob("*.py*"):
        text = path.read_text()
        assert "from star.v1" not in text and "import star.v1" not in text, path


SPEC_RPCS = {
    "SubmitJob": ("SubmitJobRequest", "Job", False),
    "GetJob": ("GetJobRequest", "Job", False),
    "ListJobs": ("ListJobsRequest", "ListJobsResponse", False),
    "CancelJob": ("CancelJobRequest", "Job", False),
    "WatchJob": ("WatchJobRequest", "JobEvent", True),
    "ListCheckpoints": ("ListCheckpointsRequest", "ListCheckpointsResponse", False),
    "FetchCheckpoint": ("FetchCheckpointRequest", "CheckpointChunk", True),
    "CreateSchedule": ("CreateScheduleRequest", "Schedule", False),
    "ListSchedules": ("ListSchedulesRequest", "ListSchedulesResponse", False),
    "PauseSchedule": ("PauseScheduleRequest", "Schedule", False),
    "ResumeSchedule": ("ResumeScheduleRequest", "Schedule", False),
    "DeleteSchedule": ("DeleteScheduleRequest", "DeleteScheduleResponse", False),
    "Evaluate": ("EvaluateRequest", "Job", False),
    "DeleteJob": ("DeleteJobRequest", "DeleteJobResponse", False),
}


def test_service_has_the_contract_rpcs():
    service = service_pb2.DESCRIPTOR.services_by_name["MetaTraining"]
    assert service.full_name == "star.v1.MetaTraining"
    methods = {m.name: m for m in service.methods}
    assert set(methods) == set(SPEC_RPCS)
    for name, (request, response, streaming) in SPEC_RPCS.items():
        assert methods[name].input_type.name == request
        assert methods[name].output_type.name == response
        assert methods[name].server_streaming is streaming
        assert methods[name].client_streaming is False
    assert hasattr(service_pb2_grpc, "MetaTrainingServicer")


def _fields(message) -> set[str]:
    return {f.name for f in message.DESCRIPTOR.fields}


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        (
            job_pb2.Job,
            {
                "job_id",
                "state",
                "step",
                "spec",
                "error",
                "device",
                "create_time",
                "update_time",
                "metrics",
                "worker_nodes",
                "kind",
                "schedule_id",
            },
        ),
        (job_pb2.Checkpoint, {"checkpoint_id", "job_id", "step", "size_bytes", "sha256"}),
        (job_pb2.CheckpointChunk, {"data", "offset", "total_size", "sha256"}),
        (job_pb2.JobEvent, {"job", "seq", "state_change", "metrics", "checkpoint_written", "log"}),
        (
            job_pb2.JobSpec,
            {
                "tasks",
                "optimizer",
                "estimator",
                "outer",
                "outer_steps",
                "num_workers",
                "gpus_per_worker",
                "checkpoint_interval",
                "seed",
                "warm_start_checkpoint_id",
                "evaluation",
            },
        ),
        (job_pb2.EstimatorSpec, {"kind", "sigma", "truncation_length", "horizon", "num_pairs"}),
        (job_pb2.OuterSpec, {"learning_rate", "clip", "weight_decay"}),
        (service_pb2.SubmitJobRequest, {"spec", "request_id"}),
        (service_pb2.ListJobsRequest, {"states", "page_size", "page_token"}),
        (service_pb2.WatchJobRequest, {"job_id", "from_step", "after_seq"}),
        (service_pb2.FetchCheckpointRequest, {"checkpoint_id", "offset"}),
        (
            schedule_pb2.Schedule,
            {
                "schedule_id",
                "cron",
                "timezone",
                "template",
                "overlap_policy",
                "paused",
                "next_fire_time",
            },
        ),
    ],
)
def test_messages_have_the_contract_fields(message, fields):
    assert fields <= _fields(message)


def test_job_states_are_the_contract_names():
    names = set(job_pb2.JobState.keys())
    assert {
        "JOB_STATE_UNSPECIFIED",
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
    } <= names
    assert "JOB_STATE_CANCELLING" in names


def test_zero_is_distinguishable_from_unset_where_zero_is_legal():
    spec = job_pb2.JobSpec(max_staleness=0, seed=0)
    assert spec.HasField("max_staleness") and spec.HasField("seed")
    assert not job_pb2.JobSpec().HasField("seed")
