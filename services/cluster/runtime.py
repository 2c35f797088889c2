"""Connecting the service to Ray: a local instance of its own, or an existing cluster.

- No address (the embedded default): start a local Ray instance with **token authentication**
  (an unauthenticated Ray API is remote code execution). The token lives in the service's data
  directory (``<data-dir>/ray/auth_token``, mode 0600, created on first start) and reaches Ray
  through ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH``; the dashboard listens on loopback
  unless told otherwise and asks for that token. Its processes share JAX's persistent
  compilation cache in ``<data-dir>/jax-cache`` (``compilation_cache_env``): a job's learner and
  workers are new processes, which would otherwise compile the job's functions again.
- An address (``auto``, ``HOST:6379``, ``ray://...``): join that cluster. When the cluster uses
  token authentication, this process needs its token: ``RAY_AUTH_TOKEN`` or
  ``RAY_AUTH_TOKEN_PATH`` in the environment, or ``~/.ray/auth_token`` (Ray's own lookup).

What the cluster offers (GPUs, the learners' ``star_learner`` resource) is read from
``ray.cluster_resources()`` when a job starts (``services.cluster.placement``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Namespace of the service's named actors (star-<job>-learner, star-<job>-worker-<i>).
NAMESPACE = "star"
# Bytes of randomness of a generated Ray auth token (hex encoded).
TOKEN_BYTES = 32
AUTH_MODE_ENV = "RAY_AUTH_MODE"
# The custom Ray resource of the nodes that host learners (a learner takes one unit; see
# services.cluster.placement). A local instance offers it on its one node, enough for every
# job the service runs at once (--max-running bounds them; a learner asks for no CPU).
LEARNER_RESOURCE = "star_learner"
LOCAL_LEARNER_SLOTS = 1000
# Attempts at creating a named actor whose name a leftover holds, and seconds between them: a
# learner or worker of a process that died, which Ray removes only once the GCS declares its
# node dead (~15-30 s), while a new one may start within seconds.
NAME_ATTEMPTS = 5
NAME_RETRY_DELAY_S = 1.0
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# JAX's persistent compilation cache of a local instance: its folder under the data directory,
# every computation cached (JAX's default skips those that compile in under 1 s, and a job's
# processes start with many such: the optimizer's eager init alone costs a learner ~2.5 s) and
# the least recently used entries evicted beyond the size. Variables already set are kept.
COMPILATION_CACHE_FOLDER = "jax-cache"
COMPILATION_CACHE_MAX_BYTES = 1 << 30


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
        return RayConnection(ray.get_runtime_context().gcs_address, "", False, "", owned=False)
    if address:
        joined = ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
        return RayConnection(
            ray.get_runtime_context().gcs_address, _url(joined.dashboard_url), False, ""
        )
    options: dict[str, Any] = {"include_dashboard": True, "dashboard_host": dashboard_host}
    if dashboard_port is not None:
        options["dashboard_port"] = dashboard_port
    # Ray's processes inherit this environment.
    for name, value in compilation_cache_env(Path(data_dir), os.environ).items():
        os.environ[name] = value
    # address="local": always a new instance, never one that `ray start` left on this machine.
    started = ray.init(
        address="local",
        num_cpus=num_cpus,
        resources={LEARNER_RESOURCE: LOCAL_LEARNER_SLOTS},
        namespace=NAMESPACE,
        logging_level=logging.WARNING,
        **options,
    )
    return RayConnection(
        ray.get_runtime_context().gcs_address, _url(started.dashboard_url), True, str(token_path)
    )


def compilation_cache_env(data_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The JAX cache variables a local instance sets: those of ``COMPILATION_CACHE_*`` that
    ``environ`` does not set already."""
    wanted = {
        "JAX_COMPILATION_CACHE_DIR": str(data_dir / COMPILATION_CACHE_FOLDER),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_COMPILATION_CACHE_MAX_SIZE": str(COMPILATION_CACHE_MAX_BYTES),
    }
    return {name: value for name, value in wanted.items() if name not in environ}


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _reload_ray_config() -> None:
    """Make an already imported Ray see the authentication settings of the environment."""
    if "ray" not in sys.modules:
        return
    # What Ray's own token set-up calls after changing the mode (a Cython module: no stubs).
    from ray._raylet import Config  # type: ignore[attr-defined]

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


def cluster_resources() -> dict[str, float]:
    """The whole cluster's resources (``CPU``, ``GPU``, custom ones) as Ray reports them."""
    import ray

    return {name: float(amount) for name, amount in ray.cluster_resources().items()}


def kill_named(name: str) -> None:
    """Kill the service's actor ``name`` if it exists (a leftover of a process that died)."""
    import ray

    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:  # no such actor (gone meanwhile)
        return
    ray.kill(actor, no_restart=True)


def create_named(remote_class: Any, name: str, *args: Any, **options: Any) -> Any:
    """The actor ``name`` of ``remote_class`` (a ``ray.remote`` class) created with ``args``;
    a leftover actor that holds the name is killed first (blocking: run it off an event loop)."""
    for _ in range(NAME_ATTEMPTS):
        try:
            return remote_class.options(name=name, namespace=NAMESPACE, **options).remote(*args)
        except ValueError:  # the name is taken
            kill_named(name)
            time.sleep(NAME_RETRY_DELAY_S)
    raise RuntimeError(f"an actor named {name} is in the way and could not be removed")
