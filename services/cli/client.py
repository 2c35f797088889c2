"""The connection of the client commands (``star submit``, ``star jobs``, ...) to a STAR server.

Every client command takes the same options; each falls back to an environment variable:

- ``--server HOST:PORT`` (``STAR_SERVER``; default ``127.0.0.1:50051``, where ``star serve``
  listens by default);
- ``--token TOKEN`` (``STAR_TOKEN``): sent with every call as ``authorization: Bearer TOKEN``;
- ``--tls-ca FILE`` (``STAR_TLS_CA``): PEM certificate(s) to trust; turns TLS on;
- ``--tls-server-name NAME`` (``STAR_TLS_SERVER_NAME``): the name the server's certificate must
  carry when it is not HOST (e.g. connecting by IP address);
- ``--timeout SECONDS``: deadline of each single call (streams, ``watch`` and ``fetch``, have none).

Calls that failed only because the server could not be reached are retried by gRPC a few times
(:data:`SERVICE_CONFIG`); that is safe because every call is idempotent or carries a request id.

A failed call ends the command with one line on stderr (:func:`rpc_error`, raised as
:class:`ClientError`, which ``star``'s main prints). Exit codes:

- 2: the request was wrong and the user can fix it: INVALID_ARGUMENT (the message starts with
  the offending field, e.g. ``spec.estimator.sigma``), NOT_FOUND, ALREADY_EXISTS (a request id
  reused with a different request), FAILED_PRECONDITION, UNAUTHENTICATED (missing or wrong
  token), PERMISSION_DENIED, OUT_OF_RANGE; also bad flags and unreadable files;
- 1: the request was fine but the service could not serve it: UNAVAILABLE (no server at the
  address), DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (too many jobs or streams: retry later),
  INTERNAL, UNKNOWN and the rest; also a watched job that ends FAILED or CANCELLED.

gRPC is imported inside the functions, so ``star --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_SERVER = "127.0.0.1:50051"
# Seconds one unary call may take before it is DEADLINE_EXCEEDED.
DEFAULT_TIMEOUT_S = 30.0
USER_ERROR_EXIT = 2
SERVER_ERROR_EXIT = 1
# Status codes (by name) whose cause is in the request: exit 2. Every other code: exit 1.
USER_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "OUT_OF_RANGE",
    }
)
# Status codes after which a cut stream (watch, fetch) is opened again.
TRANSIENT_CODES = frozenset(
    {"UNAVAILABLE", "INTERNAL", "UNKNOWN", "ABORTED", "CANCELLED", "DEADLINE_EXCEEDED"}
)
# The largest page a List RPC sends.
MAX_PAGE_SIZE = 1000
# The RPCs that stream their answers: no deadline.
STREAMING_METHODS = frozenset({"WatchJob", "FetchCheckpoint"})
# gRPC's own retry of calls that never reached a server (3 tries within about a second).
SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": "star.v1.MetaTraining"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.2s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
# Words in an UNAVAILABLE status that mean the TLS handshake failed (not a missing server).
TLS_WORDS = ("ssl", "tls", "handshake", "certificate", "verification")


class ClientError(ValueError):
    """A failed client command: one line for stderr and the exit code (2 user, 1 server)."""

    def __init__(self, message: str, exit_code: int = USER_ERROR_EXIT):
        super().__init__(message)
        self.exit_code = exit_code


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """``--server``, ``--token``, ``--tls-ca``, ``--tls-server-name`` and ``--timeout``."""
    env = os.environ.get
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--server",
        default=env("STAR_SERVER", DEFAULT_SERVER),
        metavar="HOST:PORT",
        help=f"STAR server (env STAR_SERVER; default {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--token", default=env("STAR_TOKEN"), help="bearer token of the server (env STAR_TOKEN)"
    )
    group.add_argument(
        "--tls-ca",
        type=Path,
        default=env("STAR_TLS_CA"),
        metavar="FILE",
        help="PEM certificates to trust; turns TLS on (env STAR_TLS_CA)",
    )
    group.add_argument(
        "--tls-server-name",
        default=env("STAR_TLS_SERVER_NAME"),
        metavar="NAME",
        help="name on the server's certificate, if not HOST (env STAR_TLS_SERVER_NAME)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"deadline of each call (default {DEFAULT_TIMEOUT_S:g})",
    )


class Stub:
    """The ``MetaTrainingStub`` with the connection's metadata on every call and its deadline
    on every unary call: ``stub.GetJob(request)``."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...], timeout: float):
        self._stub, self._metadata, self._timeout = stub, metadata, timeout

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)
        timeout = None if name in STREAMING_METHODS else self._timeout
        return functools.partial(method, metadata=self._metadata, timeout=timeout)


