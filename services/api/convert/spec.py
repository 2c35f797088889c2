"""JobSpec proto <-> validated ``TrainingSpec``, and the canonical JSON of a message.

``spec_from_proto`` validates a JobSpec once and resolves every default, so the result (and
its canonical JSON, what the store keeps) says exactly what the job runs even if the library's
defaults change later. ``spec_to_proto`` is its inverse: ``spec_from_proto(spec_to_proto(s))
== s`` for every resolved ``s``, and ``spec_to_proto(spec_from_proto(p))`` is ``p`` with its
defaults filled in.

ConfigError fields are paths in the JobSpec proto (``estimator.sigma``,
``optimizer.constants.beta3``, ``tasks[0]``); ``MetaTrainConfig``'s field names are translated
by :func:`proto_path`. Callers nest them under the request's field (``err.within("spec")``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from services.domain import (
    DEFAULT_EVAL_SEEDS,
    MAX_CONSTANTS,
    MAX_HORIZON,
    MAX_NUM_PAIRS,
    MAX_OUTER_STEPS,
    MAX_REQUEST_ID,
    MAX_TASKS,
    MAX_TRUNCATION_LENGTH,
    DistributedConfig,
    EvaluationConfig,
    TrainingSpec,
)
from services.generated.star.v1 import job_pb2
from star_core import optimizers, tasks
from star_core.errors import ConfigError
from star_core.estimators import EstimatorConfig
from star_core.training.config import DEFAULT_OPTIMIZER, DEFAULT_TASK, MetaTrainConfig

# The learned optimizers a job can meta-train (JobSpec.optimizer.kind).
OPTIMIZER_KINDS = ("star", "blackbox", "hyperparam")
# Optimizer config fields that are proto fields of OptimizerSpec, not entries of `constants`.
SWITCHES = ("nominal_direction", "nominal", "precondition_blackbox")
# MetaTrainConfig field -> JobSpec path.
CONFIG_PATHS = {
    "outer_learning_rate": "outer.learning_rate",
    "clip": "outer.clip",
    "outer_weight_decay": "outer.weight_decay",
    "decay_all": "outer.decay_all",
    "optimizer": "optimizer.kind",
    "optimizer_config": "optimizer.constants",
}
# Ids a spec refers to (warm_start_checkpoint_id): bounded, printable.
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]+")
# A plain ValueError message's leading field name (the fallback of proto_path).
_MESSAGE_FIELD = re.compile(r"^(?:EstimatorConfig\.)?([a-z_]+)(?:\[\d+\])?(?::\s*([a-z0-9_]+))?")


def canonical_json(message: Message) -> str:
    """The message's proto3 JSON form with sorted keys and no spaces (proto field names)."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def proto_path(config_field: str) -> str:
    """The JobSpec path of a ``MetaTrainConfig`` ConfigError field."""
    head, _, rest = config_field.partition(".")
    if head == "optimizer_config" and rest:
        return f"optimizer.{rest}" if rest in SWITCHES else f"optimizer.constants.{rest}"
    return CONFIG_PATHS.get(config_field, config_field)


def proto_path_from_message(message: str) -> str:
    """Fallback for a plain ValueError: the JobSpec path named at the start of its message
    ("outer_learning_rate must be ...", "optimizer_config: beta3 must be ...")."""
    match = _MESSAGE_FIELD.match(message)
    if not match:
        return ""
    head, sub = match.groups()
    if head in (
        "sigma",
        "kind",
        "truncation_length",
        "horizon",
        "num_pairs",
    ) and message.startswith("EstimatorConfig."):
        return f"estimator.{head}"
    return proto_path(f"{head}.{sub}" if head == "optimizer_config" and sub else head)


def _optional(message: Message, name: str) -> dict[str, Any]:
    return {name: getattr(message, name)} if message.HasField(name) else {}


def _check_tasks(names: list[str]) -> None:
    if len(names) > MAX_TASKS:
        raise ConfigError("tasks", f"tasks: at most {MAX_TASKS} names, got {len(names)}")
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"tasks[{index}]", f"tasks[{index}]: {name!r} is repeated")


