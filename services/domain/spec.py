"""Spec-level settings that ``MetaTrainConfig`` does not hold, and the bounds of a job spec.

:class:`DistributedConfig` (workers, GPUs, staleness, batch), :class:`EvaluationConfig`, and the
validated specs the runner consumes (:class:`TrainingSpec`, :class:`EvaluationJobSpec`). Their
``ConfigError`` fields are the JobSpec proto's paths (``num_workers``,
``worker_resources.<name>``, ``evaluation.steps``). Importing this module does not import JAX.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from star_core.errors import ConfigError

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
MAX_REQUEST_ID = 128

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
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+")


def _check_int(field: str, value: Any, low: int, high: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise ConfigError(field, f"{field} must be an integer in [{low}, {high}], got {value!r}")


def _check_number(field: str, value: Any, low: float, high: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and low <= value <= high):
        raise ConfigError(
            field, f"{field} must be a finite number in [{low}, {high}], got {value!r}"
        )


def check_request_id(request_id: str, field: str = "request_id") -> None:
    """ConfigError unless ``request_id`` is "" or <= 128 characters of [A-Za-z0-9._:-]."""
    if request_id and (len(request_id) > MAX_REQUEST_ID or not REQUEST_ID.fullmatch(request_id)):
        raise ConfigError(
            field, f"{field} must be at most {MAX_REQUEST_ID} characters of [A-Za-z0-9._:-]"
        )


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How a job spreads over the cluster (the JobSpec fields MetaTrainConfig does not hold).

    num_workers: worker actors, each producing one gradient estimate at a time.
    gpus_per_worker: None = automatic, 0 = CPU workers, > 0 = GPUs per worker (a whole number
      above 1); see :meth:`resolve_gpus` for the exact rule.
    worker_resources: custom Ray resources each worker requests.
    max_staleness: estimates computed from theta at most this many steps old are used.
    estimates_per_step: estimates averaged per outer step; None = num_workers.
    cpus_per_worker: CPUs each worker asks Ray for (and the cores a CPU worker pins itself to).
    """

    num_workers: int = DEFAULT_NUM_WORKERS
    gpus_per_worker: float | None = None
    worker_resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    max_staleness: int = DEFAULT_MAX_STALENESS
    estimates_per_step: int | None = None
    cpus_per_worker: int = DEFAULT_CPUS_PER_WORKER

    def __post_init__(self) -> None:
        _check_int("num_workers", self.num_workers, 1, MAX_WORKERS)
        _check_int("cpus_per_worker", self.cpus_per_worker, 1, MAX_CPUS_PER_WORKER)
        if self.gpus_per_worker is not None:
            _check_number("gpus_per_worker", self.gpus_per_worker, 0, MAX_GPUS_PER_WORKER)
            if self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer():
                raise ConfigError(
                    "gpus_per_worker", "gpus_per_worker above 1 must be a whole number"
                )
        object.__setattr__(self, "worker_resources", dict(self.worker_resources))
        _check_resources(self.worker_resources)
        _check_int("max_staleness", self.max_staleness, 0, MAX_STALENESS)
        if self.estimates_per_step is not None:
            _check_int("estimates_per_step", self.estimates_per_step, 1, MAX_ESTIMATES_PER_STEP)

    @property
    def batch(self) -> int:
        """Estimates averaged per outer step (``estimates_per_step``, default ``num_workers``)."""
        return self.num_workers if self.estimates_per_step is None else self.estimates_per_step

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
    """The evaluation protocol's settings. task "" = the meta-training (or checkpoint's)
    first task; steps None = EVAL_HORIZON_MULTIPLE x the meta-training horizon.
    Task names are checked against the registry by ``services.api.convert``."""

    task: str = ""
    steps: int | None = None
    seeds: int = DEFAULT_EVAL_SEEDS
    baselines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.task, str):
            raise ConfigError("evaluation.task", "evaluation.task must be a task name")
        if self.steps is not None:
            _check_int("evaluation.steps", self.steps, 1, MAX_EVAL_STEPS)
        _check_int("evaluation.seeds", self.seeds, 1, MAX_EVAL_SEEDS)
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


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """A validated meta-training JobSpec: what the runner needs to run the job.

    warm_start_checkpoint_id: "" = fresh initialization. evaluation: None = no final evaluation.
    keep_checkpoints: the job's latest checkpoints kept on disk (older ones are deleted, except
    those another job or a schedule uses as its warm start).
    Build it from a proto or stored JSON with ``services.api.convert.spec_from_proto`` /
    ``spec_from_json``.
    """

    config: MetaTrainConfig
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    warm_start_checkpoint_id: str = ""
    evaluation: EvaluationConfig | None = None
    keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS

    def __post_init__(self) -> None:
        _check_int("keep_checkpoints", self.keep_checkpoints, 1, MAX_KEEP_CHECKPOINTS)


@dataclasses.dataclass(frozen=True)
class EvaluationJobSpec:
    """A validated Evaluate request: the checkpoint and the protocol's settings."""

    checkpoint_id: str
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
