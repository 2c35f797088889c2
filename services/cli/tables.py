"""Plain-text output of the client commands: tables, times, states, evaluation summaries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

# What a table shows for an unset value.
MISSING = "-"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, a header line first."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def format_time(stamp: Any) -> str:
    """A ``google.protobuf.Timestamp`` as ``2030-01-01 03:00:00Z`` (UTC); unset: ``-``."""
    if stamp is None or (stamp.seconds == 0 and stamp.nanos == 0):
        return MISSING
    return datetime.fromtimestamp(stamp.seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def state_name(value: int) -> str:
    """``JOB_STATE_RUNNING`` -> ``RUNNING``."""
    from services.generated.star.v1 import job_pb2

    return job_pb2.JobState.Name(value).removeprefix("JOB_STATE_")


def number(message: Any, field: str, spec: str = ".4g") -> str:
    """A proto3 optional number formatted, or ``-`` when unset."""
    return format(getattr(message, field), spec) if message.HasField(field) else MISSING


def job_progress(job: Any) -> str:
    """``step/outer_steps`` of a training job, the step of an evaluation job."""
    return (
        f"{job.step}/{job.spec.outer_steps}" if job.spec.HasField("outer_steps") else str(job.step)
    )


def job_kind(job: Any) -> str:
    from services.generated.star.v1 import job_pb2

    return job_pb2.JobKind.Name(job.kind).removeprefix("JOB_KIND_").lower()


def summaries_table(summaries: Sequence[Any]) -> str:
    """One line per optimizer of an evaluation (checkpoint and baselines)."""
    rows = [
        (
            s.label,
            s.task,
            s.steps,
            len(s.seeds),
            number(s, "initial_loss"),
            number(s, "final_loss"),
            number(s, "mean_loss"),
            f"{s.diverged}/{len(s.seeds)}",
        )
        for s in summaries
    ]
    return format_table(
        ("OPTIMIZER", "TASK", "STEPS", "SEEDS", "INITIAL", "FINAL", "MEAN", "DIVERGED"), rows
    )
