"""The connection of the client commands (``star submit``, ``star jobs``, ...) to a STAR server.

Every client command takes the same options; each falls back to an environment variable:

- ``--server HOST:PORT`` (``STAR_SERVER``; default ``127.0.0.1:50051``, where ``star serve``
  listens by default);
- ``--token TOKEN`` (``STAR_TOKEN``): sent with every call as ``authorization: Bearer TOKEN``;
- ``--tls-ca FILE`` (``STAR_TLS_CA``): PEM certificate(s) to trust; turns TLS on;
- ``--tls-server-name NAME`` (``STAR_TLS_SERVER_NAME``): the name the server's certificate must
  carry when it is not HOST (e.g. connecting by IP address);
- ``--timeout SECONDS``: deadline of each single call (streams, ``watch`` and ``fetch``, have none).

The commands talk to the server through ``services.client.StarClient`` (:func:`connect`), which
retries calls that never reached a server and reopens cut streams.

A failed call ends the command with one line on stderr: :func:`connect` turns the client's
``StarError`` into a :class:`ClientError` (:func:`cli_error`), which ``star``'s main prints.
Exit codes:

- 2 (:data:`USER_ERROR_EXIT`): the request was wrong and the user can fix it: INVALID_ARGUMENT
  (the message starts with the offending field, e.g. ``spec.estimator.sigma``), NOT_FOUND,
  ALREADY_EXISTS (a request id reused with a different request), FAILED_PRECONDITION,
  UNAUTHENTICATED (missing or wrong token), PERMISSION_DENIED, OUT_OF_RANGE; also bad flags
  and unreadable files;
- 1 (:data:`SERVER_ERROR_EXIT`): the request was fine but the service could not serve it:
  UNAVAILABLE (no server at the address), DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (too many jobs
  or streams: retry later), INTERNAL, UNKNOWN and the rest; a download that failed its SHA-256
  check; also a watched job that ends FAILED or CANCELLED.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from services.client import DEFAULT_TIMEOUT_S, StarClient, StarError

DEFAULT_SERVER = "127.0.0.1:50051"
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


def client_of(args: argparse.Namespace) -> StarClient:
    """A :class:`StarClient` for the connection flags in ``args``."""
    try:
        return StarClient(
            args.server,
            token=args.token,
            tls_ca=args.tls_ca,
            tls_server_name=args.tls_server_name,
            timeout=args.timeout,
        )
    except ValueError as err:
        raise ClientError(f"--{err}") from None


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[StarClient]:
    """A :class:`StarClient` for ``args``; closes it at the end and turns any ``StarError``
    raised inside into a :class:`ClientError` (:func:`cli_error`)."""
    client = client_of(args)
    try:
        yield client
    except StarError as err:
        raise cli_error(err, args) from None
    finally:
        client.close()


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


def _message(err: StarError, args: argparse.Namespace) -> str:
    """The line for an error the server (or the connection to it) answered a call with."""
    code, details = err.code, err.message
    if code == "UNAVAILABLE":
        return _unavailable(details, args.server, args.tls_ca is not None)
    if code == "UNAUTHENTICATED":
        return f"{args.server} refused the call: missing or wrong token (--token or STAR_TOKEN)"
    if code == "DEADLINE_EXCEEDED":
        return f"{args.server} did not answer within {args.timeout:g} s"
    if code == "RESOURCE_EXHAUSTED":
        return f"the server is at capacity, try again later: {details}"
    if code == "ALREADY_EXISTS":
        return f"{details} (a request id is reused only for the same request)"
    return details if code in USER_CODES else f"server error ({code}): {details}"


def cli_error(err: StarError, args: argparse.Namespace) -> ClientError:
    """The one-line :class:`ClientError` of a failed call (see the module docstring). An
    error the client raised itself (``err.method`` is None) already reads as one line."""
    message = err.message if err.method is None else _message(err, args)
    return ClientError(message, USER_ERROR_EXIT if err.code in USER_CODES else SERVER_ERROR_EXIT)
