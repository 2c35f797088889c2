"""The gRPC server: the MetaTraining servicer, health checking, reflection, TLS and token auth.

``build_server(servicer, ...)`` returns a started ``grpc.aio.Server`` and the port it listens on.
Health (``grpc.health.v1.Health``; the service name ``star.v1.MetaTraining`` and "" report
SERVING while the server runs, NOT_SERVING while it stops) and reflection stay open without a
token. Without TLS on a non-loopback address, a warning says that the API is unencrypted.

One server per port: SO_REUSEPORT is off, so a port that another process listens on is
refused (``services.exclusive.AddressInUse``) instead of shared; ``star serve`` checks the port
before anything else starts (``services.exclusive.check_address``).
A request whose bytes do not parse is INVALID_ARGUMENT (``services.api.errors``).
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import NamedTuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.api.auth import TokenAuthInterceptor
from services.api.errors import MalformedRequestInterceptor
from services.api.servicer import MetaTrainingServicer, add_to_server
from services.exclusive import AddressInUse
from services.generated.star.v1 import service_pb2

logger = logging.getLogger(__name__)

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["MetaTraining"].full_name
# Largest request accepted (specs are bounded much lower; see services.domain).
MAX_RECEIVE_BYTES = 4 << 20
# Keep idle client connections healthy through proxies and NATs. SO_REUSEPORT off: gRPC sets
# it by default, so that a second server on the same port would bind too and share the calls.
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
)


class RunningServer(NamedTuple):
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine ("localhost", 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def build_server(
    servicer: MetaTrainingServicer,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> RunningServer:
    """Start serving on ``host:port`` (port 0: a free port); see the module docstring.
    AddressInUse when the address cannot be bound."""
    interceptors: list[grpc.aio.ServerInterceptor] = [TokenAuthInterceptor(token)] if token else []
    interceptors.append(MalformedRequestInterceptor())  # after auth: no token, no parsing
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    add_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{host}:{port}"
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    try:
        if tls_cert is not None and tls_key is not None:  # both or neither (checked above)
            credentials = grpc.ssl_server_credentials(
                [(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())]
            )
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as err:  # grpc: "Failed to bind to address ..."
        raise AddressInUse(_cannot_bind(address)) from err
    if bound == 0:
        raise AddressInUse(_cannot_bind(address))
    if tls_cert is None and not is_loopback(host):
        logger.warning("the API on %s is NOT encrypted: use --tls-cert/--tls-key", address)
    if not token and not is_loopback(host):
        logger.warning("the API on %s has NO token: anyone who reaches it can submit jobs", address)
    await server.start()
    for name in (SERVICE_NAME, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, bound, health_servicer)


def _cannot_bind(address: str) -> str:
    return f"cannot listen on {address}: the port is in use, or the address is not this machine's"


async def stop_server(running: RunningServer, grace: float = 5.0) -> None:
    """Report NOT_SERVING, then stop (open calls get ``grace`` seconds)."""
    await running.health.enter_graceful_shutdown()
    await running.server.stop(grace)