def _host(server: str) -> str:
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClientError(f"--server must be HOST:PORT, got {server!r}")
    return host.strip("[]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _channel(args: argparse.Namespace):
    import grpc

    host = _host(args.server)
    options = [("grpc.service_config", json.dumps(SERVICE_CONFIG)), ("grpc.enable_retries", 1)]
    if args.tls_ca is None:
        if args.token and not _is_loopback(host):
            logger.warning("sending the token to %s without TLS (give --tls-ca)", args.server)
        return grpc.insecure_channel(args.server, options=options)
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(args.tls_ca).read_bytes())
    return grpc.secure_channel(args.server, credentials, options=options)


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[Stub]:
    """A :class:`Stub` on a channel to ``args.server``; closes the channel at the end and turns
    any ``grpc.RpcError`` raised inside into a :class:`ClientError` (:func:`rpc_error`)."""
    import grpc

    from services.generated.star.v1 import service_pb2_grpc

    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    channel = _channel(args)
    try:
        yield Stub(service_pb2_grpc.MetaTrainingStub(channel), metadata, args.timeout)
    except grpc.RpcError as err:
        raise rpc_error(err, args) from None
    finally:
        channel.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _unavailable(details: str, server: str, tls: bool) -> str:
    """The line for UNAVAILABLE: no server, a failed TLS handshake, or a TLS-only server."""
    match = re.search(r"last error: \w+: \S+: (.*)", details)
    cause = match.group(1) if match else details
    if any(word in cause.lower() for word in TLS_WORDS):
        hint = (
            " (give --tls-server-name NAME when the certificate is not for HOST)"
            if "hostname" in cause.lower()
            else ""
        )
        return f"TLS connection to {server} failed: {cause}{hint}"
    if not tls and "socket closed" in cause.lower():
        return f"{server} closed the connection (if it serves TLS, give --tls-ca)"
    return f"no STAR server at {server} (is `star serve` running?)"


def rpc_error(err: Any, args: argparse.Namespace) -> ClientError:
    """The one-line :class:`ClientError` of a failed call (see the module docstring)."""
    code = err.code().name
    details = _one_line(err.details() or "") or code
    if code == "UNAVAILABLE":
        message = _unavailable(details, args.server, args.tls_ca is not None)
    elif code == "UNAUTHENTICATED":
        message = f"{args.server} refused the call: missing or wrong token (--token or STAR_TOKEN)"
    elif code == "DEADLINE_EXCEEDED":
        message = f"{args.server} did not answer within {args.timeout:g} s"
    elif code == "RESOURCE_EXHAUSTED":
        message = f"the server is at capacity, try again later: {details}"
    elif code == "ALREADY_EXISTS":
        message = f"{details} (a request id is reused only for the same request)"
    elif code in USER_CODES:
        message = details
    else:
        message = f"server error ({code}): {details}"
    return ClientError(message, USER_ERROR_EXIT if code in USER_CODES else SERVER_ERROR_EXIT)


def is_transient(err: Any) -> bool:
    """Whether a cut stream that failed with ``err`` (a ``grpc.RpcError``) may be reopened."""
    return err.code().name in TRANSIENT_CODES


def collect_pages(list_call: Any, make_request: Any, items: str, limit: int) -> list[Any]:
    """Up to ``limit`` items (the response field ``items``) of a paginated List RPC, following
    ``next_page_token``; ``make_request(page_size=..., page_token=...)`` builds each request."""
    if limit < 1:
        raise ClientError(f"--limit must be >= 1, got {limit}")
    found: list[Any] = []
    token = ""
    while len(found) < limit:
        page = list_call(
            make_request(page_size=min(limit - len(found), MAX_PAGE_SIZE), page_token=token)
        )
        found.extend(getattr(page, items))
        token = page.next_page_token
        if not token:
            break
    return found[:limit]
