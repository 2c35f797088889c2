"""The job state machine, DistributedConfig / EvaluationConfig validation and the GPU rule."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest

from services.domain import (
    BASELINES,
    TERMINAL_STATES,
    TRANSITIONS,
    DistributedConfig,
    EvaluationConfig,
    EvaluationJobSpec,
    FailedPrecondition,
    JobState,
    TrainingSpec,
    check_id,
    check_transition,
)
from star_core import optimizers
from star_core.errors import ConfigError

S = JobState
ALLOWED = {
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.FAILED),
    (S.RUNNING, S.CANCELLING),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.PENDING),
    (S.CANCELLING, S.CANCELLED),
    (S.CANCELLING, S.SUCCEEDED),
    (S.CANCELLING, S.FAILED),
}


def test_transition_table_is_exactly_the_documented_one():
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(JobState)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobState, JobState)))
def test_check_transition_allows_only_the_table(current, target):
    if (current, target) in ALLOWED:
        check_transition("job-x", current, target)
        assert current.can_become(target)
    else:
        with pytest.raises(FailedPrecondition, match=f"{current.value}.*{target.value}"):
            check_transition("job-x", current, target)


def test_terminal_states_have_no_way_out():
    assert {s for s in JobState if s.is_terminal()} == TERMINAL_STATES
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED} == TERMINAL_STATES
    assert all(not TRANSITIONS[s] for s in TERMINAL_STATES)
    assert all(TRANSITIONS[s] for s in JobState if not s.is_terminal())


def test_distributed_defaults():
    config = DistributedConfig()
    assert (config.num_workers, config.gpus_per_worker, config.max_staleness) == (2, None, 1)
    assert config.batch == 2
    assert DistributedConfig(num_workers=5).batch == 5
    assert DistributedConfig(num_workers=5).estimates_per_step == 5  # resolved
    assert DistributedConfig(num_workers=5, estimates_per_step=3).batch == 3


@pytest.mark.parametrize(
    ("gpus_per_worker", "workers", "cluster_gpus", "expected"),
    [
        (None, 2, 0, 0.0),  # automatic, no GPU: CPU workers
        (None, 2, 2, 1.0),  # automatic, enough GPUs: one each
        (None, 2, 8, 1.0),
        (None, 3, 1, 1 / 3),  # three workers share one card
        (None, 3, 2, 0.5),  # ceil(3 / 2) = 2 per card
        (None, 5, 2, 1 / 3),
        (0.0, 2, 4, 0.0),  # explicit CPU
        (0.25, 2, 1, 0.25),  # explicit fraction
        (2.0, 2, 0, 0.0),  # explicit GPUs on a CPU cluster: fall back to CPU
    ],
)
def test_gpu_rule(gpus_per_worker, workers, cluster_gpus, expected):
    config = DistributedConfig(num_workers=workers, gpus_per_worker=gpus_per_worker)
    assert config.resolve_gpus(cluster_gpus) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_workers": 0}, "num_workers"),
        ({"num_workers": 65}, "num_workers"),
        ({"num_workers": True}, "num_workers"),
        ({"gpus_per_worker": -1.0}, "gpus_per_worker"),
        ({"gpus_per_worker": 1.5}, "gpus_per_worker"),
        ({"gpus_per_worker": float("nan")}, "gpus_per_worker"),
        ({"gpus_per_worker": 9.0}, "gpus_per_worker"),
        ({"worker_resources": {"GPU": 1.0}}, "worker_resources.GPU"),
        ({"worker_resources": {"tpu": 0.0}}, "worker_resources.tpu"),
        ({"worker_resources": {"tpu": float("inf")}}, "worker_resources.tpu"),
        ({"worker_resources": {"bad name": 1.0}}, "worker_resources"),
        ({"worker_resources": {f"r{i}": 1.0 for i in range(17)}}, "worker_resources"),
        ({"max_staleness": -1}, "max_staleness"),
        ({"max_staleness": 101}, "max_staleness"),
        ({"estimates_per_step": 0}, "estimates_per_step"),
    ],
)
def test_distributed_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        DistributedConfig(**kwargs)
    assert err.value.field == field


def test_zero_staleness_and_custom_resources_are_legal():
    config = DistributedConfig(max_staleness=0, worker_resources={"accel:v5": 0.5})
    assert config.max_staleness == 0 and config.worker_resources == {"accel:v5": 0.5}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": 0}, "evaluation.steps"),
        ({"seeds": 0}, "evaluation.seeds"),
        ({"seeds": 65}, "evaluation.seeds"),
        ({"baselines": ("adam", "rmsprop")}, "evaluation.baselines[1]"),
        ({"baselines": ("adam", "adam")}, "evaluation.baselines[1]"),
        ({"baselines": ("adam",) * 9}, "evaluation.baselines"),
    ],
)
def test_evaluation_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        EvaluationConfig(**kwargs)
    assert err.value.field == field


def test_evaluation_steps_default_to_ten_horizons():
    assert EvaluationConfig().steps_for(2000) == 20_000
    assert EvaluationConfig(steps=7).steps_for(2000) == 7


def test_baselines_are_the_optimizers_without_meta_parameters_and_tuned_adam():
    untrained = {n for n, cls in optimizers.OPTIMIZERS.items() if cls().num_meta_params == 0}
    assert set(BASELINES) == untrained | {"adam-tuned"}


@pytest.mark.parametrize("request_id", ["x" * 129, "a b", "a/b", "é"])
def test_bad_request_ids(request_id):
    with pytest.raises(ConfigError) as err:
        check_id(request_id, "request_id")
    assert err.value.field == "request_id"


def test_good_request_ids():
    for request_id in ("", "a", "client-1:2024.01.01_x", "x" * 128):
        check_id(request_id, "request_id")


def test_a_training_spec_stores_as_canonical_jobspec_shaped_json():
    from star_core.training.config import MetaTrainConfig

    config = MetaTrainConfig(tasks=("nqm",))
    spec = TrainingSpec(config, DistributedConfig(num_workers=3), "ckpt-1", EvaluationConfig())
    text = spec.to_json()
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert set(data) == {
        *config.to_dict(),
        "num_workers",
        "worker_resources",
        "max_staleness",
        "estimates_per_step",
        "cpus_per_worker",
        "warm_start_checkpoint_id",
        "keep_checkpoints",
        "evaluation",
    }  # gpus_per_worker: automatic, left out
    assert data["optimizer"]["constants"]["beta3"] == 1e-6 and data["estimates_per_step"] == 3
    assert data["evaluation"] == {"task": "nqm", "steps": 20_000, "seeds": 3, "baselines": []}
    with sqlite3.connect(":memory:") as conn:  # what checkpoint retention queries
        query = "SELECT json_extract(?, '$.warm_start_checkpoint_id')"
        assert conn.execute(query, (text,)).fetchone()[0] == "ckpt-1"
    assert TrainingSpec.from_json(text) == spec and TrainingSpec.from_json(text).to_json() == text
    assert TrainingSpec.from_dict({}) == TrainingSpec(MetaTrainConfig())


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"num_worker": 2}, "num_worker"),
        ({"outer": {"lr": 1.0}}, "outer.lr"),
        ({"tasks": ["nqm"], "evaluation": {"steps": 0}}, "evaluation.steps"),
        ({"evaluation": {"task": "nope"}}, "evaluation.task"),
        ({"warm_start_checkpoint_id": "../x"}, "warm_start_checkpoint_id"),
        ({"worker_resources": [1]}, "worker_resources"),
    ],
)
def test_a_training_spec_dict_names_the_bad_field(data, field):
    with pytest.raises(ConfigError) as err:
        TrainingSpec.from_dict(data)
    assert err.value.field == field


def test_an_evaluation_job_spec_round_trips_unresolved():
    spec = EvaluationJobSpec("ckpt-2", EvaluationConfig(seeds=2, baselines=("adam",)))
    assert json.loads(spec.to_json()) == {
        "checkpoint_id": "ckpt-2",
        "evaluation": {"task": "", "seeds": 2, "baselines": ["adam"]},
    }
    assert EvaluationJobSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigError) as err:
        EvaluationJobSpec("")
    assert err.value.field == "checkpoint_id"
