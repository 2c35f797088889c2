"""The API's enum values as the short names people read and type, both ways.

``JOB_STATE_RUNNING`` is shown as ``RUNNING``, ``JOB_KIND_TRAINING`` as ``training``,
``OVERLAP_POLICY_CANCEL_PREVIOUS`` as ``cancel_previous``; :func:`state_value` and
:func:`overlap_policy_value` read such a name back (any case, with or without the prefix, the
number itself, or a ``services.domain`` enum member). Code above the client (the ``star`` CLI)
names states and policies through these functions instead of importing the generated protobuf
modules, which only the API layer and the client import.

protoc's type stubs give an enum field the type of its enum class, whose values are plain ints
at run time: the values read back are cast to that class.
"""

from __future__ import annotations

from typing import Any, cast

from services.generated.star.v1 import job_pb2, schedule_pb2

# The prefix each enum's value names carry in the proto (style guide: TYPE_VALUE).
JOB_STATE_PREFIX = "JOB_STATE_"
JOB_KIND_PREFIX = "JOB_KIND_"
LOG_LEVEL_PREFIX = "LOG_LEVEL_"
OVERLAP_POLICY_PREFIX = "OVERLAP_POLICY_"


def _enum_value(enum: Any, prefix: str, value: Any, what: str) -> int:
    """An enum value of ``enum`` from its number, its name with or without ``prefix``, in any
    case, or an object with such a ``.name`` (e.g. ``services.domain.JobState.RUNNING``);
    ValueError naming ``what`` and the allowed names otherwise."""
    if isinstance(value, int):
        if value not in enum.DESCRIPTOR.values_by_number:
            raise ValueError(f"unknown {what} {value}")
        return value
    name = str(getattr(value, "name", value)).upper().removeprefix(prefix)
    names = [v.name.removeprefix(prefix) for v in enum.DESCRIPTOR.values]
    allowed = [n for n in names if n != "UNSPECIFIED"]
    if name not in allowed:
        raise ValueError(f"unknown {what} {value!r} (one of {', '.join(allowed).lower()})")
    return enum.Value(prefix + name)


def state_value(value: Any) -> job_pb2.JobState:
    """``"running"``, ``"JOB_STATE_RUNNING"``, ``JobState.RUNNING`` or 2 -> 2."""
    return cast(
        job_pb2.JobState, _enum_value(job_pb2.JobState, JOB_STATE_PREFIX, value, "job state")
    )


def overlap_policy_value(value: Any) -> schedule_pb2.OverlapPolicy:
    """``"cancel_previous"``, ``OverlapPolicy.CANCEL_PREVIOUS``, ... -> its number."""
    number = _enum_value(schedule_pb2.OverlapPolicy, OVERLAP_POLICY_PREFIX, value, "overlap policy")
    return cast(schedule_pb2.OverlapPolicy, number)


def state_name(value: int) -> str:
    """``JOB_STATE_RUNNING`` -> ``RUNNING``."""
    return job_pb2.JobState.Name(value).removeprefix(JOB_STATE_PREFIX)


def kind_name(value: int) -> str:
    """``JOB_KIND_TRAINING`` -> ``training``."""
    return job_pb2.JobKind.Name(value).removeprefix(JOB_KIND_PREFIX).lower()


def log_level_name(value: int) -> str:
    """``LOG_LEVEL_WARNING`` -> ``WARNING``."""
    return job_pb2.LogLevel.Name(value).removeprefix(LOG_LEVEL_PREFIX)


def overlap_policy_name(value: int) -> str:
    """``OVERLAP_POLICY_CANCEL_PREVIOUS`` -> ``cancel_previous``."""
    return schedule_pb2.OverlapPolicy.Name(value).removeprefix(OVERLAP_POLICY_PREFIX).lower()
