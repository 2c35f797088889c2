"""Job states and their allowed transitions, the records the store keeps, and typed errors.

See the package docstring (``services.domain``) for the transition table and its reasons.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

# What a job's workers run on (Job.device; "" until placed).
DEVICES = ("cpu", "gpu")


class JobState(enum.Enum):
    """The state of a job; see the module docstring for the allowed changes."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        """Whether the job is finished (it never changes state again)."""
        return self in TERMINAL_STATES

    def can_become(self, other: JobState) -> bool:
        """Whether ``self -> other`` is in :data:`TRANSITIONS`."""
        return other in TRANSITIONS[self]


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
# Jobs that hold (or wait for) cluster resources; what --max-jobs counts.
ACTIVE_STATES = frozenset({JobState.PENDING, JobState.RUNNING, JobState.CANCELLING})
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.CANCELLING, JobState.SUCCEEDED, JobState.FAILED, JobState.PENDING}
    ),
    JobState.CANCELLING: frozenset({JobState.CANCELLED, JobState.SUCCEEDED, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class JobKind(enum.Enum):
    TRAINING = "training"  # meta-training; spec_json is a TrainingSpec's JSON
    EVALUATION = "evaluation"  # the evaluation protocol; spec_json: an EvaluationJobSpec's


class OverlapPolicy(enum.Enum):
    """What a schedule's firing does while its previous job is still active."""

    SKIP = "skip"
    QUEUE = "queue"
    CANCEL_PREVIOUS = "cancel_previous"


class EventKind(enum.Enum):
    """What a job event records; the payload (a JSON object) depends on it:

    - STATE_CHANGE: ``{"from": state name or null (creation), "to": state name, "reason": str}``
    - METRICS: ``{"step": int, "metrics": {name: float}}``
    - CHECKPOINT_WRITTEN: ``{"checkpoint_id", "step", "size_bytes", "sha256", "create_time"}``
      (create_time in microseconds since the epoch)
    - LOG: ``{"level": "INFO" | "WARNING" | "ERROR", "message": str}``
    """

    STATE_CHANGE = "state_change"
    METRICS = "metrics"
    CHECKPOINT_WRITTEN = "checkpoint_written"
    LOG = "log"


LOG_LEVELS = ("INFO", "WARNING", "ERROR")


class DomainError(Exception):
    """A request the service understood but cannot do; mapped to a gRPC status code."""


class NotFound(DomainError):
    """An unknown id (NOT_FOUND)."""


class AlreadyExists(DomainError):
    """A request_id reused with a different request (ALREADY_EXISTS)."""


class FailedPrecondition(DomainError):
    """A change the current state does not allow (FAILED_PRECONDITION)."""


class ResourceExhausted(DomainError):
    """Too many active jobs or open streams (RESOURCE_EXHAUSTED)."""


def check_transition(job_id: str, current: JobState, target: JobState) -> None:
    """FailedPrecondition unless ``current -> target`` is allowed."""
    if not current.can_become(target):
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none (terminal)"
        raise FailedPrecondition(
            f"job {job_id} is {current.value}: cannot become {target.value} (allowed: {allowed})"
        )


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as the store records it. Times are timezone-aware UTC datetimes.

    spec_json: the canonical JSON of the job's spec (``TrainingSpec.to_json`` for TRAINING,
    ``EvaluationJobSpec.to_json`` for EVALUATION), every default filled in. metrics: the latest
    metrics by name (cumulative counters and last-step values, merged over progress updates).
    evaluation: evaluation summaries (JSON objects with the EvaluationSummary proto's fields).
    last_seq: the seq of the job's latest event. request_id / schedule_id: "" when none.
    """

    job_id: str
    kind: JobKind
    state: JobState
    spec_json: str
    step: int
    error: str
    device: str
    worker_nodes: tuple[str, ...]
    metrics: Mapping[str, float]
    evaluation: tuple[Mapping[str, Any], ...]
    request_id: str
    schedule_id: str
    fire_time: datetime | None
    create_time: datetime
    update_time: datetime
    last_seq: int


@dataclasses.dataclass(frozen=True)
class JobEvent:
    """One event of a job: ``job`` is the job as it was right after the event."""

    job_id: str
    seq: int
    kind: EventKind
    step: int
    payload: Mapping[str, Any]
    time: datetime
    job: Job


@dataclasses.dataclass(frozen=True)
class CheckpointRecord:
    """An indexed checkpoint file; ``file_name`` is relative to the checkpoint root."""

    checkpoint_id: str
    job_id: str
    step: int
    file_name: str
    size_bytes: int
    sha256: str
    create_time: datetime


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A cron schedule. template_json: the canonical JSON of its template (a TrainingSpec's).
    next_fire_time: None while paused. last_job_id: "" before the first job."""

    schedule_id: str
    cron: str
    timezone: str
    template_json: str
    overlap_policy: OverlapPolicy
    paused: bool
    next_fire_time: datetime | None
    last_job_id: str
    warm_start_from_previous: bool
    request_id: str
    create_time: datetime
    update_time: datetime


@dataclasses.dataclass(frozen=True)
class Firing:
    """What one firing of a schedule did: job_id is "" when it created no job (outcome).
    "queued": it waits for the schedule's previous job to end (``services.schedule``)."""

    schedule_id: str
    fire_time: datetime
    job_id: str
    outcome: str  # "created", "skipped" or "queued"
