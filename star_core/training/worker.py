"""A worker: the inner half of meta-training (ES/PES estimates for a given theta).

A worker owns one estimator per task of its :class:`MetaTrainConfig` (``make_estimator``:
the jitted truncated unroll) and their persistent states (the PES particles: 2P inner models,
their optimizer states and episode step counters). Asked for an estimate at outer step ``s``,
worker ``w`` picks the task and the key of ``(seed, s, w)`` (``keys.py``) and runs one
truncation. A worker never sees the outer optimizer; the learner (``learner.py``) averages what
the workers return.

States start at the first estimate (from theta at that time and the key of ``(seed, w, task)``)
and are replaced by each estimate. ``meta_train`` checkpoints them (``states`` /
``load_states``) so that a resumed run is bit-exact; a service worker that restarts simply
starts fresh particles.
"""

from __future__ import annotations

import time
from typing import Any

from star_core.estimators import make_estimator
from star_core.training.config import MetaTrainConfig
from star_core.training.keys import estimate_key, estimator_init_key, run_keys, task_index


class EstimationWorker:
    """Worker ``index`` of a meta-training run; see the module docstring."""

    def __init__(self, config: MetaTrainConfig, index: int = 0):
        if index < 0:
            raise ValueError(f"worker index must be >= 0, got {index}")
        self.config = config
        self.index = index
        self.keys = run_keys(config.seed)
        lopt = config.make_optimizer()
        self.estimators = tuple(
            make_estimator(config.make_task(name), lopt, config.estimator) for name in config.tasks
        )
        self.states: tuple | None = None

    def init_states(self, theta: Any) -> tuple:
        """Fresh estimator states (one per task) for ``theta``; also kept as ``self.states``."""
        self.states = tuple(
            est.init_state(theta, estimator_init_key(self.keys, self.index, i))
            for i, est in enumerate(self.estimators)
        )
        return self.states

    def load_states(self, states: tuple) -> None:
        """Continue from saved estimator states (one per task, in ``config.tasks`` order)."""
        if len(states) != len(self.estimators):
            raise ValueError(f"expected {len(self.estimators)} estimator states, got {len(states)}")
        self.states = tuple(states)

    def estimate(self, theta: Any, step: int) -> tuple[Any, dict[str, Any]]:
        """This worker's estimate of ``dL/dtheta`` at outer step ``step``, and its metrics.

        Metrics: ``task``, ``worker``, the estimator's (``meta_loss``, ``inner_steps``,
        ``episodes_ended``) and ``estimate_seconds``. The gradient may be non-finite (the
        learner drops it).
        """
        start = time.perf_counter()
        states = self.init_states(theta) if self.states is None else self.states
        index = task_index(self.keys, step, self.index, len(self.estimators))
        key = estimate_key(self.keys, step, self.index)
        grad, state, metrics = self.estimators[index].estimate(theta, key, states[index])
        self.states = states[:index] + (state,) + states[index + 1 :]
        record = {
            "task": self.config.tasks[index],
            "worker": self.index,
            **metrics,
            "estimate_seconds": time.perf_counter() - start,
        }
        return grad, record
