"""``star schedule add|list|pause|resume|delete``: recurring meta-training jobs on a STAR server.

- ``star schedule add [SPEC_FILE] --cron EXPR [--timezone TZ] [--overlap POLICY]
  [--warm-start-from-previous] [--paused] [star submit's spec flags] [--request-id ID]``: the
  job template is built exactly as ``star submit`` builds its spec; prints the schedule's id and
  when it fires next. POLICY says what a firing does while the previous job is still active:
  ``skip`` (default), ``queue`` or ``cancel_previous``.
- ``star schedule list [--limit N]``: a table of schedules.
- ``star schedule pause|resume|delete SCHEDULE_ID``.

Missed firings while the server was down are not replayed one by one: a schedule fires once
when the server comes back, then continues at its next time.
"""

from __future__ import annotations

import argparse

from services.cli.client import add_connection_flags, connect
from services.cli.jobspec import add_spec_flags
from services.domain import OverlapPolicy

OVERLAP_POLICIES = tuple(policy.value for policy in OverlapPolicy)
# Schedules `star schedule list` shows by default.
DEFAULT_LIMIT = 50


def register(subparsers) -> None:
    group = subparsers.add_parser("schedule", help="recurring meta-training jobs")
    commands = group.add_subparsers(dest="schedule_command", metavar="COMMAND", required=True)
    parser = commands.add_parser("add", help="create a schedule")
    parser.add_argument(
        "--cron",
        required=True,
        metavar="EXPR",
        help='5-field cron expression, e.g. "0 3 * * *" (03:00 every day)',
    )
    parser.add_argument("--timezone", default="UTC", help="IANA time zone of --cron (UTC)")
    parser.add_argument(
        "--overlap",
        choices=OVERLAP_POLICIES,
        default="skip",
        help="when the previous job still runs: skip (default), queue, or cancel_previous",
    )
    parser.add_argument(
        "--warm-start-from-previous",
        action="store_true",
        help="start each job from the previous job's latest checkpoint",
    )
    parser.add_argument("--paused", action="store_true", help="create it paused")
    parser.add_argument("--request-id", metavar="ID", help="idempotency id (default: a fresh uuid)")
    add_spec_flags(parser)
    add_connection_flags(parser)
    parser.set_defaults(handler=run_add)

    parser = commands.add_parser("list", help="list the schedules")
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"show at most N schedules (default {DEFAULT_LIMIT})",
    )
    add_connection_flags(parser)
    parser.set_defaults(handler=run_list)

    for name, text in (
        ("pause", "stop firing"),
        ("resume", "fire again from now on"),
        ("delete", "delete (its jobs are kept)"),
    ):
        parser = commands.add_parser(name, help=f"{text}")
        parser.add_argument("schedule_id", metavar="SCHEDULE_ID")
        add_connection_flags(parser)
        parser.set_defaults(handler=run_change, change=name)


def _describe(schedule) -> str:
    from services.cli.tables import format_time

    when = "paused" if schedule.paused else f"next {format_time(schedule.next_fire_time)}"
    return f"{schedule.schedule_id}: {schedule.cron} ({schedule.timezone or 'UTC'}), {when}"


def run_add(args: argparse.Namespace) -> int:
    from services.cli.jobspec import spec_from_args

    template = spec_from_args(args)
    with connect(args) as client:
        created = client.create_schedule(
            template,
            args.cron,
            timezone=args.timezone,
            overlap=args.overlap,
            warm_start_from_previous=args.warm_start_from_previous,
            paused=args.paused,
            request_id=args.request_id,
        )
    print(_describe(created))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from services.cli.tables import format_table, format_time
    from services.client.names import overlap_policy_name

    if args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    with connect(args) as client:
        schedules = list(client.list_schedules(limit=args.limit))
    rows = [
        (
            s.schedule_id,
            s.cron,
            s.timezone or "UTC",
            overlap_policy_name(s.overlap_policy),
            "yes" if s.warm_start_from_previous else "no",
            "paused" if s.paused else format_time(s.next_fire_time),
            s.last_job_id or "-",
        )
        for s in schedules
    ]
    headers = ("SCHEDULE", "CRON", "TIMEZONE", "OVERLAP", "WARM-START", "NEXT", "LAST JOB")
    print(format_table(headers, rows) if rows else "no schedules")
    return 0


def run_change(args: argparse.Namespace) -> int:
    """Pause, resume or delete a schedule (``args.change`` says which)."""
    with connect(args) as client:
        if args.change == "delete":
            client.delete_schedule(args.schedule_id)
            print(f"{args.schedule_id}: deleted")
            return 0
        method = client.pause_schedule if args.change == "pause" else client.resume_schedule
        changed = method(args.schedule_id)
    print(_describe(changed))
    return 0
