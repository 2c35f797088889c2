"""Client commands for jobs (thin: parse, build the request, call, print).

- ``star submit [SPEC_FILE] [star train's flags] [cluster flags] [--request-id ID] [--watch]``:
  submit a meta-training job (``services.cli.jobspec``); prints its id. A retried submit is
  idempotent: the request id defaults to a fresh uuid per command, reused by every retry.
- ``star jobs [--state S ...] [--limit N]``: a table of jobs, newest first.
- ``star status JOB [--json]``: a job's state, step, device, workers, latest metrics, error,
  checkpoints and evaluation.
- ``star cancel JOB``: ask a job to stop (a running job writes a checkpoint first).
- ``star checkpoints JOB``: a table of a job's checkpoints.
- ``star delete JOB``: delete a finished job, its events and its checkpoints (those a warm
  start uses are kept); one line saying what went.
- ``star evaluate CHECKPOINT_ID [--task T] [--steps N] [--seeds K] [--baseline NAME ...]
  [--watch]``: the evaluation protocol on a checkpoint, as a job; with ``--watch`` it waits and
  prints the table of results.

Connection flags and exit codes: ``services.cli.client``.
"""

from __future__ import annotations

import argparse
from typing import Any

from services.cli.client import add_connection_flags, connect
from services.cli.jobspec import add_spec_flags
from services.domain import BASELINES, DEFAULT_EVAL_SEEDS

# Job states a user can filter on (`star jobs --state`).
STATES = ("pending", "running", "cancelling", "succeeded", "failed", "cancelled")
# Jobs `star jobs` lists by default.
DEFAULT_LIMIT = 50
# JobMetrics field -> its label in `star status`.
METRIC_LABELS = {
    "meta_loss": "meta-loss",
    "inner_steps_per_second": "inner steps/s",
    "grad_norm": "gradient norm",
    "outer_step_seconds": "seconds/outer step",
    "dropped_estimates": "non-finite estimates dropped",
    "stale_dropped": "stale estimates dropped",
    "worker_restarts": "worker restarts",
}


def _add_request_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--request-id",
        metavar="ID",
        help="idempotency id: the same id and request give the same job (default: a fresh uuid)",
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser("submit", help="submit a meta-training job to a STAR server")
    add_spec_flags(parser)
    _add_request_id(parser)
    parser.add_argument("--watch", action="store_true", help="then follow it until it ends")
    add_connection_flags(parser)
    parser.set_defaults(handler=run_submit)

    parser = subparsers.add_parser("jobs", help="list the jobs of a STAR server")
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        choices=STATES,
        type=str.lower,
        help="only jobs in this state (repeatable)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"show at most N jobs (default {DEFAULT_LIMIT})",
    )
    add_connection_flags(parser)
    parser.set_defaults(handler=run_jobs)

    for name, handler, text in (
        ("status", run_status, "show a job"),
        ("cancel", run_cancel, "stop a job (it checkpoints first)"),
        ("checkpoints", run_checkpoints, "list a job's checkpoints"),
        ("delete", run_delete, "delete a finished job, its events and checkpoints"),
    ):
        parser = subparsers.add_parser(name, help=text)
        parser.add_argument("job_id", metavar="JOB")
        if name == "status":
            parser.add_argument("--json", action="store_true", help="print the Job as JSON")
        add_connection_flags(parser)
        parser.set_defaults(handler=handler)
    _register_evaluate(subparsers)


def _register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a checkpoint on the server")
    parser.add_argument("checkpoint_id", metavar="CHECKPOINT_ID")
    parser.add_argument("--task", help="task to train (default: the checkpoint's first task)")
    parser.add_argument("--steps", type=int, help="inner steps per run (default: 10 x horizon)")
    parser.add_argument("--seeds", type=int, help=f"seeds 0..K-1 (default {DEFAULT_EVAL_SEEDS})")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help=f"baseline trained next to it: {', '.join(BASELINES)} (repeatable)",
    )
    _add_request_id(parser)
    parser.add_argument("--watch", action="store_true", help="wait and print the results")
    add_connection_flags(parser)
    parser.set_defaults(handler=run_evaluate)


