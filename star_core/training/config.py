"""``MetaTrainConfig``: everything that defines one meta-training run, validated once.

A run (docs/algorithm.md) meta-trains the learned optimizer ``optimizer`` (with constants
``optimizer_config``) on the tasks ``tasks`` with the gradient estimator ``estimator``
(ES or PES) and the outer step of docs/algorithm.md (Adam at ``outer_learning_rate``, each
meta-gradient element clipped to ``[-clip, clip]``, outer weight decay in optax's convention:
``outer_weight_decay * theta_mlp`` added to the meta-gradient, on every meta-parameter when
``decay_all``).
With several tasks, each outer step uses one, chosen by a schedule derived from ``seed``.

The config round-trips through JSON (``to_dict`` / ``from_dict`` / ``from_file``); it is stored
in every checkpoint, so a checkpoint says how it was made.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any

from star_core import optimizers, tasks
from star_core.errors import ConfigError
from star_core.estimators import EstimatorConfig

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


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively (the JSON form of a config value)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _frozen(value: Any) -> Any:
    """Lists -> tuples, recursively (JSON arrays back to the hashable form configs use)."""
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _check_number(field: str, value: Any, low: float, low_inclusive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if low_inclusive else value > low)
    if not ok:
        bound = ">=" if low_inclusive else ">"
        raise ConfigError(field, f"{field} must be a finite number {bound} {low}, got {value!r}")


def _check_int(field: str, value: Any, low: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ConfigError(field, f"{field} must be an integer >= {low}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """One meta-training run; see the module docstring. Validated at construction."""

    tasks: tuple[str, ...] = (DEFAULT_TASK,)
    task_args: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    optimizer: str = DEFAULT_OPTIMIZER
    optimizer_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    estimator: EstimatorConfig = dataclasses.field(default_factory=EstimatorConfig)
    outer_learning_rate: float = DEFAULT_OUTER_LEARNING_RATE
    clip: float = DEFAULT_CLIP
    outer_weight_decay: float = DEFAULT_OUTER_WEIGHT_DECAY
    decay_all: bool = False
    outer_steps: int = DEFAULT_OUTER_STEPS
    seed: int = 0
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str) or not isinstance(self.tasks, list | tuple):
            raise ConfigError("tasks", f"tasks must be a list of task names, got {self.tasks!r}")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "task_args", _frozen(dict(self.task_args)))
        object.__setattr__(self, "optimizer_config", _frozen(dict(self.optimizer_config)))
        self._validate_tasks()
        self._validate_optimizer()
        if not isinstance(self.estimator, EstimatorConfig):
            raise ConfigError(
                "estimator", f"estimator must be an EstimatorConfig, got {self.estimator!r}"
            )
        _check_number("outer_learning_rate", self.outer_learning_rate, 0.0, low_inclusive=False)
        _check_number("clip", self.clip, 0.0, low_inclusive=False)
        _check_number("outer_weight_decay", self.outer_weight_decay, 0.0, low_inclusive=True)
        if self.decay_all not in (True, False):
            raise ConfigError(
                "decay_all", f"decay_all must be one of True, False; got {self.decay_all!r}"
            )
        _check_int("outer_steps", self.outer_steps, 1)
        _check_int("seed", self.seed, 0)
        _check_int("checkpoint_interval", self.checkpoint_interval, 1)

    def _validate_tasks(self) -> None:
        allowed = ", ".join(sorted(tasks.TASKS))
        if not self.tasks:
            raise ConfigError("tasks", f"tasks must name at least one task; allowed: {allowed}")
        for index, name in enumerate(self.tasks):
            if not isinstance(name, str) or name not in tasks.TASKS:
                raise ConfigError(
                    f"tasks[{index}]", f"tasks: unknown task {name!r}; allowed: {allowed}"
                )
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("tasks", f"tasks must not repeat a name, got {list(self.tasks)}")
        for name, args in self.task_args.items():
            if name not in self.tasks:
                raise ConfigError(
                    f"task_args.{name}",
                    f"task_args: {name!r} is not one of tasks {list(self.tasks)}",
                )
            if not isinstance(args, dict):
                raise ConfigError(
                    f"task_args.{name}", f"task_args[{name!r}] must be a dict of keyword arguments"
                )
            try:
                self.make_task(name)
            except ConfigError as err:
                raise err.within(f"task_args.{name}") from err
            except (TypeError, ValueError) as err:
                raise ConfigError(f"task_args.{name}", f"task_args[{name!r}]: {err}") from err

    def _validate_optimizer(self) -> None:
        meta_trainable = [n for n, cls in optimizers.OPTIMIZERS.items() if _has_meta_params(cls)]
        if self.optimizer not in meta_trainable:
            raise ConfigError(
                "optimizer",
                f"optimizer must be one of {', '.join(meta_trainable)} (a learned optimizer),"
                f" got {self.optimizer!r}",
            )
        try:
            self.make_optimizer()
        except ConfigError as err:
            raise ConfigError(f"optimizer_config.{err.field}", f"optimizer_config: {err}") from err
        except (TypeError, ValueError) as err:
            raise ConfigError("optimizer_config", f"optimizer_config: {err}") from err

    def make_optimizer(self) -> optimizers.LearnedOptimizer:
        """The learned optimizer this run meta-trains."""
        return optimizers.get(self.optimizer, **self.optimizer_config)

    def make_task(self, name: str) -> tasks.Task:
        """The task ``name`` of this run, with its ``task_args``."""
        return tasks.get(name, **self.task_args.get(name, {}))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (the inverse of :meth:`from_dict`)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["estimator"] = dataclasses.asdict(self.estimator)
        return _jsonable(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaTrainConfig:
        """Build from a (JSON) dict; unknown keys raise a ValueError naming them."""
        if not isinstance(data, dict):
            raise ConfigError("", f"a meta-training config must be a JSON object, got {type(data)}")
        _reject_unknown_fields("", data, cls, "config field")
        values = dict(data)
        if "estimator" in values and not isinstance(values["estimator"], EstimatorConfig):
            try:
                values["estimator"] = _estimator_from_dict(values["estimator"])
            except ConfigError as err:
                raise err.within("estimator") from err
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> MetaTrainConfig:
        """Read a JSON config file (FileNotFoundError / ValueError with the file's name)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError("", f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data)


@functools.cache
def _has_meta_params(cls: type) -> bool:
    """Whether the default instance of an optimizer class has meta-parameters to train."""
    try:
        return cls().num_meta_params > 0
    except (TypeError, ValueError):
        return False


def _estimator_from_dict(data: Any) -> EstimatorConfig:
    if not isinstance(data, dict):
        raise ConfigError(
            "", f"estimator must be an object of EstimatorConfig fields, got {data!r}"
        )
    _reject_unknown_fields("estimator: ", data, EstimatorConfig, "field")
    return EstimatorConfig(**_frozen(data))


def _reject_unknown_fields(prefix: str, data: dict[str, Any], cls: type, noun: str) -> None:
    """ConfigError naming the keys of ``data`` that are not fields of the dataclass ``cls``."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(
            unknown[0], f"{prefix}unknown {noun}(s) {unknown}; allowed: {', '.join(allowed)}"
        )
