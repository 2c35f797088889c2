"""Rows <-> domain records, ids and page tokens (helpers of the store's SQL modules)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import secrets
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from services.domain import (
    CheckpointRecord,
    EventKind,
    Firing,
    Job,
    JobEvent,
    JobKind,
    JobState,
    OverlapPolicy,
    Schedule,
)
from services.store.db import from_micros
from star_core.errors import ConfigError

# Random bytes in generated ids (hex-encoded after the prefix: "job-3f9a1c2b7d4e").
ID_BYTES = 6
CHECKPOINT_ID_BYTES = 8
# Page sizes of list calls: 0 means the default; larger values are clamped to the maximum.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# The job fields an event stores as its snapshot (the rest is read from the job itself).
SNAPSHOT_FIELDS = ("state", "step", "error", "device", "worker_nodes", "metrics", "update_time")


def new_id(prefix: str, nbytes: int = ID_BYTES) -> str:
    """A fresh opaque id such as ``job-3f9a1c2b7d4e``."""
    return f"{prefix}-{secrets.token_hex(nbytes)}"


def dumps(value: Any) -> str:
    """Compact JSON with sorted keys (NaN/inf kept as the non-standard tokens Python reads)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        job_id=row["job_id"],
        kind=JobKind(row["kind"]),
        state=JobState(row["state"]),
        spec_json=row["spec_json"],
        step=row["step"],
        error=row["error"],
        device=row["device"],
        worker_nodes=tuple(json.loads(row["worker_nodes"])),
        metrics=json.loads(row["metrics"]),
        evaluation=tuple(json.loads(row["evaluation"])),
        request_id=row["request_id"] or "",
        schedule_id=row["schedule_id"] or "",
        fire_time=None if row["fire_time"] is None else from_micros(row["fire_time"]),
        create_time=from_micros(row["create_time"]),
        update_time=from_micros(row["update_time"]),
        last_seq=row["last_seq"],
    )


def snapshot_of(row: sqlite3.Row) -> str:
    """The JSON snapshot of a job row's changing fields (stored with each event)."""
    return dumps({name: row[name] for name in SNAPSHOT_FIELDS})


def event_from_row(row: sqlite3.Row, job: Job) -> JobEvent:
    """The event of ``row``; its ``job`` is ``job`` with the snapshot's fields."""
    snap = json.loads(row["snapshot"])
    as_of = dataclasses.replace(
        job,
        state=JobState(snap["state"]),
        step=snap["step"],
        error=snap["error"],
        device=snap["device"],
        worker_nodes=tuple(json.loads(snap["worker_nodes"])),
        metrics=json.loads(snap["metrics"]),
        update_time=from_micros(snap["update_time"]),
        last_seq=row["seq"],
    )
    return JobEvent(
        job_id=row["job_id"],
        seq=row["seq"],
        kind=EventKind(row["kind"]),
        step=row["step"],
        payload=json.loads(row["payload"]),
        time=from_micros(row["time"]),
        job=as_of,
    )


def checkpoint_from_row(row: sqlite3.Row) -> CheckpointRecord:
    return CheckpointRecord(
        checkpoint_id=row["checkpoint_id"],
        job_id=row["job_id"],
        step=row["step"],
        file_name=row["file_name"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        create_time=from_micros(row["create_time"]),
    )


def checkpoint_payload(record: CheckpointRecord, create_micros: int) -> dict[str, Any]:
    """The payload of a CHECKPOINT_WRITTEN event."""
    return {
        "checkpoint_id": record.checkpoint_id,
        "step": record.step,
        "size_bytes": record.size_bytes,
        "sha256": record.sha256,
        "create_time": create_micros,
    }


def schedule_from_row(row: sqlite3.Row) -> Schedule:
    nft = row["next_fire_time"]
    return Schedule(
        schedule_id=row["schedule_id"],
        cron=row["cron"],
        timezone=row["timezone"],
        template_json=row["template_json"],
        overlap_policy=OverlapPolicy(row["overlap_policy"]),
        paused=bool(row["paused"]),
        next_fire_time=None if nft is None else from_micros(nft),
        last_job_id=row["last_job_id"],
        warm_start_from_previous=bool(row["warm_start_from_previous"]),
        request_id=row["request_id"] or "",
        create_time=from_micros(row["create_time"]),
        update_time=from_micros(row["update_time"]),
    )


def firing_from_row(row: sqlite3.Row) -> Firing:
    return Firing(
        schedule_id=row["schedule_id"],
        fire_time=from_micros(row["fire_time"]),
        job_id=row["job_id"] or "",
        outcome=row["outcome"],
    )


def check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` as a plain dict of floats (ValueError for a non-number: a runner bug)."""
    out = {}
    for name, value in metrics.items():
        if (
            not isinstance(name, str)
            or isinstance(value, bool)
            or not isinstance(value, int | float)
        ):
            raise ValueError(f"metrics must map names to numbers, got {name!r}: {value!r}")
        out[name] = float(value)
    return out


def page_size(size: int) -> int:
    """The page size to use for a requested ``size`` (0: default; clamped to the maximum)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigError("page_size", f"page_size must be an integer >= 0, got {size!r}")
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def filter_key(states: Iterable[JobState] | None) -> str:
    """What a page token is bound to: the sorted state filter ("" = all)."""
    return ",".join(sorted(s.value for s in states or ()))


def encode_token(last_id: int, key: str) -> str:
    """The opaque token of the page after the row with internal id ``last_id``."""
    raw = dumps({"before": last_id, "filter": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, key: str) -> int | None:
    """The internal id a token continues before (None for ""); ConfigError if invalid."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        before, bound = data["before"], data["filter"]
    except (binascii.Error, ValueError, TypeError, KeyError) as err:
        raise ConfigError("page_token", "page_token is not a token this service issued") from err
    if not isinstance(before, int) or isinstance(before, bool) or bound != key:
        raise ConfigError("page_token", "page_token belongs to a different query (filter)")
    return before
