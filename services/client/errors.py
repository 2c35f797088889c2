"""``StarError``: the one exception the Python client raises for a call that failed.

Every failure of a call to the service, and of the client's own checks of what the service sent
(a watch that lost its events, a download whose SHA-256 differs), is a :class:`StarError` with

- ``code``: the gRPC status code's name (``"INVALID_ARGUMENT"``, ``"NOT_FOUND"``, ...);
- ``message``: the server's message on one line (``"spec.estimator.sigma: must be > 0"``);
- ``field``: for INVALID_ARGUMENT, the path of the offending field, which the service puts at the
  start of the message (``"spec.estimator.sigma"``); None otherwise;
- ``method``: the RPC that failed (``"SubmitJob"``); None when the client itself gave up.

The codes the service answers with are listed in ``proto/star/v1/service.proto``.
"""

from __future__ import annotations

import re
from typing import Any

# Status codes after which a cut stream (WatchJob, FetchCheckpoint) is opened again: the
# server went away or cut the call, nothing was wrong with the request.
TRANSIENT_CODES = frozenset(
    {"UNAVAILABLE", "INTERNAL", "UNKNOWN", "ABORTED", "CANCELLED", "DEADLINE_EXCEEDED"}
)
# Codes whose message starts with the path of the offending field ("<field>: <what>").
FIELD_CODES = frozenset({"INVALID_ARGUMENT"})
# A field path at the start of a message: `spec.tasks[0]`, `worker_resources.node:a`, `offset`.
FIELD_PREFIX = re.compile(r"([A-Za-z_][\w.\[\]:/-]*?): ")


class StarError(Exception):
    """A failed call to a STAR server (see the module docstring)."""

    def __init__(
        self, code: str, message: str, field: str | None = None, method: str | None = None
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.method = method

    def __repr__(self) -> str:
        return (
            f"StarError(code={self.code!r}, message={self.message!r}, field={self.field!r},"
            f" method={self.method!r})"
        )

    @property
    def transient(self) -> bool:
        """Whether trying again later may succeed (the request itself was not refused)."""
        return self.code in TRANSIENT_CODES


def one_line(text: str) -> str:
    return " ".join(text.split())


def field_of(code: str, message: str) -> str | None:
    """The field path a message of ``code`` starts with, if it names one."""
    if code not in FIELD_CODES:
        return None
    match = FIELD_PREFIX.match(message)
    return match.group(1) if match else None


def from_rpc_error(err: Any, method: str) -> StarError:
    """The :class:`StarError` of a ``grpc.RpcError`` raised by the RPC ``method``."""
    code = err.code().name
    message = one_line(err.details() or "") or code
    return StarError(code, message, field_of(code, message), method)