def _optimizer_config(spec: job_pb2.OptimizerSpec) -> tuple[str, dict[str, Any]]:
    kind = spec.kind or DEFAULT_OPTIMIZER
    if kind not in OPTIMIZER_KINDS:
        raise ConfigError(
            "optimizer.kind",
            f"optimizer.kind must be one of {', '.join(OPTIMIZER_KINDS)}; got {kind!r}",
        )
    fields = [f.name for f in dataclasses.fields(optimizers.OPTIMIZERS[kind].config_class)]
    constants = [name for name in fields if name not in SWITCHES]
    if len(spec.constants) > MAX_CONSTANTS:
        raise ConfigError("optimizer.constants", f"at most {MAX_CONSTANTS} constants")
    values: dict[str, Any] = {}
    for name in sorted(spec.constants):
        if name not in constants:
            field = f"optimizer.constants.{name}" if name.isidentifier() else "optimizer.constants"
            raise ConfigError(
                field,
                f"optimizer.constants: {name!r} is not a constant of {kind}"
                f"; allowed: {', '.join(constants)}",
            )
        values[name] = spec.constants[name]
    for name in SWITCHES:
        if spec.HasField(name):
            if name not in fields:
                raise ConfigError(
                    f"optimizer.{name}", f"optimizer.{name} is not a setting of {kind}"
                )
            values[name] = getattr(spec, name)
    return kind, values


def _estimator(spec: job_pb2.EstimatorSpec) -> EstimatorConfig:
    kwargs: dict[str, Any] = {"kind": spec.kind or "pes"}
    for name in ("sigma", "truncation_length", "horizon", "num_pairs"):
        kwargs.update(_optional(spec, name))
    try:
        config = EstimatorConfig(**kwargs)
    except ConfigError as err:
        raise err.within("estimator") from err
    except ValueError as err:  # fallback: not (yet) a ConfigError upstream
        raise ConfigError(proto_path_from_message(str(err)) or "estimator", str(err)) from err
    for name, bound in (
        ("num_pairs", MAX_NUM_PAIRS),
        ("horizon", MAX_HORIZON),
        ("truncation_length", MAX_TRUNCATION_LENGTH),
    ):
        if getattr(config, name) > bound:
            raise ConfigError(f"estimator.{name}", f"estimator.{name} must be <= {bound}")
    return config


def _meta_train_config(spec: job_pb2.JobSpec) -> MetaTrainConfig:
    names = list(spec.tasks) or [DEFAULT_TASK]
    _check_tasks(names)
    kind, optimizer_config = _optimizer_config(spec.optimizer)
    kwargs: dict[str, Any] = {
        "tasks": names,
        "optimizer": kind,
        "optimizer_config": optimizer_config,
        "estimator": _estimator(spec.estimator),
    }
    for proto_name, config_name in (
        ("learning_rate", "outer_learning_rate"),
        ("clip", "clip"),
        ("weight_decay", "outer_weight_decay"),
        ("decay_all", "decay_all"),
    ):
        if spec.outer.HasField(proto_name):
            kwargs[config_name] = getattr(spec.outer, proto_name)
    for name in ("outer_steps", "seed", "checkpoint_interval"):
        kwargs.update(_optional(spec, name))
    try:
        config = MetaTrainConfig(**kwargs)
        resolved = dataclasses.asdict(config.make_optimizer().config)
        config = dataclasses.replace(config, optimizer_config=resolved)
    except ConfigError as err:
        raise ConfigError(proto_path(err.field), str(err)) from err
    except ValueError as err:  # fallback: not (yet) a ConfigError upstream
        raise ConfigError(proto_path_from_message(str(err)) or "spec", str(err)) from err
    if config.outer_steps > MAX_OUTER_STEPS:
        raise ConfigError("outer_steps", f"outer_steps must be <= {MAX_OUTER_STEPS}")
    return config


def _distributed(spec: job_pb2.JobSpec) -> DistributedConfig:
    kwargs: dict[str, Any] = {"worker_resources": dict(spec.worker_resources)}
    for name in (
        "num_workers",
        "gpus_per_worker",
        "max_staleness",
        "estimates_per_step",
        "cpus_per_worker",
    ):
        kwargs.update(_optional(spec, name))
    config = DistributedConfig(**kwargs)
    return dataclasses.replace(config, estimates_per_step=config.batch)


