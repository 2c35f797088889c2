"""MetaTrainConfig: the JobSpec's nesting, errors that name the JobSpec path, exact JSON round
trips, resolved optimizer defaults, and the flat layout of earlier versions."""

import dataclasses
import json

import pytest

from star_core import optimizers
from star_core.errors import ConfigError
from star_core.estimators import EstimatorConfig
from star_core.training.config import (
    SWITCHES,
    MetaTrainConfig,
    OptimizerConfig,
    OuterConfig,
)

STAR_DEFAULTS = {"alpha0": 1e-3, "beta2": 1e-3, "beta3": 1e-6, "beta4": 1e-3}


def _config(**changes):
    base = {
        "tasks": ["nqm"],
        "task_args": {"nqm": {"dim": 4}},
        "optimizer": {
            "kind": "star",
            "constants": {**STAR_DEFAULTS, "beta3": 0.01},
            "nominal_direction": "adam",
            "nominal": True,
            "precondition_blackbox": True,
        },
        "estimator": {
            "kind": "es",
            "sigma": 0.02,
            "truncation_length": 3,
            "horizon": 9,
            "num_pairs": 2,
        },
        "outer": {"learning_rate": 3e-3, "clip": 2.0, "weight_decay": 0.5, "decay_all": True},
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
    assert config.outer == OuterConfig(3e-3, 2.0, 0.5, True)
    assert config.to_dict() == _config()
    assert MetaTrainConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config.to_dict()))
    assert MetaTrainConfig.from_file(path) == config
    assert config.make_optimizer().config.beta3 == 0.01
    assert config.make_task("nqm").dim == 4


def test_configs_are_hashable_and_equal_configs_hash_equal():
    a = MetaTrainConfig.from_dict(_config())
    b = MetaTrainConfig.from_dict(json.loads(json.dumps(_config())))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert hash(a) != hash(dataclasses.replace(a, seed=12))


def test_defaults_follow_the_spec_and_the_measured_sweeps():
    config = MetaTrainConfig()
    # clip 3 and MLP-only decay: docs/algorithm.md (Outer step, Outer weight decay);
    # lr 3e-3 and decay 2.0: the docs/results.md sweeps.
    assert config.outer == OuterConfig(learning_rate=3e-3, clip=3.0, weight_decay=2.0)
    assert config.outer.decay_all is False
    assert config.optimizer.kind == "star" and config.estimator.kind == "pes"


def test_the_optimizer_resolves_the_defaults_of_its_kind():
    star = OptimizerConfig("star", {"beta3": 1e-5})
    assert star.constants == {**STAR_DEFAULTS, "beta3": 1e-5}
    assert (star.nominal_direction, star.nominal, star.precondition_blackbox) == (
        "adamaggmo",
        True,
        True,
    )
    assert star == OptimizerConfig("star", star.constants, "adamaggmo", True, True)
    blackbox = OptimizerConfig("blackbox")
    assert blackbox.constants == {"beta1": 1e-3, "beta2": 1e-3}
    assert blackbox.switches() == {} and blackbox.to_dict() == {
        "kind": "blackbox",
        "constants": {"beta1": 1e-3, "beta2": 1e-3},
    }
    hyperparam = OptimizerConfig("hyperparam", nominal_direction="sgd")
    assert hyperparam.switches() == {"nominal_direction": "sgd"}
    assert hyperparam.make() == optimizers.get("hyperparam", nominal_direction="sgd")


@pytest.mark.parametrize("kind", optimizers.meta_trainable())
def test_every_setting_of_a_learned_optimizer_is_a_constant_or_a_switch(kind):
    """The contract OptimizerConfig relies on: a config field is a switch (a field of its own
    in OptimizerConfig and JobSpec.optimizer) or a float constant."""
    config_class = optimizers.OPTIMIZERS[kind].config_class
    switch_fields = {f.name for f in dataclasses.fields(OptimizerConfig)} - {"kind", "constants"}
    assert set(SWITCHES) == switch_fields
    for field in dataclasses.fields(config_class):
        assert field.name in SWITCHES or isinstance(field.default, float), field.name


