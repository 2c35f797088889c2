"""Connecting the service to Ray: a local instance of its own, or an existing cluster.

- No address (the embedded default): start a local Ray instance with **token authentication**
  (an unauthenticated Ray API is remote code execution). The token lives in the service's data
  directory (``<data-dir>/ray/auth_token``, mode 0600, created on first start) and reaches Ray
  through ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH``; the dashboard listens on loopback
  unless told otherwise and asks for that token.
- An address (``auto``, ``HOST:6379``, ``ray://...``): join that cluster. When the cluster uses
  token authentication, this process needs its token: ``RAY_AUTH_TOKEN`` or
  ``RAY_AUTH_TOKEN_PATH`` in the environment, or ``~/.ray/auth_token`` (Ray's own lookup).

Whether the cluster has GPUs is read from ``ray.cluster_resources()`` when a job starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Namespace of the service's named actors (star-<job>-learner, star-<job>-worker-<i>).
NAMESPACE = "star"
# Bytes of randomness of a generated Ray auth token (hex encoded).
TOKEN_BYTES = 32
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


@dataclasses.dataclass(frozen=True)
class RayConnection:
    """What the service knows about the Ray instance it uses."""

    address: str  # the GCS address
    dashboard_url: str  # "" when the dashboard is off or unknown
    started_here: bool  # a local instance this process started
    token_path: str  # the auth token file of a local instance ("" otherwise)
    owned: bool = True  # this process called ray.init (and calls ray.shutdown)


def ensure_token(path: Path) -> Path:
    """The Ray auth token file at ``path``, created (0600) with a random token if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(TOKEN_BYTES))
    return path


def connect(
    address: str | None,
    data_dir: Path,
    *,
    num_cpus: int | None = None,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int | None = None,
) -> RayConnection:
    """Join ``address``, or start a local Ray instance (see the module docstring).

    When this process is already connected to Ray (an embedding program or a test session
    did ``ray.init``), that connection is used as it is.
    """
    if not address and not _ray_connected():
        # Token authentication of the local instance: Ray reads the mode once, when it is
        # imported, so the environment is set before the first import of ray.
        token_path = ensure_token(Path(data_dir) / "ray" / "auth_token")
        os.environ[AUTH_MODE_ENV] = "token"
        os.environ[AUTH_TOKEN_PATH_ENV] = str(token_path)
        _reload_ray_config()
    import ray

    if ray.is_initialized():
        context = ray.get_runtime_context()
        return RayConnection(context.gcs_address, "", False, "", owned=False)
    if address:
        context = ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
        return RayConnection(
            ray.get_runtime_context().gcs_address, _url(context.dashboard_url), False, ""
        )
    options: dict[str, Any] = {"include_dashboard": True, "dashboard_host": dashboard_host}
    if dashboard_port is not None:
        options["dashboard_port"] = dashboard_port
    # address="local": always a new instance, never one that `ray start` left on this machine.
    context = ray.init(
        address="local",
        num_cpus=num_cpus,
        namespace=NAMESPACE,
        logging_level=logging.WARNING,
        **options,
    )
    return RayConnection(
        ray.get_runtime_context().gcs_address, _url(context.dashboard_url), True, str(token_path)
    )


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _reload_ray_config() -> None:
    """Make an already imported Ray see the authentication settings of the environment."""
    if "ray" not in sys.modules:
        return
    from ray._raylet import Config  # what Ray's own token set-up calls after changing the mode

    Config.initialize("")


def _url(address: str | None) -> str:
    """``host:port`` of the dashboard as an http URL ("" when there is no dashboard)."""
    if not address:
        return ""
    return address if address.startswith("http") else f"http://{address}"


def disconnect(connection: RayConnection) -> None:
    """Leave Ray if :func:`connect` joined it; a local instance it started is stopped."""
    import ray

    if ray.is_initialized() and connection.owned:
        ray.shutdown()


def cluster_gpus() -> float:
    """GPUs in the whole cluster (0.0 on a CPU-only cluster)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def missing_resources(requested: dict[str, float]) -> list[str]:
    """The custom resources in ``requested`` that no node of the cluster has enough of."""
    import ray

    have = ray.cluster_resources()
    return sorted(name for name, amount in requested.items() if have.get(name, 0.0) < amount)
