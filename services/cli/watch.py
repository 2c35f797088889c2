"""``star watch JOB``: follow a job live until it ends.

A progress bar shows the outer step of ``outer_steps``, the meta-loss and the inner steps per
second; state changes, checkpoints and the job's log (warnings and errors: dropped estimates,
worker restarts, fallback to CPU workers) are printed above it. A job that already ended replays
its events. Exit 0 when the job SUCCEEDED; 1 with the reason when it FAILED or was CANCELLED.

A cut stream is reopened from the last event seen (``WatchJobRequest.after_seq``), so no event
is shown twice or lost; a stream that ends without the terminal event counts as cut. After
:data:`RECONNECT_ATTEMPTS` reopenings in a row without a new event the command fails.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from services.cli.client import SERVER_ERROR_EXIT, ClientError, add_connection_flags, connect

logger = logging.getLogger(__name__)

# Reopenings of a cut stream in a row (no new event in between) before giving up; with the
# backoff below that is about 40 s, time for a restarted server to come back.
RECONNECT_ATTEMPTS = 8
# Seconds before the first reopening; doubles each time, up to MAX_BACKOFF_S.
RECONNECT_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0


def register(subparsers) -> None:
    parser = subparsers.add_parser("watch", help="follow a job: progress, log, final state")
    parser.add_argument("job_id", metavar="JOB")
    add_connection_flags(parser)
    parser.set_defaults(handler=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    with connect(args) as stub:
        return watch_to_end(stub, args.job_id)


def watch_to_end(stub: Any, job_id: str) -> int:
    """:func:`watch_job`, then a line saying the job succeeded; the exit code (0)."""
    job = watch_job(stub, job_id)
    print(f"{job.job_id} succeeded at step {job.step}")
    return 0


def is_terminal(event: Any) -> bool:
    """Whether ``event`` moved its job to SUCCEEDED, FAILED or CANCELLED (the stream's last)."""
    from services.generated.star.v1 import job_pb2

    terminal = (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)
    return event.HasField("state_change") and event.state_change.to_state in terminal


def follow(
    stub: Any, job_id: str, after_seq: int = 0, sleep: Callable[[float], None] = time.sleep
) -> Iterator[Any]:
    """The job's events after ``after_seq`` in order, up to and including the terminal one,
    reopening the stream after a cut. A non-transient error is raised as it is."""
    import grpc

    from services.cli.client import is_transient
    from services.generated.star.v1 import service_pb2

    failures = 0
    while True:
        call = stub.WatchJob(service_pb2.WatchJobRequest(job_id=job_id, after_seq=after_seq))
        try:
            for event in call:
                if event.seq <= after_seq:
                    continue
                after_seq, failures = event.seq, 0
                yield event
                if is_terminal(event):
                    return
            reason = "the stream ended before the job did"
        except grpc.RpcError as err:
            if not is_transient(err):
                raise
            reason = f"{err.code().name}: {' '.join((err.details() or '').split())}"
        finally:
            call.cancel()
        failures += 1
        if failures > RECONNECT_ATTEMPTS:
            raise ClientError(
                f"lost the events of {job_id} after seq {after_seq}: {reason}"
                f" ({RECONNECT_ATTEMPTS} reconnections failed)",
                SERVER_ERROR_EXIT,
            )
        logger.info("watch of %s cut (%s); reopening after seq %d", job_id, reason, after_seq)
        sleep(min(RECONNECT_BACKOFF_S * 2 ** (failures - 1), MAX_BACKOFF_S))


class ProgressView:
    """A tqdm bar of a job's outer steps, with its events printed above it."""

    def __init__(self, job: Any):
        from tqdm import tqdm

        total = job.spec.outer_steps if job.spec.HasField("outer_steps") else None
        self._bar = tqdm(
            total=total, initial=job.step, desc=job.job_id, unit="step", dynamic_ncols=True
        )

    def show(self, event: Any) -> None:
        from services.cli.tables import state_name
        from services.generated.star.v1 import job_pb2

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
            level = job_pb2.LogLevel.Name(event.log.level).removeprefix("LOG_LEVEL_")
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


def watch_job(stub: Any, job_id: str) -> Any:
    """Show the job's progress until it ends; the final Job if it SUCCEEDED, else ClientError
    (exit 1) with the reason."""
    from services.generated.star.v1 import job_pb2, service_pb2

    request = service_pb2.GetJobRequest(job_id=job_id)
    view = ProgressView(stub.GetJob(request))
    last = None
    try:
        for last in follow(stub, job_id):
            view.show(last)
    finally:
        view.close()
    job, state, reason = stub.GetJob(request), last.state_change.to_state, last.state_change.reason
    if state == job_pb2.JOB_STATE_FAILED:
        raise ClientError(
            f"job {job_id} failed at step {job.step}: {job.error or reason}", SERVER_ERROR_EXIT
        )
    if state == job_pb2.JOB_STATE_CANCELLED:
        because = f": {reason}" if reason else ""
        raise ClientError(
            f"job {job_id} was cancelled at step {job.step}{because}", SERVER_ERROR_EXIT
        )
    return job
