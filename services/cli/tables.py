"""Plain-text output of the client commands: tables, times, evaluation summaries (the names
of states and kinds come from ``services.client.names``)."""

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


def number(message: Any, field: str, spec: str = ".4g") -> str:
    """A proto3 optional number formatted, or ``-`` when unset."""
    return format(getattr(message, field), spec) if message.HasField(field) else MISSING


def job_progress(job: Any) -> str:
    """``step/outer_steps`` of a training job, the step of an evaluation job."""
    return (
        f"{job.step}/{job.spec.outer_steps}" if job.spec.HasField("outer_steps") else str(job.step)
    )


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
