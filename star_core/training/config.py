"""``MetaTrainConfig``: everything that defines one meta-training run, shaped like the JobSpec.

A run (docs/algorithm.md) meta-trains a learned optimizer on ``tasks`` with a gradient
estimator and the outer step of docs/algorithm.md. The config nests as the service's JobSpec
does (proto/star/v1/job.proto), so a JobSpec and a config are one shape::

    tasks                 registered task names; each outer step uses one, chosen from `seed`
    task_args             {task: {field: value}}: task fields (the one part a JobSpec lacks)
    optimizer             OptimizerConfig: kind, constants, nominal_direction, nominal,
                          precondition_blackbox
    estimator             EstimatorConfig: kind, sigma, truncation_length, horizon, num_pairs
    outer                 OuterConfig: learning_rate, clip, weight_decay, decay_all (Adam at
                          `learning_rate` on the meta-gradient plus `weight_decay * theta_mlp`,
                          optax's convention, on every meta-parameter when `decay_all`, each
                          element clipped to [-clip, clip])
    outer_steps, seed, checkpoint_interval

Validated once, at construction. A mistake raises ``ConfigError`` whose field is the path in
this layout, which is the JobSpec's path (``optimizer.constants.beta3``, ``outer.learning_rate``,
``estimator.sigma``, ``tasks[1]``; a part reports its own names, ``from_dict`` nests them).
``OptimizerConfig`` resolves its kind's defaults, so a config says exactly what runs.

The config round-trips through JSON (``to_dict`` / ``from_dict`` / ``from_file``) and is stored
in every checkpoint (metadata ``meta_train_config``). ``from_dict`` also reads the flat layout
that configs and checkpoints had before (``optimizer`` as a name, ``optimizer_config``,
``outer_learning_rate``, ``clip``, ``outer_weight_decay``, ``decay_all`` at the top);
``to_dict`` writes the nested one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from star_core import optimizers, tasks
from star_core.errors import ConfigError, check_int, check_number
from star_core.estimators import EstimatorConfig
from star_core.tasks import Task

# Defaults of the outer step (docs/algorithm.md), set by the measurements in docs/results.md
# (experiments/paper_claims.py): on digits_mlp, 150 outer steps of STAR at outer learning rates
# 1e-3 / 3e-3 / 1e-2 reached meta-losses 0.225 / 0.161 / 0.122; 3e-3 is the top of the
# starting range 1e-4..3e-3. Outer weight decay 2.0 kept the held-out loss of STAR
# (beta3 = 1e-5) bounded at 50x the horizon where 0.2 let it blow up (0.71 vs 9.4).
# Weight decay in optax's convention (gradient + lambda * theta_mlp, training/outer.py); these
# runs were made as 1.0 and 0.1 under the former penalty lambda * ||theta_mlp||^2, whose
# trajectories are the same.
DEFAULT_OUTER_LEARNING_RATE = 3e-3
DEFAULT_CLIP = 3.0
DEFAULT_OUTER_WEIGHT_DECAY = 2.0
DEFAULT_OUTER_STEPS = 1000
DEFAULT_CHECKPOINT_INTERVAL = 100
DEFAULT_OPTIMIZER = "star"
DEFAULT_TASK = "digits_mlp"
# The optimizer settings that are not numeric constants: each is a field of OptimizerConfig
# (and of JobSpec.optimizer) of its own; every other field of an optimizer's config is a
# constant. tests/training/test_config.py checks this split over the registry.
SWITCHES = ("nominal_direction", "nominal", "precondition_blackbox")
# The flat layout's outer-step fields -> OuterConfig's (read by from_dict).
FLAT_OUTER_FIELDS = {
    "outer_learning_rate": "learning_rate",
    "clip": "clip",
    "outer_weight_decay": "weight_decay",
    "decay_all": "decay_all",
}


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively (the JSON form of a config value)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _frozen(value: Any) -> Any:
    """Lists -> tuples, recursively (JSON arrays back to the hashable form configs use)."""
    if isinstance(value, Mapping):
        return {k: _frozen(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _hashable(value: Any) -> Any:
    """A hashable stand-in of a config value (mappings -> sorted item tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The learned optimizer (JobSpec.optimizer): its registry ``kind``, its numeric
    ``constants`` by name, and its switches (None where the kind has no such setting).

    Resolved at construction: constants and switches the kind has but that were not given
    take the kind's defaults. ConfigError fields: ``kind``, ``constants.<name>``, ``<switch>``.
    """

    kind: str = DEFAULT_OPTIMIZER
    constants: Mapping[str, float] = dataclasses.field(default_factory=dict)
    nominal_direction: str | None = None
    nominal: bool | None = None
    precondition_blackbox: bool | None = None

    def __post_init__(self) -> None:
        kinds = optimizers.meta_trainable()
        if self.kind not in kinds:
            raise ConfigError(
                "kind",
                f"kind must be one of {', '.join(kinds)} (a learned optimizer), got {self.kind!r}",
            )
        if not isinstance(self.constants, Mapping):
            raise ConfigError("constants", "constants must map constant names to numbers")
        fields = [f.name for f in dataclasses.fields(optimizers.OPTIMIZERS[self.kind].config_class)]
        names = [name for name in fields if name not in SWITCHES]
        for name, value in self.constants.items():
            field = f"constants.{name}" if str(name).isidentifier() else "constants"
            if name not in names:
                raise ConfigError(
                    field, f"{name!r} is not a constant of {self.kind}; allowed: {', '.join(names)}"
                )
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(field, f"{field} must be a finite number, got {value!r}")
        switches = self.switches()
        for name in switches:
            if name not in fields:
                raise ConfigError(name, f"{name} is not a setting of {self.kind}")
        try:
            lopt = optimizers.get(self.kind, **self.constants, **switches)
        except ConfigError as err:
            raise (err.within("constants") if err.field in names else err) from err
        resolved = dataclasses.asdict(lopt.config)
        object.__setattr__(self, "constants", {n: float(resolved[n]) for n in names})
        for name in SWITCHES:
            object.__setattr__(self, name, resolved.get(name))

    def __hash__(self) -> int:
        return hash(_hashable(self.to_dict()))

    def switches(self) -> dict[str, Any]:
        """The switches that are set, by name."""
        values = {name: getattr(self, name) for name in SWITCHES}
        return {name: value for name, value in values.items() if value is not None}

    def make(self) -> optimizers.LearnedOptimizer:
        """The learned optimizer of this config."""
        return optimizers.get(self.kind, **self.constants, **self.switches())

    def to_dict(self) -> dict[str, Any]:
        """``{"kind", "constants", <the switches that are set>}``."""
        return {"kind": self.kind, "constants": dict(self.constants), **self.switches()}


@dataclasses.dataclass(frozen=True)
class OuterConfig:
    """The outer step (JobSpec.outer): Adam at ``learning_rate`` (> 0) on the meta-gradient
    plus ``weight_decay`` (>= 0) x theta (the MLP's, or every meta-parameter's when
    ``decay_all``), each element clipped to ``[-clip, clip]`` (clip > 0)."""

    learning_rate: float = DEFAULT_OUTER_LEARNING_RATE
    clip: float = DEFAULT_CLIP
    weight_decay: float = DEFAULT_OUTER_WEIGHT_DECAY
    decay_all: bool = False

    def __post_init__(self) -> None:
        check_number("learning_rate", self.learning_rate, 0.0, inclusive=False)
        check_number("clip", self.clip, 0.0, inclusive=False)
        check_number("weight_decay", self.weight_decay, 0.0)
        if not isinstance(self.decay_all, bool):
            raise ConfigError(
                "decay_all", f"decay_all must be true or false, got {self.decay_all!r}"
            )
        for name in ("learning_rate", "clip", "weight_decay"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "decay_all", bool(self.decay_all))


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """One meta-training run; see the module docstring. Validated at construction."""

    tasks: tuple[str, ...] = (DEFAULT_TASK,)
    task_args: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    estimator: EstimatorConfig = dataclasses.field(default_factory=EstimatorConfig)
    outer: OuterConfig = dataclasses.field(default_factory=OuterConfig)
    outer_steps: int = DEFAULT_OUTER_STEPS
    seed: int = 0
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str) or not isinstance(self.tasks, list | tuple):
            raise ConfigError("tasks", f"tasks must be a list of task names, got {self.tasks!r}")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not isinstance(self.task_args, Mapping):
            raise ConfigError("task_args", "task_args must map task names to their fields")
        object.__setattr__(self, "task_args", _frozen(dict(self.task_args)))
        self._validate_tasks()
        for name, kind in (
            ("optimizer", OptimizerConfig),
            ("estimator", EstimatorConfig),
            ("outer", OuterConfig),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(name, f"{name} must be an {kind.__name__}")
        check_int("outer_steps", self.outer_steps, 1)
        check_int("seed", self.seed, 0)
        check_int("checkpoint_interval", self.checkpoint_interval, 1)

    def _validate_tasks(self) -> None:
        if not self.tasks:
            allowed = ", ".join(sorted(tasks.TASKS))
            raise ConfigError("tasks", f"tasks must name at least one task; allowed: {allowed}")
        for index, name in enumerate(self.tasks):
            try:
                tasks.get(name)
            except ConfigError as err:
                raise err.within(f"tasks[{index}]") from err
            if name in self.tasks[:index]:
                raise ConfigError(f"tasks[{index}]", f"tasks[{index}]: {name!r} is repeated")
        for name, args in self.task_args.items():
            field = f"task_args.{name}"
            if name not in self.tasks:
                raise ConfigError(
                    field, f"{field}: {name!r} is not one of tasks {list(self.tasks)}"
                )
            if not isinstance(args, Mapping):
                raise ConfigError(field, f"{field} must map task fields to values")
            try:
                self.make_task(name)
            except ConfigError as err:
                raise err.within(field) from err

    def __hash__(self) -> int:
        return hash(_hashable(self.to_dict()))

    def make_optimizer(self) -> optimizers.LearnedOptimizer:
        """The learned optimizer this run meta-trains."""
        return self.optimizer.make()

    def make_task(self, name: str) -> Task:
        """The task ``name`` of this run, with its ``task_args``."""
        return tasks.get(name, **self.task_args.get(name, {}))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict in the nested layout (the inverse of :meth:`from_dict`)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["optimizer"] = self.optimizer.to_dict()
        data["estimator"] = dataclasses.asdict(self.estimator)
        data["outer"] = dataclasses.asdict(self.outer)
        return _jsonable(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetaTrainConfig:
        """Build from a (JSON) dict in the nested or the flat layout; unknown keys raise a
        ConfigError naming them, errors of a part are nested under its name."""
        if not isinstance(data, Mapping):
            raise ConfigError("", f"a meta-training config must be a JSON object, got {type(data)}")
        values = _nested_layout(data)
        _reject_unknown_fields(values, cls)
        for name, part in (
            ("optimizer", OptimizerConfig),
            ("estimator", EstimatorConfig),
            ("outer", OuterConfig),
        ):
            if name in values and not isinstance(values[name], part):
                values[name] = _part_from_dict(name, part, values[name])
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> MetaTrainConfig:
        """Read a JSON config file (FileNotFoundError / ConfigError with the file's name)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError("", f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data)


def _nested_layout(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` in the nested layout: a dict in the flat layout (``optimizer`` a name, with
    ``optimizer_config``; ``outer_learning_rate``, ``clip``, ... at the top) is moved into
    ``optimizer`` and ``outer``; a dict in the nested layout comes back as it is."""
    values = dict(data)
    if isinstance(values.get("optimizer"), str) or "optimizer_config" in values:
        settings = values.pop("optimizer_config", {})
        if not isinstance(settings, Mapping):
            raise ConfigError("optimizer_config", "optimizer_config must be a JSON object")
        optimizer = {k: v for k, v in settings.items() if k in SWITCHES}
        optimizer["constants"] = {k: v for k, v in settings.items() if k not in SWITCHES}
        values["optimizer"] = {"kind": values.get("optimizer", DEFAULT_OPTIMIZER), **optimizer}
    outer = {new: values.pop(old) for old, new in FLAT_OUTER_FIELDS.items() if old in values}
    if outer:
        if "outer" in values:
            raise ConfigError("outer", "outer is given twice: as outer and in the flat layout")
        values["outer"] = outer
    return values


def _part_from_dict(name: str, cls: type, data: Any) -> Any:
    """The part ``name`` (a dataclass ``cls``) of a config dict; errors nested under ``name``."""
    if not isinstance(data, Mapping):
        raise ConfigError(name, f"{name} must be a JSON object of {cls.__name__} fields")
    try:
        _reject_unknown_fields(data, cls)
        return cls(**_frozen(data))
    except ConfigError as err:
        raise err.within(name) from err


def _reject_unknown_fields(data: Mapping[str, Any], cls: type) -> None:
    """ConfigError naming the first key of ``data`` that is not a field of ``cls``."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(key) for key in set(data) - set(allowed))
    if unknown:
        raise ConfigError(unknown[0], f"unknown field(s) {unknown}; allowed: {', '.join(allowed)}")
