"""The gRPC channel of a :class:`~services.client.StarClient`: address, TLS, token, retries.

- ``server`` is ``HOST:PORT``; the channel connects lazily, on the first call.
- ``tls_ca`` (a PEM file, or its bytes) turns TLS on and is the set of certificates trusted;
  ``tls_server_name`` is the name the server's certificate must carry when it is not HOST (e.g.
  when connecting by IP address).
- ``token`` is sent with every call as ``authorization: Bearer TOKEN``; sending it without TLS
  to a host that is not loopback is logged as a warning.

Calls that failed only because the server could not be reached are retried by gRPC itself
(:data:`SERVICE_CONFIG`); that is safe because every call is idempotent or carries a request id.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)

# Seconds one unary call may take before it is DEADLINE_EXCEEDED.
DEFAULT_TIMEOUT_S = 30.0
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


def host_of(server: str) -> str:
    """HOST of ``HOST:PORT`` (``[::1]:50051`` -> ``::1``); ValueError for anything else."""
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"server must be HOST:PORT, got {server!r}")
    return host.strip("[]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pem(tls_ca: str | os.PathLike | bytes) -> bytes:
    return tls_ca if isinstance(tls_ca, bytes) else Path(tls_ca).read_bytes()


def open_channel(
    server: str,
    token: str | None = None,
    tls_ca: str | os.PathLike | bytes | None = None,
    tls_server_name: str | None = None,
) -> grpc.Channel:
    """A channel to ``server`` (see the module docstring); the caller closes it."""
    host = host_of(server)
    options = [("grpc.service_config", json.dumps(SERVICE_CONFIG)), ("grpc.enable_retries", 1)]
    if tls_ca is None:
        if token and not is_loopback(host):
            logger.warning("sending the token to %s without TLS (give tls_ca)", server)
        return grpc.insecure_channel(server, options=options)
    if tls_server_name:
        options.append(("grpc.ssl_target_name_override", tls_server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=_pem(tls_ca))
    return grpc.secure_channel(server, credentials, options=options)


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata every call carries: the bearer token, if any."""
    return (("authorization", f"Bearer {token}"),) if token else ()
