"""MetaTrainConfig: validation errors name the field, JSON round trips are exact."""

import json

import pytest

from star_core.estimators import EstimatorConfig
from star_core.training.config import MetaTrainConfig


def _config(**changes):
    base = {
        "tasks": ["nqm"],
        "task_args": {"nqm": {"dim": 4}},
        "optimizer": "star",
        "optimizer_config": {"beta3": 0.01, "nominal_direction": "adam"},
        "estimator": {
            "kind": "es",
            "sigma": 0.02,
            "truncation_length": 3,
            "horizon": 9,
            "num_pairs": 2,
        },
        "outer_learning_rate": 3e-3,
        "clip": 2.0,
        "outer_weight_decay": 0.5,
        "decay_all": True,
        "outer_steps": 7,
        "seed": 11,
        "checkpoint_interval": 3,
    }
    base.update(changes)
    return base


def test_dict_and_file_round_trips_are_exact(tmp_path):
    config = MetaTrainConfig.from_dict(_config())
    assert config.tasks == ("nqm",)
    assert config.estimator == EstimatorConfig("es", 0.02, 3, 9, 2)
    assert config.to_dict() == _config()
    assert MetaTrainConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config.to_dict()))
    assert MetaTrainConfig.from_file(path) == config
    assert config.make_optimizer().config.beta3 == 0.01
    assert config.make_task("nqm").dim == 4


def test_defaults_follow_the_spec_and_the_measured_sweeps():
    config = MetaTrainConfig()
    # clip 3 and MLP-only decay: docs/algorithm.md (Outer step, Outer weight decay);
    # lr 3e-3 and decay 2.0: the docs/results.md sweeps.
    assert (config.clip, config.decay_all) == (3.0, False)
    assert (config.outer_learning_rate, config.outer_weight_decay) == (3e-3, 2.0)
    assert config.optimizer == "star" and config.estimator.kind == "pes"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tasks": []}, "tasks must name at least one task"),
        ({"tasks": ["no_such_task"]}, "tasks: unknown task 'no_such_task'; allowed: .*digits_mlp"),
        ({"tasks": "nqm"}, "tasks must be a list"),
        ({"tasks": ["nqm", "nqm"]}, "tasks must not repeat"),
        ({"task_args": {"digits_mlp": {}}}, "task_args: 'digits_mlp' is not one of tasks"),
        ({"optimizer": "adam"}, "optimizer must be one of blackbox, star, hyperparam"),
        ({"optimizer_config": {"beta9": 1.0}}, "optimizer_config: unknown config field.*beta9"),
        ({"optimizer_config": {"beta3": -1.0}}, "optimizer_config: beta3"),
        ({"outer_learning_rate": 0.0}, "outer_learning_rate must be a finite number > 0"),
        ({"clip": float("inf")}, "clip must be a finite number > 0"),
        ({"outer_weight_decay": -0.1}, "outer_weight_decay must be a finite number >= 0"),
        ({"decay_all": "yes"}, "decay_all must be one of True, False"),
        ({"outer_steps": 0}, "outer_steps must be an integer >= 1"),
        ({"seed": 1.5}, "seed must be an integer >= 0"),
        ({"checkpoint_interval": True}, "checkpoint_interval must be an integer >= 1"),
        ({"estimator": {"kind": "sgd"}}, "kind must be one of"),
        ({"estimator": {"pairs": 3}}, r"estimator: unknown field\(s\) \['pairs'\]"),
        ({"learning_rate": 1.0}, r"unknown config field\(s\) \['learning_rate'\]"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        MetaTrainConfig.from_dict(_config(**changes))


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        MetaTrainConfig.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        MetaTrainConfig.from_file(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        MetaTrainConfig.from_file(listed)
