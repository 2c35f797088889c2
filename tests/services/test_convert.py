"""services.api.convert: spec validation with proto field paths, round trips, record protos."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from services.api import convert
from services.cluster.evaluation import evaluation_summary
from services.domain import (
    DistributedConfig,
    EvaluationConfig,
    EvaluationJobSpec,
    JobKind,
    JobState,
    OverlapPolicy,
    TrainingSpec,
)
from services.generated.star.v1 import job_pb2, schedule_pb2, service_pb2
from services.store import CheckpointStore
from star_core.errors import ConfigError
from star_core.estimators import EstimatorConfig
from star_core.training.config import MetaTrainConfig, OptimizerConfig, OuterConfig
from star_core.training.evaluate import EvalResult
from tests.services.specs import MALFORMED, malformed_specs, valid_specs

MALFORMED_SPECS = malformed_specs(200)


def test_the_generator_covers_every_case_and_200_distinct_specs():
    assert len(MALFORMED_SPECS) == 200
    assert {d for d, _, _ in MALFORMED_SPECS} == {d for d, _, _ in MALFORMED}
    assert len({s.SerializeToString(deterministic=True) for _, s, _ in MALFORMED_SPECS}) == 200


@pytest.mark.parametrize(
    ("description", "spec", "field"),
    MALFORMED_SPECS,
    ids=[f"{i}-{d}" for i, (d, _, _) in enumerate(MALFORMED_SPECS)],
)
def test_malformed_spec_names_its_field(description, spec, field):
    with pytest.raises(ConfigError) as err:
        convert.submit_request(service_pb2.SubmitJobRequest(spec=spec, request_id="r"))
    assert err.value.field == field, (description, str(err.value))
    assert str(err.value).startswith(field)  # the message names the path too


@pytest.mark.parametrize("request_id", ["a" * 129, "has space", "../x"])
def test_bad_request_id(request_id):
    with pytest.raises(ConfigError) as err:
        convert.submit_request(service_pb2.SubmitJobRequest(request_id=request_id))
    assert err.value.field == "request_id"


def test_an_empty_spec_takes_the_library_defaults():
    submission = convert.submit_request(service_pb2.SubmitJobRequest(request_id="r-1"))
    spec = submission.spec
    assert spec.config == MetaTrainConfig()
    assert spec.distributed == DistributedConfig(estimates_per_step=2)
    assert spec.distributed.cpus_per_worker == 1 and spec.keep_checkpoints == 5
    assert (spec.warm_start_checkpoint_id, spec.evaluation) == ("", None)
    assert submission.request_id == "r-1"
    stored = json.loads(submission.spec_json)  # what the store keeps: every default resolved
    assert stored["estimator"]["horizon"] == EstimatorConfig().horizon
    assert stored["optimizer"]["constants"]["beta3"] == pytest.approx(1e-6)
    assert stored["warm_start_checkpoint_id"] == "" and stored["estimates_per_step"] == 2
    assert "gpus_per_worker" not in stored  # automatic stays automatic
    assert submission.spec_json == spec.to_json()


def test_zero_is_a_value_where_zero_is_legal():
    spec = job_pb2.JobSpec(
        max_staleness=0,
        seed=0,
        gpus_per_worker=0.0,
        outer=job_pb2.OuterSpec(weight_decay=0.0, decay_all=False),
        optimizer=job_pb2.OptimizerSpec(constants={"beta3": 0.0}),
    )
    training = convert.spec_from_proto(spec)
    assert training.distributed.max_staleness == 0
    assert training.distributed.gpus_per_worker == 0.0
    assert training.config.outer.weight_decay == 0.0
    assert training.config.optimizer.constants["beta3"] == 0.0


def test_a_full_spec_converts_field_by_field():
    spec = job_pb2.JobSpec(
        tasks=["digits_mlp", "digits_cnn"],
        optimizer=job_pb2.OptimizerSpec(
            kind="star",
            constants={"beta3": 1e-5, "alpha0": 2e-3},
            nominal_direction="adam",
            nominal=True,
            precondition_blackbox=False,
        ),
        estimator=job_pb2.EstimatorSpec(
            kind="es", sigma=0.02, truncation_length=20, horizon=400, num_pairs=4
        ),
        outer=job_pb2.OuterSpec(learning_rate=1e-3, clip=1.0, weight_decay=0.5, decay_all=True),
        outer_steps=50,
        num_workers=3,
        gpus_per_worker=0.5,
        worker_resources={"accel": 1.0},
        max_staleness=2,
        estimates_per_step=6,
        checkpoint_interval=10,
        seed=7,
        warm_start_checkpoint_id="ckpt-0123456789abcdef",
        evaluation=job_pb2.EvaluationSpec(seeds=2, baselines=["adam-tuned"]),
        keep_checkpoints=9,
        cpus_per_worker=2,
    )
    training = convert.spec_from_proto(spec)
    config = training.config
    assert config.tasks == ("digits_mlp", "digits_cnn")
    assert config.optimizer == OptimizerConfig(
        "star",
        {"alpha0": 2e-3, "beta2": 1e-3, "beta3": 1e-5, "beta4": 1e-3},
        nominal_direction="adam",
        nominal=True,
        precondition_blackbox=False,
    )
    assert config.estimator == EstimatorConfig("es", 0.02, 20, 400, 4)
    assert config.outer == OuterConfig(1e-3, 1.0, 0.5, True)
    assert (config.outer_steps, config.checkpoint_interval, config.seed) == (50, 10, 7)
    assert training.distributed == DistributedConfig(3, 0.5, {"accel": 1.0}, 2, 6, 2)
    assert training.keep_checkpoints == 9
    assert training.warm_start_checkpoint_id == "ckpt-0123456789abcdef"
    # evaluation: empty task -> first training task, unset steps -> 10 x horizon
    assert training.evaluation == EvaluationConfig("digits_mlp", 4000, 2, ("adam-tuned",))
    expected = job_pb2.JobSpec()
    expected.CopyFrom(spec)
    expected.evaluation.task, expected.evaluation.steps = "digits_mlp", 4000
    expected.optimizer.constants.update({"beta2": 1e-3, "beta4": 1e-3})
    assert convert.spec_to_proto(training) == expected  # every field as given, defaults filled


@pytest.mark.parametrize("index", range(25))
def test_spec_round_trips(index):
    proto = valid_specs(25, seed=1)[index]
    training = convert.spec_from_proto(proto)
    resolved = convert.spec_to_proto(training)
    assert convert.spec_from_proto(resolved) == training
    text = training.to_json()
    assert TrainingSpec.from_json(text) == training
    assert TrainingSpec.from_json(text).to_json() == text
    assert convert.job_spec_of_json(text) == resolved
    for name in ("tasks", "outer_steps", "seed", "num_workers", "max_staleness"):
        if proto.HasField(name) if name != "tasks" else proto.tasks:
            assert getattr(resolved, name) == getattr(proto, name)


def test_round_trip_from_a_config():
    config = MetaTrainConfig(
        tasks=("digits_mlp",),
        optimizer=OptimizerConfig("blackbox", {"beta1": 5e-4}),
        outer_steps=30,
        seed=3,
    )
    training = TrainingSpec(config, DistributedConfig(num_workers=4, gpus_per_worker=1.0))
    back = convert.spec_from_proto(convert.spec_to_proto(training))
    assert back == training
    assert back.config.to_dict()["optimizer"] == {
        "kind": "blackbox",
        "constants": {"beta1": 5e-4, "beta2": 1e-3},
    }
    assert back.distributed == DistributedConfig(4, 1.0, {}, 1, 4)
    with pytest.raises(ValueError, match="task_args"):
        convert.spec_to_proto(TrainingSpec(MetaTrainConfig(task_args={"digits_mlp": {}})))


def test_the_stored_json_is_what_idempotency_compares():
    a = job_pb2.JobSpec(seed=1, tasks=["digits_mlp"])
    b = job_pb2.JobSpec(tasks=["digits_mlp"], seed=1)
    spec_json = [
        convert.submit_request(service_pb2.SubmitJobRequest(spec=s)).spec_json for s in (a, b)
    ]
    assert spec_json[0] == spec_json[1]
    explicit = service_pb2.SubmitJobRequest(spec=job_pb2.JobSpec(num_workers=2))
    implicit = service_pb2.SubmitJobRequest(spec=job_pb2.JobSpec())
    assert convert.submit_request(explicit).spec_json == convert.submit_request(implicit).spec_json
    other = service_pb2.SubmitJobRequest(spec=job_pb2.JobSpec(num_workers=3))
    assert convert.submit_request(other).spec_json != convert.submit_request(implicit).spec_json


def test_evaluate_request():
    request = service_pb2.EvaluateRequest(
        checkpoint_id="ckpt-00aa", seeds=2, baselines=["adam"], request_id="e-1"
    )
    submission = convert.evaluate_request(request)
    assert submission.spec.checkpoint_id == "ckpt-00aa"
    assert submission.spec.evaluation == EvaluationConfig("", None, 2, ("adam",))
    assert EvaluationJobSpec.from_json(submission.spec_json) == submission.spec
    assert json.loads(submission.spec_json) == {
        "checkpoint_id": "ckpt-00aa",
        "evaluation": {"task": "", "seeds": 2, "baselines": ["adam"]},
    }
    proto = convert.evaluation_job_to_proto(submission.spec)
    assert convert.evaluation_job_from_proto(proto) == submission.spec
    for bad, field in [
        (service_pb2.EvaluateRequest(), "checkpoint_id"),
        (service_pb2.EvaluateRequest(checkpoint_id="../x"), "checkpoint_id"),
        (service_pb2.EvaluateRequest(checkpoint_id="c", steps=0), "steps"),
        (service_pb2.EvaluateRequest(checkpoint_id="c", seeds=99), "seeds"),
        (service_pb2.EvaluateRequest(checkpoint_id="c", task="nope"), "task"),
        (service_pb2.EvaluateRequest(checkpoint_id="c", baselines=["x"]), "baselines[0]"),
    ]:
        with pytest.raises(ConfigError) as err:
            convert.evaluate_request(bad)
        assert err.value.field == field


def test_schedule_request_and_state_filter():
    schedule = schedule_pb2.Schedule(
        cron="0 3 * * *",
        template=job_pb2.JobSpec(seed=4),
        overlap_policy=schedule_pb2.OVERLAP_POLICY_QUEUE,
    )
    submission = convert.schedule_request(service_pb2.CreateScheduleRequest(schedule=schedule))
    assert (submission.timezone, submission.overlap_policy) == ("UTC", OverlapPolicy.QUEUE)
    assert submission.template.config.seed == 4
    bad = schedule_pb2.Schedule(
        cron="0 3 * * *", template=job_pb2.JobSpec(estimator={"sigma": -1.0})
    )
    with pytest.raises(ConfigError) as err:
        convert.schedule_request(service_pb2.CreateScheduleRequest(schedule=bad))
    assert err.value.field == "schedule.template.estimator.sigma"
    with pytest.raises(ConfigError) as err:
        convert.schedule_request(service_pb2.CreateScheduleRequest(schedule={"cron": " "}))
    assert err.value.field == "schedule.cron"
    request = service_pb2.ListJobsRequest(
        states=[job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_CANCELLING]
    )
    assert convert.states_filter(request) == [JobState.RUNNING, JobState.CANCELLING]
    with pytest.raises(ConfigError) as err:
        convert.states_filter(service_pb2.ListJobsRequest(states=[2, 0]))
    assert err.value.field == "states[1]"


def test_states_map_both_ways():
    for state in JobState:
        number = convert.state_to_proto(state)
        assert job_pb2.JobState.Name(number) == f"JOB_STATE_{state.value}"
        assert convert.state_from_proto(number) is state
    assert convert.state_to_proto(None) == job_pb2.JOB_STATE_UNSPECIFIED


def _job_through_the_store(store, tmp_path):
    submission = convert.submit_request(
        service_pb2.SubmitJobRequest(spec={"seed": 5}, request_id="q")
    )
    job, _ = store.create_job(submission.spec_json, request_id="q")
    store.transition(job.job_id, JobState.RUNNING, "placed")
    store.set_placement(job.job_id, "gpu", ["node-1", "node-2"])
    store.update_progress(
        job.job_id,
        4,
        {"meta_loss": 0.25, "dropped_estimates": 2, "inner_steps_per_second": 1e4, "custom": 1.5},
    )
    files = CheckpointStore(tmp_path / "ckpt")
    record = store.add_checkpoint(job.job_id, 4, *files.write(job.job_id, 4, b"abc"))
    store.log(job.job_id, "WARNING", "fell back to CPU")
    return submission, store.get_job(job.job_id), record


def test_records_to_protos(store, tmp_path, clock):
    submission, job, record = _job_through_the_store(store, tmp_path)
    proto = convert.job_to_proto(job)
    assert (proto.job_id, proto.state, proto.step) == (job.job_id, job_pb2.JOB_STATE_RUNNING, 4)
    assert proto.spec == convert.spec_to_proto(submission.spec)
    assert (proto.device, list(proto.worker_nodes)) == ("gpu", ["node-1", "node-2"])
    assert (proto.kind, proto.request_id, proto.schedule_id) == (job_pb2.JOB_KIND_TRAINING, "q", "")
    assert convert.from_timestamp(proto.create_time) == clock.now
    assert proto.metrics.meta_loss == 0.25 and proto.metrics.dropped_estimates == 2
    assert proto.metrics.extra["custom"] == 1.5 and not proto.metrics.HasField("grad_norm")
    assert convert.metrics_from_proto(proto.metrics) == job.metrics

    checkpoint = convert.checkpoint_to_proto(record)
    assert (checkpoint.checkpoint_id, checkpoint.size_bytes) == (record.checkpoint_id, 3)
    events = [convert.event_to_proto(e) for e in store.events_after(job.job_id)]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.WhichOneof("event") for e in events] == [
        "state_change",
        "state_change",
        "metrics",
        "checkpoint_written",
        "log",
    ]
    assert events[0].state_change.from_state == job_pb2.JOB_STATE_UNSPECIFIED
    assert events[0].job.state == job_pb2.JOB_STATE_PENDING
    assert events[1].state_change.to_state == job_pb2.JOB_STATE_RUNNING
    assert events[2].metrics.step == 4 and events[2].metrics.metrics.meta_loss == 0.25
    assert events[3].checkpoint_written.checkpoint == checkpoint
    assert events[4].log.level == job_pb2.LOG_LEVEL_WARNING
    assert events[4].log.message == "fell back to CPU"


def test_evaluation_job_and_schedule_protos(store):
    submission = convert.evaluate_request(service_pb2.EvaluateRequest(checkpoint_id="ckpt-1"))
    job, _ = store.create_job(submission.spec_json, kind=JobKind.EVALUATION)
    curve = np.array([[1.0, 0.5, 0.25], [1.0, np.inf, 0.5]])
    result = EvalResult("star", "digits_mlp", 2, (0, 1), curve, (), None, {})
    summary = evaluation_summary(result, label=convert.CHECKPOINT_LABEL)
    assert summary["diverged"] == 1 and summary["curve_steps"] == [0, 1, 2]  # seed 1: inf
    assert summary["curve"] == [1.0, None, 0.375] and summary["final_loss"] == 0.375
    assert summary["mean_loss"] is None and summary["initial_loss"] == 1.0
    job = store.set_evaluation(job.job_id, [summary])
    proto = convert.job_to_proto(job)
    assert proto.kind == job_pb2.JOB_KIND_EVALUATION
    assert proto.evaluation_spec.checkpoint_id == "ckpt-1" and not proto.HasField("spec")
    (evaluation,) = proto.evaluation
    assert (evaluation.label, evaluation.task, list(evaluation.seeds)) == (
        "checkpoint",
        "digits_mlp",
        [0, 1],
    )
    assert math.isnan(evaluation.curve[1]) and evaluation.curve[2] == 0.375
    assert evaluation.diverged == 1 and not evaluation.HasField("mean_loss")

    template = convert.submit_request(service_pb2.SubmitJobRequest()).spec_json
    fire = datetime(2030, 1, 2, 3, 0, tzinfo=UTC)
    schedule, _ = store.create_schedule(
        "0 3 * * *",
        "Europe/Zurich",
        template,
        OverlapPolicy.CANCEL_PREVIOUS,
        next_fire_time=fire,
        warm_start_from_previous=True,
    )
    proto = convert.schedule_to_proto(schedule)
    assert (proto.cron, proto.timezone, proto.paused) == ("0 3 * * *", "Europe/Zurich", False)
    assert proto.overlap_policy == schedule_pb2.OVERLAP_POLICY_CANCEL_PREVIOUS
    assert convert.from_timestamp(proto.next_fire_time) == fire
    assert proto.template == convert.spec_to_proto(TrainingSpec.from_json(template))
    assert proto.warm_start_from_previous
