"""The service's domain: job states and their transitions, records, errors and spec bounds.

Everything here is plain Python (no gRPC, no SQL, no Ray): the store persists these records,
``services.api.convert`` maps them to and from the protos, the runner reads them.

Job states (:class:`JobState`) move only along :data:`TRANSITIONS`::

    PENDING    -> RUNNING | CANCELLED | FAILED
    RUNNING    -> CANCELLING | SUCCEEDED | FAILED | PENDING
    CANCELLING -> CANCELLED | SUCCEEDED | FAILED
    SUCCEEDED, FAILED, CANCELLED: terminal, no way out

- PENDING -> CANCELLED: nothing runs yet, so a cancel needs no checkpoint. A runner that was
  about to start the job then finds PENDING -> RUNNING refused and starts nothing.
- RUNNING -> PENDING: requeue. The service restarted (or lost the learner) and will resume the
  job from its latest checkpoint; the job's step is rewound to that checkpoint's step.
- RUNNING -> CANCELLED is not allowed: a cancel goes through CANCELLING, where the job writes a
  checkpoint before it stops ("cancel requested" is not "cancelled").
- CANCELLING -> SUCCEEDED: the last outer step finished before the runner saw the request.
- CANCELLING -> FAILED: the checkpoint could not be written, or the job died meanwhile.
- No self-transitions: RUNNING -> RUNNING is refused like any change not in the table.

Errors: :class:`NotFound`, :class:`AlreadyExists`, :class:`FailedPrecondition` and
:class:`ResourceExhausted` are raised by the store; invalid input raises
``star_core.errors.ConfigError`` (its ``.field`` names the offending field). The API layer maps
them to gRPC status codes in one place; anything else is an internal error.

The validated specs live in ``spec``: :class:`TrainingSpec` (a ``MetaTrainConfig`` with
:class:`DistributedConfig`, the warm start, :class:`EvaluationConfig`) and
:class:`EvaluationJobSpec`, with every default resolved and a canonical JSON form
(``to_json`` / ``from_json``) that the store keeps; also the bounds of a spec (``MAX_WORKERS``,
``MAX_SPEC_BYTES``, ...) and the rule for ids a client names (:func:`check_id`). Their
``ConfigError`` fields are the JobSpec proto's paths (``num_workers``,
``worker_resources.<name>``, ``evaluation.steps``, ``optimizer.constants.beta3``).

Import everything from this package: ``from services.domain import JobState, NotFound``.
"""

from services.domain.records import (
    ACTIVE_STATES,
    DEVICES,
    LOG_LEVELS,
    TERMINAL_STATES,
    TRANSITIONS,
    AlreadyExists,
    CheckpointRecord,
    DomainError,
    EventKind,
    FailedPrecondition,
    Firing,
    Job,
    JobEvent,
    JobKind,
    JobState,
    NotFound,
    OverlapPolicy,
    ResourceExhausted,
    Schedule,
    check_transition,
)
from services.domain.spec import (
    BASELINES,
    CHECKPOINT_LABEL,
    DEFAULT_CPUS_PER_WORKER,
    DEFAULT_EVAL_SEEDS,
    DEFAULT_KEEP_CHECKPOINTS,
    DEFAULT_MAX_STALENESS,
    DEFAULT_NUM_WORKERS,
    EVAL_HORIZON_MULTIPLE,
    MAX_BASELINES,
    MAX_CONSTANTS,
    MAX_CPUS_PER_WORKER,
    MAX_ESTIMATES_PER_STEP,
    MAX_EVAL_SEEDS,
    MAX_EVAL_STEPS,
    MAX_GPUS_PER_WORKER,
    MAX_HORIZON,
    MAX_ID_LENGTH,
    MAX_KEEP_CHECKPOINTS,
    MAX_NUM_PAIRS,
    MAX_OUTER_STEPS,
    MAX_RESOURCE_NAME,
    MAX_SPEC_BYTES,
    MAX_STALENESS,
    MAX_TASKS,
    MAX_TRUNCATION_LENGTH,
    MAX_WORKER_RESOURCES,
    MAX_WORKERS,
    RAY_BUILTIN_RESOURCES,
    TUNED_ADAM,
    DistributedConfig,
    EvaluationConfig,
    EvaluationJobSpec,
    TrainingSpec,
    canonical_json,
    check_id,
)

__all__ = [
    "ACTIVE_STATES",
    "AlreadyExists",
    "BASELINES",
    "CHECKPOINT_LABEL",
    "CheckpointRecord",
    "DEFAULT_CPUS_PER_WORKER",
    "DEFAULT_EVAL_SEEDS",
    "DEFAULT_KEEP_CHECKPOINTS",
    "DEFAULT_MAX_STALENESS",
    "DEFAULT_NUM_WORKERS",
    "DEVICES",
    "DistributedConfig",
    "DomainError",
    "EVAL_HORIZON_MULTIPLE",
    "EvaluationConfig",
    "EvaluationJobSpec",
    "EventKind",
    "FailedPrecondition",
    "Firing",
    "Job",
    "JobEvent",
    "JobKind",
    "JobState",
    "LOG_LEVELS",
    "MAX_BASELINES",
    "MAX_CONSTANTS",
    "MAX_CPUS_PER_WORKER",
    "MAX_ESTIMATES_PER_STEP",
    "MAX_EVAL_SEEDS",
    "MAX_EVAL_STEPS",
    "MAX_GPUS_PER_WORKER",
    "MAX_HORIZON",
    "MAX_ID_LENGTH",
    "MAX_KEEP_CHECKPOINTS",
    "MAX_NUM_PAIRS",
    "MAX_OUTER_STEPS",
    "MAX_RESOURCE_NAME",
    "MAX_SPEC_BYTES",
    "MAX_STALENESS",
    "MAX_TASKS",
    "MAX_TRUNCATION_LENGTH",
    "MAX_WORKERS",
    "MAX_WORKER_RESOURCES",
    "NotFound",
    "OverlapPolicy",
    "RAY_BUILTIN_RESOURCES",
    "ResourceExhausted",
    "Schedule",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "TUNED_ADAM",
    "TrainingSpec",
    "canonical_json",
    "check_id",
    "check_transition",
]
