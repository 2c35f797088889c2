"""Domain records -> protos: Job, JobEvent, Checkpoint, Schedule, metrics, evaluation summaries.

Also the enum mappings both ways (``JobState`` <-> ``job_pb2.JobState`` ...). Evaluation
summaries are made by ``services.cluster.evaluation.evaluation_summary``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from services.api.convert.spec import evaluation_job_of_json, job_spec_of_json
from services.domain import (
    CheckpointRecord,
    EventKind,
    Job,
    JobEvent,
    JobKind,
    JobState,
    OverlapPolicy,
    Schedule,
)
from services.generated.star.v1 import job_pb2, schedule_pb2
from star_core.errors import ConfigError

# JobMetrics fields by kind; any other metric goes to JobMetrics.extra.
FLOAT_METRICS = ("meta_loss", "inner_steps_per_second", "grad_norm", "outer_step_seconds")
COUNT_METRICS = ("dropped_estimates", "stale_dropped", "worker_restarts")
# Points of the mean loss curve an evaluation summary keeps (including step 0 and the last).

KINDS_TO_PROTO = {
    JobKind.TRAINING: job_pb2.JOB_KIND_TRAINING,
    JobKind.EVALUATION: job_pb2.JOB_KIND_EVALUATION,
}
POLICIES_TO_PROTO = {
    OverlapPolicy.SKIP: schedule_pb2.OVERLAP_POLICY_SKIP,
    OverlapPolicy.QUEUE: schedule_pb2.OVERLAP_POLICY_QUEUE,
    OverlapPolicy.CANCEL_PREVIOUS: schedule_pb2.OVERLAP_POLICY_CANCEL_PREVIOUS,
}


def state_to_proto(state: JobState | None) -> job_pb2.JobState:
    """``JobState.RUNNING`` -> ``JOB_STATE_RUNNING`` (None -> JOB_STATE_UNSPECIFIED)."""
    if state is None:
        return job_pb2.JOB_STATE_UNSPECIFIED
    # protoc's stubs type enum fields by their enum class; Value gives the plain int it is
    return cast(job_pb2.JobState, job_pb2.JobState.Value(f"JOB_STATE_{state.value}"))


def state_from_proto(value: int, field: str = "state") -> JobState:
    """The JobState of a proto enum value; ConfigError for UNSPECIFIED or unknown numbers."""
    if value in job_pb2.JobState.values() and value != job_pb2.JOB_STATE_UNSPECIFIED:
        return JobState(job_pb2.JobState.Name(value).removeprefix("JOB_STATE_"))
    raise ConfigError(field, f"{field} must be a job state other than UNSPECIFIED, got {value}")


def policy_from_proto(value: int) -> OverlapPolicy:
    """The OverlapPolicy of a proto value (UNSPECIFIED -> SKIP; unknown: ConfigError)."""
    if value == schedule_pb2.OVERLAP_POLICY_UNSPECIFIED:
        return OverlapPolicy.SKIP
    for policy, number in POLICIES_TO_PROTO.items():
        if number == value:
            return policy
    raise ConfigError("overlap_policy", f"overlap_policy: unknown value {value}")


def timestamp(time: datetime | None) -> Timestamp | None:
    if time is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(time)
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def metrics_to_proto(metrics: Mapping[str, float]) -> job_pb2.JobMetrics:
    """Known names fill their JobMetrics field (counts as integers), the rest goes to extra."""
    out = job_pb2.JobMetrics()
    for name, value in metrics.items():
        if name in FLOAT_METRICS:
            setattr(out, name, float(value))
        elif name in COUNT_METRICS and math.isfinite(value):
            setattr(out, name, int(value))
        else:
            out.extra[name] = float(value)
    return out


def metrics_from_proto(metrics: job_pb2.JobMetrics) -> dict[str, float]:
    """The inverse of :func:`metrics_to_proto` (only the fields that are set)."""
    out = {
        n: float(getattr(metrics, n)) for n in FLOAT_METRICS + COUNT_METRICS if metrics.HasField(n)
    }
    out.update(metrics.extra)
    return out


def summary_to_proto(summary: Mapping[str, Any]) -> job_pb2.EvaluationSummary:
    """A stored evaluation summary (JSON object) as the proto; None means "unset"."""
    data = {k: v for k, v in summary.items() if v is not None}
    data["curve"] = [float("nan") if v is None else v for v in summary.get("curve", [])]
    out = job_pb2.EvaluationSummary()
    fields = {k: v for k, v in data.items() if k != "curve"}
    json_format.ParseDict(fields, out, ignore_unknown_fields=True)
    out.curve.extend(data["curve"])
    return out


def job_to_proto(job: Job) -> job_pb2.Job:
    """The Job proto of a record; its spec (or evaluation_spec) is mapped from spec_json."""
    out = job_pb2.Job(
        job_id=job.job_id,
        state=state_to_proto(job.state),
        step=job.step,
        error=job.error,
        device=job.device,
        create_time=timestamp(job.create_time),
        update_time=timestamp(job.update_time),
        metrics=metrics_to_proto(job.metrics),
        worker_nodes=list(job.worker_nodes),
        kind=KINDS_TO_PROTO[job.kind],
        schedule_id=job.schedule_id,
        request_id=job.request_id,
        evaluation=[summary_to_proto(s) for s in job.evaluation],
        fire_time=timestamp(job.fire_time),
    )
    if job.kind is JobKind.TRAINING:
        out.spec.CopyFrom(job_spec_of_json(job.spec_json))
    else:
        out.evaluation_spec.CopyFrom(evaluation_job_of_json(job.spec_json))
    return out


def checkpoint_to_proto(record: CheckpointRecord) -> job_pb2.Checkpoint:
    return job_pb2.Checkpoint(
        checkpoint_id=record.checkpoint_id,
        job_id=record.job_id,
        step=record.step,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        create_time=timestamp(record.create_time),
    )


def _checkpoint_from_payload(job_id: str, payload: Mapping[str, Any]) -> job_pb2.Checkpoint:
    created = datetime.fromtimestamp(payload["create_time"] / 1e6, UTC)
    return job_pb2.Checkpoint(
        checkpoint_id=payload["checkpoint_id"],
        job_id=job_id,
        step=payload["step"],
        size_bytes=payload["size_bytes"],
        sha256=payload["sha256"],
        create_time=timestamp(created),
    )


def event_to_proto(event: JobEvent) -> job_pb2.JobEvent:
    """The JobEvent proto: the job snapshot, seq, time and the event of its kind."""
    out = job_pb2.JobEvent(job=job_to_proto(event.job), seq=event.seq, time=timestamp(event.time))
    payload = event.payload
    if event.kind is EventKind.STATE_CHANGE:
        out.state_change.CopyFrom(
            job_pb2.StateChange(
                from_state=state_to_proto(payload["from"] and JobState(payload["from"])),
                to_state=state_to_proto(JobState(payload["to"])),
                reason=payload["reason"],
            )
        )
    elif event.kind is EventKind.METRICS:
        out.metrics.CopyFrom(
            job_pb2.MetricsUpdate(
                step=payload["step"], metrics=metrics_to_proto(payload["metrics"])
            )
        )
    elif event.kind is EventKind.CHECKPOINT_WRITTEN:
        out.checkpoint_written.checkpoint.CopyFrom(_checkpoint_from_payload(event.job_id, payload))
    else:
        out.log.CopyFrom(
            job_pb2.LogMessage(
                level=f"LOG_LEVEL_{payload['level']}",
                message=payload["message"],
            )
        )
    return out


def schedule_to_proto(schedule: Schedule) -> schedule_pb2.Schedule:
    out = schedule_pb2.Schedule(
        schedule_id=schedule.schedule_id,
        cron=schedule.cron,
        timezone=schedule.timezone,
        overlap_policy=POLICIES_TO_PROTO[schedule.overlap_policy],
        paused=schedule.paused,
        next_fire_time=timestamp(schedule.next_fire_time),
        last_job_id=schedule.last_job_id,
        warm_start_from_previous=schedule.warm_start_from_previous,
        create_time=timestamp(schedule.create_time),
    )
    out.template.CopyFrom(job_spec_of_json(schedule.template_json))
    return out
