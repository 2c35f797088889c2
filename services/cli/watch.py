"""``star watch JOB``: follow a job live until it ends.

A progress bar shows the outer step of ``outer_steps``, the meta-loss and the inner steps per
second; state changes, checkpoints and the job's log (warnings and errors: dropped estimates,
worker restarts, fallback to CPU workers) are printed above it. A job that already ended replays
its events. Exit 0 when the job SUCCEEDED; 1 with the reason when it FAILED or was CANCELLED.

A cut stream is reopened from the last event seen (``StarClient.watch``), so no event is shown
twice or lost; after the client's reconnections fail the command fails (exit 1).
"""

from __future__ import annotations

import argparse
from typing import Any

from services.cli.client import SERVER_ERROR_EXIT, ClientError, add_connection_flags, connect
from services.client import StarClient


def register(subparsers) -> None:
    parser = subparsers.add_parser("watch", help="follow a job: progress, log, final state")
    parser.add_argument("job_id", metavar="JOB")
    add_connection_flags(parser)
    parser.set_defaults(handler=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    with connect(args) as client:
        return watch_to_end(client, args.job_id)


def watch_to_end(client: StarClient, job_id: str) -> int:
    """:func:`watch_job`, then a line saying the job succeeded; the exit code (0)."""
    job = watch_job(client, job_id)
    print(f"{job.job_id} succeeded at step {job.step}")
    return 0


class ProgressView:
    """A tqdm bar of a job's outer steps, with its events printed above it."""

    def __init__(self, job: Any):
        from tqdm import tqdm

        total = job.spec.outer_steps if job.spec.HasField("outer_steps") else None
        self._bar = tqdm(
            total=total, initial=job.step, desc=job.job_id, unit="step", dynamic_ncols=True
        )

    def show(self, event: Any) -> None:
        from services.client.names import log_level_name, state_name

        kind = event.WhichOneof("event")
        self._bar.n = event.metrics.step if kind == "metrics" else event.job.step
        if kind == "metrics":
            metrics = event.metrics.metrics
            parts = []
            if metrics.HasField("meta_loss"):
                parts.append(f"meta-loss {metrics.meta_loss:.4f}")
            if metrics.HasField("inner_steps_per_second"):
                parts.append(f"{metrics.inner_steps_per_second:.0f} inner steps/s")
            self._bar.set_postfix_str(", ".join(parts), refresh=False)
        elif kind == "log":
            level = log_level_name(event.log.level)
            self._bar.write(f"{level.lower()}: {event.log.message}")
        elif kind == "state_change":
            change = event.state_change
            reason = f" ({change.reason})" if change.reason else ""
            self._bar.write(f"{state_name(change.to_state)}{reason}")
        elif kind == "checkpoint_written":
            checkpoint = event.checkpoint_written.checkpoint
            self._bar.write(f"checkpoint {checkpoint.checkpoint_id} at step {checkpoint.step}")
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def watch_job(client: StarClient, job_id: str) -> Any:
    """Show the job's progress until it ends; the final Job if it SUCCEEDED, else ClientError
    (exit 1) with the reason."""
    from services.client.names import state_name

    view = ProgressView(client.get_job(job_id))
    last = None
    try:
        for last in client.watch(job_id):
            view.show(last)
    finally:
        view.close()
    if last is None:  # cannot be: StarClient.watch ends with the job's last event or raises
        raise ClientError(f"job {job_id}: the watch ended without an event", SERVER_ERROR_EXIT)
    job, state, reason = (
        client.get_job(job_id),
        state_name(last.state_change.to_state),
        last.state_change.reason,
    )
    if state == "FAILED":
        raise ClientError(
            f"job {job_id} failed at step {job.step}: {job.error or reason}", SERVER_ERROR_EXIT
        )
    if state == "CANCELLED":
        because = f": {reason}" if reason else ""
        raise ClientError(
            f"job {job_id} was cancelled at step {job.step}{because}", SERVER_ERROR_EXIT
        )
    return job