def run_submit(args: argparse.Namespace) -> int:
    from services.cli.jobspec import spec_from_args
    from services.cli.watch import watch_to_end

    spec = spec_from_args(args)
    with connect(args) as client:
        job = client.submit(spec, request_id=args.request_id)
        print(job.job_id, flush=True)
        if args.watch:
            return watch_to_end(client, job.job_id)
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    from services.cli.tables import format_table, format_time, job_progress, number
    from services.client.names import kind_name
    from services.client.names import state_name as name

    if args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    with connect(args) as client:
        jobs = list(client.list_jobs(states=args.state, limit=args.limit))
    rows = [
        (
            j.job_id,
            kind_name(j.kind),
            name(j.state),
            job_progress(j),
            j.device or "-",
            number(j.metrics, "meta_loss"),
            format_time(j.create_time),
        )
        for j in jobs
    ]
    print(
        format_table(("JOB", "KIND", "STATE", "STEP", "DEVICE", "META-LOSS", "CREATED"), rows)
        if rows
        else "no jobs"
    )
    return 0


def _describe(job: Any, checkpoints: list[Any]) -> list[tuple[str, str]]:
    from services.cli.tables import format_time, job_progress
    from services.client.names import kind_name, state_name

    rows = [
        ("job", job.job_id),
        ("kind", kind_name(job.kind)),
        ("state", state_name(job.state)),
        ("step", job_progress(job)),
        ("device", job.device or "-"),
    ]
    if job.worker_nodes:
        rows.append(("workers", f"{len(job.worker_nodes)} on " + ", ".join(job.worker_nodes)))
    if job.evaluation_spec.checkpoint_id:
        rows.append(("checkpoint", job.evaluation_spec.checkpoint_id))
    if job.schedule_id:
        rows.append(("schedule", f"{job.schedule_id} (fired {format_time(job.fire_time)})"))
    rows += [("created", format_time(job.create_time)), ("updated", format_time(job.update_time))]
    rows += [
        (label, format(getattr(job.metrics, field), ".4g"))
        for field, label in METRIC_LABELS.items()
        if job.metrics.HasField(field)
    ]
    rows += [(name, format(value, ".4g")) for name, value in sorted(job.metrics.extra.items())]
    if job.error:
        rows.append(("error", job.error))
    latest = (
        f" (latest {checkpoints[-1].checkpoint_id} at step {checkpoints[-1].step})"
        if checkpoints
        else ""
    )
    rows.append(("checkpoints", f"{len(checkpoints)}{latest}"))
    return rows


def run_status(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from services.cli.tables import summaries_table

    with connect(args) as client:
        job = client.get_job(args.job_id)
        checkpoints = client.checkpoints(args.job_id)
    if args.json:
        print(json_format.MessageToJson(job, preserving_proto_field_name=True))
        return 0
    rows = _describe(job, checkpoints)
    width = max(len(key) for key, _ in rows)
    print("\n".join(f"{key.ljust(width)}  {value}" for key, value in rows))
    if job.evaluation:
        print("\n" + summaries_table(job.evaluation))
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    from services.client.names import state_name

    with connect(args) as client:
        job = client.cancel(args.job_id)
    note = " (it writes a checkpoint, then stops)" if state_name(job.state) == "CANCELLING" else ""
    print(f"{job.job_id}: {state_name(job.state)}{note}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        response = client.delete_job(args.job_id)
    kept = response.kept_checkpoint_ids
    note = f"; kept {len(kept)} used as warm start: {', '.join(kept)}" if kept else ""
    print(f"{args.job_id}: deleted ({response.deleted_checkpoints} checkpoint files{note})")
    return 0


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    return f"{count / 1024:.1f} KiB" if count < 1024**2 else f"{count / 1024**2:.1f} MiB"


def run_checkpoints(args: argparse.Namespace) -> int:
    from services.cli.tables import format_table, format_time

    with connect(args) as client:
        checkpoints = client.checkpoints(args.job_id)
    rows = [
        (c.checkpoint_id, c.step, _size(c.size_bytes), c.sha256, format_time(c.create_time))
        for c in checkpoints
    ]
    print(
        format_table(("CHECKPOINT", "STEP", "SIZE", "SHA256", "CREATED"), rows)
        if rows
        else f"{args.job_id} has no checkpoints yet"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from services.cli.tables import summaries_table
    from services.cli.watch import watch_job

    with connect(args) as client:
        try:
            job = client.evaluate(
                args.checkpoint_id,
                task=args.task or "",
                steps=args.steps,
                seeds=args.seeds,
                baselines=args.baseline,
                request_id=args.request_id,
            )
        except ValueError as err:  # "steps: Value out of range ..." names the flag
            raise ValueError(f"--{err}") from None
        print(job.job_id, flush=True)
        if args.watch:
            job = watch_job(client, job.job_id)
            print(summaries_table(job.evaluation))
    return 0
