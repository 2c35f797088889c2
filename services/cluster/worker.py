"""The worker actor: one ``star_core`` EstimationWorker in a Ray actor.

Each worker owns its share of the PES particles (inner models, their optimizer states, episode
counters) and answers ``estimate(theta, step)`` with ``(step, grad, record)``: the gradient of
worker ``index`` at outer step ``step`` (key of ``(seed, step, index)``), as numpy arrays. The
learner calls it again with each new theta, so a worker loops get-theta -> estimate -> return.
Ray restarts a dead worker (``max_restarts``) by running the constructor again: it starts fresh
particles, which PES tolerates (a new particle is an episode start).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

logger = logging.getLogger(__name__)


class WorkerActor:
    """Ray actor class (wrapped with ``ray.remote`` by the learner); see the module docstring."""

    def __init__(self, config: Any, index: int):
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
        """Where this worker runs: Ray node id, host name and IP, the JAX device kind."""
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
        }

    def estimate(self, theta: Any, step: int) -> tuple[int, Any, dict[str, Any]]:
        """``(step, grad, record)`` for ``theta`` at outer step ``step`` (numpy leaves)."""
        import jax

        grad, record = self.worker.estimate(theta, step)
        return step, jax.device_get(grad), record