def evaluation_from_proto(
    spec: job_pb2.EvaluationSpec, default_task: str = "", horizon: int | None = None
) -> EvaluationConfig:
    """The EvaluationConfig of ``spec`` (fields ``evaluation.*``); an empty task becomes
    ``default_task`` and unset steps ``EVAL_HORIZON_MULTIPLE x horizon`` when given."""
    task = spec.task or default_task
    if task and task not in tasks.TASKS:
        raise ConfigError(
            "evaluation.task",
            f"evaluation.task: unknown task {task!r}; allowed: {', '.join(sorted(tasks.TASKS))}",
        )
    config = EvaluationConfig(
        task=task,
        seeds=spec.seeds if spec.HasField("seeds") else DEFAULT_EVAL_SEEDS,
        steps=spec.steps if spec.HasField("steps") else None,
        baselines=tuple(spec.baselines),
    )
    if config.steps is None and horizon is not None:
        config = dataclasses.replace(config, steps=config.steps_for(horizon))
    return config


def check_id(value: str, field: str) -> None:
    """ConfigError unless ``value`` is "" or a plausible opaque id (bounded, printable)."""
    if value and (len(value) > MAX_REQUEST_ID or not ID_PATTERN.fullmatch(value)):
        raise ConfigError(field, f"{field} is not a valid id")


def spec_from_proto(spec: job_pb2.JobSpec) -> TrainingSpec:
    """Validate a JobSpec and resolve its defaults; ConfigError with the JobSpec path."""
    config = _meta_train_config(spec)
    distributed = _distributed(spec)
    check_id(spec.warm_start_checkpoint_id, "warm_start_checkpoint_id")
    evaluation = None
    if spec.HasField("evaluation"):
        evaluation = evaluation_from_proto(
            spec.evaluation, config.tasks[0], config.estimator.horizon
        )
    keep = _optional(spec, "keep_checkpoints")
    return TrainingSpec(config, distributed, spec.warm_start_checkpoint_id, evaluation, **keep)


def spec_from_json(text: str) -> TrainingSpec:
    """The TrainingSpec of a stored canonical JSON (``Job.spec_json`` of a training job)."""
    return spec_from_proto(json_format.Parse(text, job_pb2.JobSpec()))


def evaluation_to_proto(config: EvaluationConfig) -> job_pb2.EvaluationSpec:
    spec = job_pb2.EvaluationSpec(
        task=config.task, seeds=config.seeds, baselines=list(config.baselines)
    )
    if config.steps is not None:
        spec.steps = config.steps
    return spec


def spec_to_proto(training: TrainingSpec) -> job_pb2.JobSpec:
    """The JobSpec of a TrainingSpec, every field set (ValueError for task_args, which a
    JobSpec cannot express)."""
    config, dist = training.config, training.distributed
    if config.task_args:
        raise ValueError("MetaTrainConfig.task_args cannot be expressed in a JobSpec")
    spec = job_pb2.JobSpec(
        tasks=list(config.tasks),
        outer_steps=config.outer_steps,
        seed=config.seed,
        checkpoint_interval=config.checkpoint_interval,
        warm_start_checkpoint_id=training.warm_start_checkpoint_id,
    )
    spec.optimizer.kind = config.optimizer
    for name, value in dataclasses.asdict(config.make_optimizer().config).items():
        if name in SWITCHES:
            setattr(spec.optimizer, name, value)
        else:
            spec.optimizer.constants[name] = float(value)
    est = config.estimator
    spec.estimator.CopyFrom(
        job_pb2.EstimatorSpec(
            kind=est.kind,
            sigma=est.sigma,
            truncation_length=est.truncation_length,
            horizon=est.horizon,
            num_pairs=est.num_pairs,
        )
    )
    spec.outer.CopyFrom(
        job_pb2.OuterSpec(
            learning_rate=config.outer_learning_rate,
            clip=config.clip,
            weight_decay=config.outer_weight_decay,
            decay_all=config.decay_all,
        )
    )
    spec.num_workers = dist.num_workers
    if dist.gpus_per_worker is not None:
        spec.gpus_per_worker = dist.gpus_per_worker
    spec.worker_resources.update(dist.worker_resources)
    spec.max_staleness = dist.max_staleness
    spec.estimates_per_step = dist.batch
    spec.cpus_per_worker = dist.cpus_per_worker
    spec.keep_checkpoints = training.keep_checkpoints
    if training.evaluation is not None:
        spec.evaluation.CopyFrom(evaluation_to_proto(training.evaluation))
    return spec
