"""Request protos -> validated domain values, with ConfigError fields that are paths in the
request (``spec.estimator.sigma``, ``request_id``, ``states[1]``, ``template.tasks[0]``).

What is left to the caller: whether ids exist (NotFound from the store), whether a warm-start
checkpoint fits the optimizer, and the cron expression and time zone of a schedule (parsed by
``services.schedule``).
"""

from __future__ import annotations

from typing import NamedTuple

from services.api.convert.records import policy_from_proto, state_from_proto
from services.api.convert.spec import proto_dict, spec_from_proto
from services.domain import (
    MAX_SPEC_BYTES,
    EvaluationJobSpec,
    JobState,
    OverlapPolicy,
    TrainingSpec,
    check_id,
)
from services.generated.star.v1 import job_pb2, schedule_pb2, service_pb2
from star_core.errors import ConfigError

# Bounds of the schedule fields this module checks (the cron syntax is checked elsewhere).
MAX_CRON_LENGTH = 256
MAX_TIMEZONE_LENGTH = 64


class Submission(NamedTuple):
    """A validated SubmitJob: the spec and its canonical JSON (``spec.to_json()``, what the
    store keeps)."""

    spec: TrainingSpec
    spec_json: str
    request_id: str


class EvaluationSubmission(NamedTuple):
    spec: EvaluationJobSpec
    spec_json: str
    request_id: str


class ScheduleSubmission(NamedTuple):
    """A validated CreateSchedule; ``cron``/``timezone`` still need parsing by the scheduler."""

    cron: str
    timezone: str
    template: TrainingSpec
    template_json: str
    overlap_policy: OverlapPolicy
    paused: bool
    warm_start_from_previous: bool
    request_id: str


def _check_size(message, field: str) -> None:
    size = message.ByteSize()
    if size > MAX_SPEC_BYTES:
        raise ConfigError(field, f"{field} is {size} bytes; at most {MAX_SPEC_BYTES} allowed")


def resolve_spec(spec: job_pb2.JobSpec, field: str) -> tuple[TrainingSpec, str]:
    """(validated spec, its canonical JSON); errors nested under field."""
    _check_size(spec, field)
    try:
        training = spec_from_proto(spec)
    except ConfigError as err:
        raise err.within(field) from err
    return training, training.to_json()


def submit_request(request: service_pb2.SubmitJobRequest) -> Submission:
    """Validate a SubmitJobRequest (fields ``spec.*`` and ``request_id``)."""
    check_id(request.request_id, "request_id")
    training, spec_json = resolve_spec(request.spec, "spec")
    return Submission(training, spec_json, request.request_id)


def evaluate_request(request: service_pb2.EvaluateRequest) -> EvaluationSubmission:
    """Validate an EvaluateRequest (fields ``checkpoint_id``, ``task``, ``steps``, ``seeds``,
    ``baselines[i]``, ``request_id``). An empty task and unset steps stay unresolved: the
    runner fills them from the checkpoint's config."""
    check_id(request.request_id, "request_id")
    _check_size(request, "request")
    fields = proto_dict(request)
    settings = {k: v for k, v in fields.items() if k in ("task", "steps", "seeds", "baselines")}
    data = {"checkpoint_id": request.checkpoint_id, "evaluation": settings}
    try:
        spec = EvaluationJobSpec.from_dict(data)
    except ConfigError as err:
        raise ConfigError(err.field.removeprefix("evaluation."), str(err)) from err
    return EvaluationSubmission(spec, spec.to_json(), request.request_id)


def states_filter(request: service_pb2.ListJobsRequest) -> list[JobState]:
    """The state filter of a ListJobsRequest (ConfigError ``states[i]`` for UNSPECIFIED)."""
    return [state_from_proto(s, f"states[{i}]") for i, s in enumerate(request.states)]


def schedule_request(request: service_pb2.CreateScheduleRequest) -> ScheduleSubmission:
    """Validate a CreateScheduleRequest (fields ``schedule.template.*``, ``schedule.cron``,
    ``schedule.timezone``, ``schedule.overlap_policy``, ``request_id``)."""
    check_id(request.request_id, "request_id")
    schedule: schedule_pb2.Schedule = request.schedule
    cron = schedule.cron.strip()
    if not cron or len(cron) > MAX_CRON_LENGTH:
        raise ConfigError(
            "schedule.cron",
            f"schedule.cron must be a cron expression (1-{MAX_CRON_LENGTH} characters)",
        )
    if len(schedule.timezone) > MAX_TIMEZONE_LENGTH:
        raise ConfigError("schedule.timezone", "schedule.timezone is too long")
    try:
        policy = policy_from_proto(schedule.overlap_policy)
    except ConfigError as err:
        raise err.within("schedule") from err
    template, template_json = resolve_spec(schedule.template, "schedule.template")
    return ScheduleSubmission(
        cron,
        schedule.timezone or "UTC",
        template,
        template_json,
        policy,
        schedule.paused,
        schedule.warm_start_from_previous,
        request.request_id,
    )
