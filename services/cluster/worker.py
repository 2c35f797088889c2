"""The worker actor: one ``star_core`` EstimationWorker in a Ray actor.

Each worker owns its share of the PES particles (inner models, their optimizer states, episode
counters) and answers ``estimate(theta, step)`` with ``(step, grad, record)``: the gradient of
worker ``index`` at outer step ``step`` (key of ``(seed, step, index)``), as numpy arrays. The
learner calls it again with each new theta, so a worker loops get-theta -> estimate -> return.
Ray restarts a dead worker (``max_restarts``) by running the constructor again: it starts fresh
particles, which PES tolerates (a new particle is an episode start).

A CPU worker (``JAX_PLATFORMS=cpu``) first claims as many cores of its node as it asked Ray for
CPUs, and pins itself to them (:mod:`services.cluster.cores`), before JAX starts: XLA sizes its
thread pool by those cores, so two workers on a node never compete for one core. When too few
cores are free it runs unpinned; :meth:`WorkerActor.placement` says which cores it holds, or why
it holds none.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from services.cluster import cores

logger = logging.getLogger(__name__)


class WorkerActor:
    """Ray actor class (wrapped with ``ray.remote`` by the learner); see the module docstring."""

    def __init__(self, config: Any, index: int):
        # Before anything starts XLA: its thread pool is sized by the process's CPU affinity.
        self.claim = _claim_cores()
        # JAX is imported here, after Ray has set the process's environment (JAX_PLATFORMS,
        # XLA_FLAGS, XLA_PYTHON_CLIENT_PREALLOCATE) from the actor's runtime_env.
        from star_core.tasks.data.ensure import ensure_task_data
        from star_core.training.worker import EstimationWorker

        # The job's data on this node before any worker reads it: embedded data is built once
        # (quietly, under a lock: the node's workers start together); missing prepared data
        # fails here with the command that prepares it.
        ensure_task_data(config.make_task(name) for name in config.tasks)
        self.worker = EstimationWorker(config, index)  # config: the job's MetaTrainConfig
        self.index = index

    def placement(self) -> dict[str, Any]:
        """Where this worker runs: Ray node id, host name and IP, the JAX device kind, its pid
        and, for a CPU worker, the cores it holds (``cores``; empty when it runs unpinned, and
        ``pin_note`` says why)."""
        import jax
        import ray

        context = ray.get_runtime_context()
        return {
            "worker": self.index,
            "node_id": context.get_node_id(),
            "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(),
            "device": jax.devices()[0].platform,
            "pid": os.getpid(),
            "cores": list(self.claim.cores) if self.claim else [],
            "pin_note": self.claim.reason if self.claim else "",
        }

    def estimate(self, theta: Any, step: int) -> tuple[int, Any, dict[str, Any]]:
        """``(step, grad, record)`` for ``theta`` at outer step ``step`` (numpy leaves)."""
        import jax

        grad, record = self.worker.estimate(theta, step)
        return step, jax.device_get(grad), record


def _claim_cores() -> cores.CoreClaim | None:
    """The cores of a CPU worker (as many as the CPUs Ray gave it); None for other devices."""
    if os.environ.get("JAX_PLATFORMS") != "cpu":
        return None
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    if cpus < 1:
        return cores.CoreClaim((), f"it asked Ray for {cpus:g} CPUs")
    claim = cores.claim_cores(int(cpus))
    if not claim.pinned:
        logger.warning("CPU worker runs unpinned: %s", claim.reason)
    return claim