def test_meta_trainable_kinds_come_from_the_registry():
    assert optimizers.meta_trainable() == ("blackbox", "star", "hyperparam")
    assert set(optimizers.baselines()) == set(optimizers.OPTIMIZERS) - {
        "blackbox",
        "star",
        "hyperparam",
    }


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"tasks": []}, "tasks", "tasks must name at least one task"),
        ({"tasks": ["no_such_task"]}, "tasks[0]", "tasks.0.: unknown task 'no_such_task'"),
        ({"tasks": ["nqm", "bogus"]}, "tasks[1]", "allowed: .*digits_mlp"),
        ({"tasks": "nqm"}, "tasks", "tasks must be a list"),
        ({"tasks": ["nqm", "nqm"]}, "tasks[1]", "'nqm' is repeated"),
        ({"task_args": {"digits_mlp": {}}}, "task_args.digits_mlp", "is not one of tasks"),
        ({"task_args": {"nqm": {"dims": 3}}}, "task_args.nqm.dims", "nqm has no field 'dims'"),
        ({"task_args": {"nqm": {"dim": 0}}}, "task_args.nqm", "dim must be a positive"),
        ({"optimizer": {"kind": "adam"}}, "optimizer.kind", "blackbox, star, hyperparam"),
        (
            {"optimizer": {"kind": "star", "constants": {"beta9": 1.0}}},
            "optimizer.constants.beta9",
            "'beta9' is not a constant of star",
        ),
        (
            {"optimizer": {"kind": "star", "constants": {"beta3": -1.0}}},
            "optimizer.constants.beta3",
            r"optimizer.constants.beta3 must be a finite number >= 0",
        ),
        (
            {"optimizer": {"kind": "star", "constants": {"beta3": "big"}}},
            "optimizer.constants.beta3",
            "must be a finite number",
        ),
        (
            {"optimizer": {"kind": "blackbox", "nominal": False}},
            "optimizer.nominal",
            "nominal is not a setting of blackbox",
        ),
        (
            {"optimizer": {"kind": "star", "nominal_direction": "newton"}},
            "optimizer.nominal_direction",
            "must be one of",
        ),
        ({"optimizer": {"kinds": "star"}}, "optimizer.kinds", r"unknown field\(s\) \['kinds'\]"),
        (
            {"outer": {"learning_rate": 0.0}},
            "outer.learning_rate",
            "outer.learning_rate must be a finite number > 0",
        ),
        ({"outer": {"clip": float("inf")}}, "outer.clip", "finite number > 0"),
        ({"outer": {"weight_decay": -0.1}}, "outer.weight_decay", "finite number >= 0"),
        ({"outer": {"decay_all": "yes"}}, "outer.decay_all", "true or false"),
        ({"outer_steps": 0}, "outer_steps", "outer_steps must be an integer >= 1"),
        ({"seed": 1.5}, "seed", "seed must be an integer >= 0"),
        ({"checkpoint_interval": True}, "checkpoint_interval", "must be an integer >= 1"),
        ({"estimator": {"kind": "sgd"}}, "estimator.kind", "kind must be one of"),
        ({"estimator": {"sigma": 0.0}}, "estimator.sigma", "sigma must be a finite positive"),
        ({"estimator": {"pairs": 3}}, "estimator.pairs", r"unknown field\(s\) \['pairs'\]"),
        ({"learning_rate": 1.0}, "learning_rate", r"unknown field\(s\) \['learning_rate'\]"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_jobspec_path(changes, field, message):
    with pytest.raises(ConfigError, match=message) as err:
        MetaTrainConfig.from_dict(_config(**changes))
    assert err.value.field == field


def test_the_flat_layout_of_earlier_versions_is_read():
    flat = {
        "tasks": ["nqm"],
        "optimizer": "star",
        "optimizer_config": {"beta3": 1e-5, "nominal_direction": "adam"},
        "outer_learning_rate": 1e-2,
        "clip": 2.0,
        "outer_weight_decay": 0.5,
        "decay_all": True,
        "outer_steps": 4,
    }
    config = MetaTrainConfig.from_dict(flat)
    assert config.optimizer == OptimizerConfig("star", {"beta3": 1e-5}, nominal_direction="adam")
    assert config.outer == OuterConfig(1e-2, 2.0, 0.5, True)
    assert config.outer_steps == 4 and "optimizer_config" not in config.to_dict()
    only_outer = MetaTrainConfig.from_dict({"clip": 1.0})
    assert only_outer.outer == OuterConfig(clip=1.0) and only_outer.optimizer == OptimizerConfig()
    blackbox = MetaTrainConfig.from_dict({"optimizer": "blackbox", "optimizer_config": {}})
    assert blackbox.optimizer == OptimizerConfig("blackbox")
    with pytest.raises(ConfigError) as err:
        MetaTrainConfig.from_dict({**flat, "optimizer_config": {"beta3": -1.0}})
    assert err.value.field == "optimizer.constants.beta3"
    with pytest.raises(ConfigError) as err:
        MetaTrainConfig.from_dict({"clip": 1.0, "outer": {"clip": 2.0}})
    assert err.value.field == "outer"


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
