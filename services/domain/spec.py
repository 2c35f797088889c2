"""The validated specs the service stores and runs, and the bounds of a job spec.

:class:`TrainingSpec` (a ``MetaTrainConfig`` plus :class:`DistributedConfig`, the warm start,
:class:`EvaluationConfig` and ``keep_checkpoints``) and :class:`EvaluationJobSpec`. Both are
validated once, at construction, with every default resolved (the optimizer's constants, the
evaluation's task and steps, ``estimates_per_step``), so what is stored is exactly what runs.

JSON (``to_json`` / ``from_json``; ``to_dict`` / ``from_dict``): what the store keeps. A
training spec's JSON is shaped like the JobSpec (proto/star/v1/job.proto), built on
``MetaTrainConfig.to_dict`` with the other fields beside it::

    {"tasks": [...], "task_args": {}, "optimizer": {...}, "estimator": {...}, "outer": {...},
     "outer_steps": ..., "seed": ..., "checkpoint_interval": ...,            (MetaTrainConfig)
     "num_workers": ..., "worker_resources": {...}, "max_staleness": ...,
     "estimates_per_step": ..., "cpus_per_worker": ..., "gpus_per_worker": ...  (DistributedConfig)
     "warm_start_checkpoint_id": "...", "keep_checkpoints": ..., "evaluation": {...}}

A field that is None (automatic GPUs, no evaluation, an evaluation job's unresolved steps) is
left out. The text is canonical (sorted keys, no spaces): equal specs have equal JSON, which is
what the store's idempotency compares.

ConfigError fields are the JobSpec's paths (``num_workers``, ``worker_resources.<name>``,
``evaluation.steps``, ``optimizer.constants.beta3``). Importing this module does not import
JAX; building a TrainingSpec does (it holds a MetaTrainConfig).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from star_core.errors import ConfigError, check_int, check_number

if TYPE_CHECKING:  # the domain stays importable without JAX
    from star_core.training.config import MetaTrainConfig

# Bounds of a job spec (validated before anything runs).
MAX_WORKERS = 64
MAX_OUTER_STEPS = 1_000_000
MAX_TASKS = 16
MAX_SPEC_BYTES = 64 * 1024  # serialized JobSpec / EvaluateRequest
MAX_CONSTANTS = 16  # entries of optimizer.constants
MAX_NUM_PAIRS = 1024
MAX_TRUNCATION_LENGTH = 100_000
MAX_HORIZON = 1_000_000
MAX_STALENESS = 100
MAX_ESTIMATES_PER_STEP = 1024
MAX_GPUS_PER_WORKER = 8
MAX_CPUS_PER_WORKER = 64
MAX_KEEP_CHECKPOINTS = 1000
MAX_WORKER_RESOURCES = 16
MAX_RESOURCE_NAME = 64
MAX_EVAL_STEPS = 1_000_000
MAX_EVAL_SEEDS = 64
MAX_BASELINES = 8
# Ids a client names (request_id, checkpoint and warm-start ids): at most this long, of ID_CHARS.
MAX_ID_LENGTH = 128
ID_CHARS = re.compile(r"[A-Za-z0-9._:-]+")

# Defaults of DistributedConfig and EvaluationConfig.
DEFAULT_NUM_WORKERS = 2
DEFAULT_MAX_STALENESS = 1
DEFAULT_CPUS_PER_WORKER = 1
# Checkpoints a job keeps on disk (its latest ones; older ones are deleted).
DEFAULT_KEEP_CHECKPOINTS = 5
DEFAULT_EVAL_SEEDS = 3
# An evaluation without explicit steps trains this many times the meta-training horizon T.
EVAL_HORIZON_MULTIPLE = 10
# Baselines of the evaluation protocol: the registered optimizers without meta-parameters, and
# Adam with the learning-rate sweep (the CLI's `adam-tuned`).
TUNED_ADAM = "adam-tuned"
BASELINES = ("adam", "sgdm", "aggmo", TUNED_ADAM)
# The label of the evaluated checkpoint's own summary (baselines carry their names).
CHECKPOINT_LABEL = "checkpoint"
# Ray's built-in resource names; a spec asks for those through num_workers / gpus_per_worker.
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
RESOURCE_NAME = re.compile(r"[A-Za-z0-9_.:/-]+")


def check_id(value: Any, field: str) -> None:
    """ConfigError unless ``value`` is "" or at most MAX_ID_LENGTH characters of ID_CHARS
    (a request_id, or the id of a checkpoint a request names)."""
    ok = isinstance(value, str) and len(value) <= MAX_ID_LENGTH
    if not ok or (value and not ID_CHARS.fullmatch(value)):
        raise ConfigError(
            field, f"{field} must be at most {MAX_ID_LENGTH} characters of [A-Za-z0-9._:-]"
        )


def canonical_json(data: Mapping[str, Any]) -> str:
    """The stored form of a spec dict: sorted keys, no spaces (equal specs, equal text)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _check_keys(data: Any, allowed: set[str], what: str) -> None:
    """ConfigError unless ``data`` is a mapping whose keys are all in ``allowed``."""
    if not isinstance(data, Mapping):
        raise ConfigError("", f"{what} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(str(key) for key in set(data) - allowed)
    if unknown:
        raise ConfigError(
            unknown[0], f"unknown field(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
        )


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How a job spreads over the cluster (the JobSpec fields MetaTrainConfig does not hold).

    num_workers: worker actors, each producing one gradient estimate at a time.
    gpus_per_worker: None = automatic, 0 = CPU workers, > 0 = GPUs per worker (a whole number
      above 1); see :meth:`resolve_gpus` for the exact rule.
    worker_resources: custom Ray resources each worker requests.
    max_staleness: estimates computed from theta at most this many steps old are used.
    estimates_per_step: estimates averaged per outer step; None resolves to num_workers.
    cpus_per_worker: CPUs each worker asks Ray for (and the cores a CPU worker pins itself to).
    """

    num_workers: int = DEFAULT_NUM_WORKERS
    gpus_per_worker: float | None = None
    worker_resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    max_staleness: int = DEFAULT_MAX_STALENESS
    estimates_per_step: int | None = None
    cpus_per_worker: int = DEFAULT_CPUS_PER_WORKER

    def __post_init__(self) -> None:
        check_int("num_workers", self.num_workers, 1, MAX_WORKERS)
        check_int("cpus_per_worker", self.cpus_per_worker, 1, MAX_CPUS_PER_WORKER)
        if self.gpus_per_worker is not None:
            check_number("gpus_per_worker", self.gpus_per_worker, 0, MAX_GPUS_PER_WORKER)
            if self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer():
                raise ConfigError(
                    "gpus_per_worker", "gpus_per_worker above 1 must be a whole number"
                )
            object.__setattr__(self, "gpus_per_worker", float(self.gpus_per_worker))
        if not isinstance(self.worker_resources, Mapping):
            raise ConfigError("worker_resources", "worker_resources must map names to amounts")
        _check_resources(self.worker_resources)
        resources = {name: float(amount) for name, amount in self.worker_resources.items()}
        object.__setattr__(self, "worker_resources", resources)
        check_int("max_staleness", self.max_staleness, 0, MAX_STALENESS)
        if self.estimates_per_step is None:
            object.__setattr__(self, "estimates_per_step", self.num_workers)
        check_int("estimates_per_step", self.estimates_per_step, 1, MAX_ESTIMATES_PER_STEP)

    def __hash__(self) -> int:
        return hash(canonical_json(self.to_dict()))

    @property
    def batch(self) -> int:
        """Estimates averaged per outer step (``estimates_per_step``)."""
        batch = self.estimates_per_step  # None only before __post_init__ resolves it
        return self.num_workers if batch is None else batch

    def to_dict(self) -> dict[str, Any]:
        """The JobSpec's fields of this config (``gpus_per_worker`` left out when automatic)."""
        data = dataclasses.asdict(self)
        if self.gpus_per_worker is None:
            del data["gpus_per_worker"]
        return data

    def resolve_gpus(self, cluster_gpus: float) -> float:
        """GPUs each worker requests on a cluster with ``cluster_gpus`` GPUs in total.

        - explicit 0: 0 (CPU workers);
        - no GPU in the cluster: 0 (CPU fallback, also for an explicit request: Ray would wait
          forever for a GPU that does not exist);
        - explicit > 0: that value;
        - automatic: 1 when there are at least as many GPUs as workers, else the workers share
          them: ``1 / ceil(num_workers / cluster_gpus)`` each (a fraction that packs whole
          workers onto each card, so every worker can be placed).

        ``device`` of the job is "gpu" exactly when the result is > 0.
        """
        if cluster_gpus < 1 or self.gpus_per_worker == 0:
            return 0.0
        if self.gpus_per_worker is not None:
            return float(self.gpus_per_worker)
        if cluster_gpus >= self.num_workers:
            return 1.0
        return 1.0 / math.ceil(self.num_workers / math.floor(cluster_gpus))


def _check_resources(resources: Mapping[str, float]) -> None:
    if len(resources) > MAX_WORKER_RESOURCES:
        raise ConfigError(
            "worker_resources", f"worker_resources: at most {MAX_WORKER_RESOURCES} entries"
        )
    for name, amount in resources.items():
        field = f"worker_resources.{name}"
        if not (
            isinstance(name, str)
            and len(name) <= MAX_RESOURCE_NAME
            and RESOURCE_NAME.fullmatch(name)
        ):
            raise ConfigError(
                "worker_resources",
                f"worker_resources: a name must be 1-{MAX_RESOURCE_NAME} characters of "
                f"[A-Za-z0-9_.:/-], got {name!r}",
            )
        if name in RAY_BUILTIN_RESOURCES:
            raise ConfigError(
                field, f"{field}: {name} is set by num_workers/gpus_per_worker, not here"
            )
        ok = isinstance(amount, int | float) and not isinstance(amount, bool)
        if not (ok and math.isfinite(amount) and amount > 0):
            raise ConfigError(field, f"{field} must be a finite number > 0, got {amount!r}")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """The evaluation protocol's settings. task: a registered task name; "" = the
    meta-training (or checkpoint's) first task. steps None = EVAL_HORIZON_MULTIPLE x the
    meta-training horizon. A TrainingSpec resolves both; an evaluation job's are resolved from
    its checkpoint when it runs."""

    task: str = ""
    steps: int | None = None
    seeds: int = DEFAULT_EVAL_SEEDS
    baselines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.task, str):
            raise ConfigError("evaluation.task", "evaluation.task must be a task name")
        if self.task:
            from star_core import tasks  # the registry (imports JAX): only when a task is named

            if self.task not in tasks.TASKS:
                raise ConfigError(
                    "evaluation.task",
                    f"evaluation.task: unknown task {self.task!r};"
                    f" allowed: {', '.join(sorted(tasks.TASKS))}",
                )
        if self.steps is not None:
            check_int("evaluation.steps", self.steps, 1, MAX_EVAL_STEPS)
        check_int("evaluation.seeds", self.seeds, 1, MAX_EVAL_SEEDS)
        if isinstance(self.baselines, str) or not isinstance(self.baselines, list | tuple):
            raise ConfigError("evaluation.baselines", "evaluation.baselines must be a list")
        object.__setattr__(self, "baselines", tuple(self.baselines))
        if len(self.baselines) > MAX_BASELINES:
            raise ConfigError("evaluation.baselines", f"at most {MAX_BASELINES} baselines")
        for index, name in enumerate(self.baselines):
            field = f"evaluation.baselines[{index}]"
            if name not in BASELINES:
                raise ConfigError(
                    field, f"{field} must be one of {', '.join(BASELINES)}; got {name!r}"
                )
            if name in self.baselines[:index]:
                raise ConfigError(field, f"{field}: {name!r} is repeated")

    def steps_for(self, horizon: int) -> int:
        """The inner steps per run: ``steps``, else EVAL_HORIZON_MULTIPLE x ``horizon``."""
        return self.steps if self.steps is not None else EVAL_HORIZON_MULTIPLE * horizon

    def resolved(self, task: str, horizon: int) -> EvaluationConfig:
        """This config with an empty task set to ``task`` and unset steps to their default."""
        return dataclasses.replace(self, task=self.task or task, steps=self.steps_for(horizon))

    def to_dict(self) -> dict[str, Any]:
        """The JobSpec.evaluation fields (``steps`` left out while unset)."""
        data = {"task": self.task, "seeds": self.seeds, "baselines": list(self.baselines)}
        return data if self.steps is None else {**data, "steps": self.steps}

    @classmethod
    def from_dict(cls, data: Any) -> EvaluationConfig:
        """The inverse of :meth:`to_dict` (missing fields take the defaults)."""
        try:
            _check_keys(data, _field_names(cls), "evaluation")
        except ConfigError as err:
            raise err.within("evaluation") from err
        return cls(**dict(data))


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """A validated meta-training JobSpec: what the runner needs to run the job.

    warm_start_checkpoint_id: "" = fresh initialization. evaluation: None = no final
    evaluation (else resolved: its task and steps are set). keep_checkpoints: the job's latest
    checkpoints kept on disk (older ones are deleted, except those another job or a schedule
    uses as its warm start). Bounds: the MAX_* values of this module.
    """

    config: MetaTrainConfig
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    warm_start_checkpoint_id: str = ""
    evaluation: EvaluationConfig | None = None
    keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS

    def __post_init__(self) -> None:
        config = self.config
        if config.outer_steps > MAX_OUTER_STEPS:
            raise ConfigError("outer_steps", f"outer_steps must be <= {MAX_OUTER_STEPS}")
        for name, bound in (
            ("num_pairs", MAX_NUM_PAIRS),
            ("horizon", MAX_HORIZON),
            ("truncation_length", MAX_TRUNCATION_LENGTH),
        ):
            if getattr(config.estimator, name) > bound:
                raise ConfigError(f"estimator.{name}", f"estimator.{name} must be <= {bound}")
        if not isinstance(self.distributed, DistributedConfig):
            raise ConfigError("", "distributed must be a DistributedConfig")
        check_id(self.warm_start_checkpoint_id, "warm_start_checkpoint_id")
        if self.evaluation is not None:
            resolved = self.evaluation.resolved(config.tasks[0], config.estimator.horizon)
            object.__setattr__(self, "evaluation", resolved)
        check_int("keep_checkpoints", self.keep_checkpoints, 1, MAX_KEEP_CHECKPOINTS)

    def to_dict(self) -> dict[str, Any]:
        """The JobSpec-shaped dict of the module docstring."""
        data = {
            **self.config.to_dict(),
            **self.distributed.to_dict(),
            "warm_start_checkpoint_id": self.warm_start_checkpoint_id,
            "keep_checkpoints": self.keep_checkpoints,
        }
        if self.evaluation is not None:
            data["evaluation"] = self.evaluation.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> TrainingSpec:
        """Validate a JobSpec-shaped dict (missing fields take the defaults); ConfigError with
        the JobSpec path of the first bad field."""
        from star_core.training.config import MetaTrainConfig

        config_fields = _field_names(MetaTrainConfig)
        distributed_fields = _field_names(DistributedConfig)
        own = {"warm_start_checkpoint_id", "keep_checkpoints", "evaluation"}
        _check_keys(data, config_fields | distributed_fields | own, "spec")
        _check_sizes(data)
        config = MetaTrainConfig.from_dict({k: v for k, v in data.items() if k in config_fields})
        distributed = DistributedConfig(
            **{k: v for k, v in data.items() if k in distributed_fields}
        )
        evaluation = data.get("evaluation")
        return cls(
            config,
            distributed,
            data.get("warm_start_checkpoint_id", ""),
            None if evaluation is None else EvaluationConfig.from_dict(evaluation),
            data.get("keep_checkpoints", DEFAULT_KEEP_CHECKPOINTS),
        )

    def to_json(self) -> str:
        """The canonical JSON the store keeps."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> TrainingSpec:
        """The spec of a stored JSON (``Job.spec_json`` of a training job, a template)."""
        return cls.from_dict(json.loads(text))


def _check_sizes(data: Mapping[str, Any]) -> None:
    """The bounds on the number of tasks and constants, checked before their names are."""
    names = data.get("tasks")
    if isinstance(names, list | tuple) and len(names) > MAX_TASKS:
        raise ConfigError("tasks", f"tasks: at most {MAX_TASKS} names, got {len(names)}")
    optimizer = data.get("optimizer")
    constants = optimizer.get("constants") if isinstance(optimizer, Mapping) else None
    if isinstance(constants, Mapping) and len(constants) > MAX_CONSTANTS:
        raise ConfigError("optimizer.constants", f"at most {MAX_CONSTANTS} constants")


@dataclasses.dataclass(frozen=True)
class EvaluationJobSpec:
    """A validated Evaluate request: the checkpoint and the protocol's settings (its task and
    steps may stay unresolved: the runner takes them from the checkpoint's config)."""

    checkpoint_id: str
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        if not self.checkpoint_id:
            raise ConfigError("checkpoint_id", "checkpoint_id is required")
        check_id(self.checkpoint_id, "checkpoint_id")

    def to_dict(self) -> dict[str, Any]:
        """The JobSpec-shaped dict: ``{"checkpoint_id", "evaluation": {...}}``."""
        return {"checkpoint_id": self.checkpoint_id, "evaluation": self.evaluation.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> EvaluationJobSpec:
        _check_keys(data, {"checkpoint_id", "evaluation"}, "evaluation job spec")
        evaluation = EvaluationConfig.from_dict(data.get("evaluation") or {})
        return cls(data.get("checkpoint_id", ""), evaluation)

    def to_json(self) -> str:
        """The canonical JSON the store keeps."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> EvaluationJobSpec:
        """The spec of a stored evaluation job's JSON."""
        return cls.from_dict(json.loads(text))
