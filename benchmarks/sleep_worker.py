"""A stand-in worker actor for ``cluster_scaling.py``: estimates that cost wall time and no CPU.

Same interface as ``services.cluster.worker.WorkerActor`` (``__init__(config, index)``,
``placement()``, ``estimate(theta, step) -> (step, grad, record)``), plugged into the service
through ``ServiceOptions(worker_class=...)`` (a Python-only option: no flag or API field selects
it). ``estimate`` sleeps ``cost_s`` seconds and returns a deterministic gradient of theta's
shape::

    grad = GRAD_SCALE * sign(step, index) for every element, sign = +1 when step + index is even

so the learner averages, clips and applies it as it would a real one, and the job's theta moves
the same way in every run. Each estimate reports ``NOMINAL_INNER_STEPS`` inner steps so that
the job's inner steps per second are estimates per second times that count.

The class never imports JAX (64 of these processes share one small machine): theta reaches it as
numpy leaves, and ``CONFIG_AS_DICT`` tells the learner to pass the job's config as a plain dict
(unpickling a ``MetaTrainConfig`` would import star_core, JAX with it).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

import numpy as np
import ray.cloudpickle

# Ray's worker processes cannot import this module (benchmarks/ is not a package on their
# path), so classes made here travel by value: cloudpickle serializes their code instead of a
# reference to ``sleep_worker.SleepingWorker``.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# Magnitude of every element of the stand-in gradient (small: theta stays in a sane range).
GRAD_SCALE = 1e-3
# Inner steps one estimate reports (a real PES estimate with 8 pairs and truncation 50: 800).
NOMINAL_INNER_STEPS = 800.0
# Meta-loss every estimate reports (any finite value).
META_LOSS = 1.0


class SleepingWorker:
    """Worker ``index``: each estimate sleeps ``COST_S`` (``SLOW_FACTOR`` times that for the
    worker ``SLOW_INDEX``). Configure it with :func:`sleeping_worker`."""

    COST_S = 0.0
    SLOW_INDEX = -1  # no slow worker
    SLOW_FACTOR = 1.0
    CONFIG_AS_DICT = True  # see the module docstring

    def __init__(self, config: Any, index: int):
        self.index = index
        self.cost_s = self.COST_S * (self.SLOW_FACTOR if index == self.SLOW_INDEX else 1.0)

    def placement(self) -> dict[str, Any]:
        """Where this worker runs (the keys of ``WorkerActor.placement``)."""
        import ray

        context = ray.get_runtime_context()
        return {
            "worker": self.index,
            "node_id": context.get_node_id(),
            "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(),
            "device": "cpu",
            "pid": os.getpid(),
        }

    def estimate(self, theta: Any, step: int) -> tuple[int, Any, dict[str, Any]]:
        """Sleep, then ``(step, grad, record)``; see the module docstring."""
        start = time.perf_counter()
        time.sleep(self.cost_s)
        value = GRAD_SCALE * (1.0 if (step + self.index) % 2 == 0 else -1.0)
        grad = _map(lambda leaf: np.full(np.shape(leaf), value, np.float32), theta)
        record = {
            "task": "sleep",
            "worker": self.index,
            "meta_loss": META_LOSS,
            "inner_steps": NOMINAL_INNER_STEPS,
            "episodes_ended": 0.0,
            "estimate_seconds": time.perf_counter() - start,
        }
        return step, grad, record


def sleeping_worker(cost_s: float, slow_index: int = -1, slow_factor: float = 1.0) -> type:
    """A :class:`SleepingWorker` whose estimates take ``cost_s`` seconds (``slow_factor`` times
    that for worker ``slow_index``; -1: none)."""
    if cost_s < 0 or slow_factor <= 0:
        raise ValueError(f"cost_s must be >= 0 and slow_factor > 0, got {cost_s}, {slow_factor}")
    attributes = {"COST_S": cost_s, "SLOW_INDEX": slow_index, "SLOW_FACTOR": slow_factor}
    return type("SleepingWorker", (SleepingWorker,), attributes)


def _map(fn: Any, tree: Any) -> Any:
    """``fn`` of every leaf of a tree of dicts, lists and tuples (theta's numpy leaves)."""
    if isinstance(tree, dict):
        return {key: _map(fn, value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_map(fn, value) for value in tree)
    return fn(tree)
