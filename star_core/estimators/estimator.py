"""Estimator objects: configuration, state initialization and one jitted step per truncation.

``make_estimator(task, lopt, config)`` returns an ``Estimator`` with

- ``init_state(theta, key) -> state``: ``P`` antithetic pairs, each on its own task copy, with
  step counters staggered uniformly in ``[0, T)`` so that episode ends spread over time
  (docs/algorithm.md, "Episodes and resets"). A pair starting at step ``s`` begins from a fresh
  model, so its first episode is ``T - s`` steps long; every later episode is full length.
- ``estimate(theta, key, state) -> (grad, state, metrics)``: one truncation of ``K`` inner steps
  for both signs of every pair, and the ES or PES meta-gradient (``es.py``, ``pes.py``). The data
  order comes from ``key``: an integer seed drawn from it selects
  ``task.batches(seed, copies=P)``, whose first ``K`` batches are stacked to ``[K, P, ...]``.

Everything per truncation (perturbations, fresh reset states, the ``scan``/``vmap`` unroll, the
estimate, the metrics) is one ``jax.jit``-compiled function, compiled once per ``Estimator``.
The state argument is *donated* to it: after ``estimate(theta, key, state)`` the old ``state``'s
buffers are invalid; use the returned state (copy first, e.g. ``jax.tree.map(jnp.copy, s)``, to
evaluate twice from one state). Non-finite gradients are returned as they are (the training
loop drops them); losses are already normalized by the task.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from star_core.errors import ConfigError
from star_core.estimators.es import ESState, es_grad
from star_core.estimators.inner import make_inner_problem
from star_core.estimators.pes import PESState, pes_grad
from star_core.estimators.unroll import InnerProblem, PyTree, tile_signs

# Estimator kinds and their kernels.
KINDS = ("pes", "es")
# Data seeds are drawn from [0, MAX_DATA_SEED) (int32 range, accepted by every task).
MAX_DATA_SEED = 2**31 - 1

# A batch source maps (seed, num_pairs, num_steps) to a pytree of arrays shaped [K, P, ...].
BatchSource = Callable[[int, int, int], PyTree]

# Defaults of EstimatorConfig: the reference implementation's starting values
# (docs/algorithm.md, "Meta-gradient estimators").
DEFAULT_SIGMA = 0.01  # standard deviation of the antithetic perturbation of theta
DEFAULT_TRUNCATION_LENGTH = 50  # inner steps K per truncation
DEFAULT_HORIZON = 2000  # episode length T in inner steps
DEFAULT_NUM_PAIRS = 8  # antithetic pairs P per estimator


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """Static configuration of a meta-gradient estimator.

    kind: "pes" (unbiased) or "es" (truncated antithetic ES).
    sigma: standard deviation of the Gaussian perturbation of theta.
    truncation_length: inner steps ``K`` per estimate (per sign and pair).
    horizon: episode length ``T`` in inner steps; requires ``truncation_length <= horizon``.
    num_pairs: antithetic pairs ``P`` (each a task copy; ``2P`` inner runs per truncation).
    """

    kind: str = "pes"
    sigma: float = DEFAULT_SIGMA
    truncation_length: int = DEFAULT_TRUNCATION_LENGTH
    horizon: int = DEFAULT_HORIZON
    num_pairs: int = DEFAULT_NUM_PAIRS

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                "kind", f"EstimatorConfig.kind must be one of {KINDS}, got {self.kind!r}"
            )
        sigma = self.sigma
        if not (
            isinstance(sigma, int | float)
            and not isinstance(sigma, bool)
            and math.isfinite(sigma)
            and sigma > 0
        ):
            raise ConfigError(
                "sigma", f"EstimatorConfig.sigma must be a finite positive number, got {sigma!r}"
            )
        for name in ("truncation_length", "horizon", "num_pairs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    name, f"EstimatorConfig.{name} must be an integer >= 1, got {value!r}"
                )
        if self.truncation_length > self.horizon:
            raise ConfigError(
                "truncation_length",
                "EstimatorConfig.truncation_length must be <= horizon "
                f"(got {self.truncation_length} > {self.horizon})",
            )


def task_batch_source(task: Any) -> BatchSource:
    """Stack the first ``K`` batches of ``task.batches(seed, copies=P)`` to ``[K, P, ...]``."""

    def source(seed: int, num_pairs: int, num_steps: int) -> PyTree:
        stream = task.batches(seed, split="train", copies=num_pairs)
        batches = list(itertools.islice(stream, num_steps))
        if len(batches) < num_steps:
            raise ValueError(
                f"task {task.name!r} yielded {len(batches)} batches, {num_steps} needed"
            )
        return jax.tree.map(lambda *xs: np.stack(xs), *batches)

    return source


class Estimator:
    """A meta-gradient estimator bound to one inner problem, data source and config."""

    def __init__(self, problem: InnerProblem, batch_source: BatchSource, config: EstimatorConfig):
        self.problem = problem
        self.batch_source = batch_source
        self.config = config
        self._kernel = pes_grad if config.kind == "pes" else es_grad
        self._truncation = jax.jit(self._truncation_impl, donate_argnums=(1,))

    def init_state(self, theta: PyTree, key: jax.Array) -> PESState | ESState:
        """Fresh inner problems for every pair, step counters staggered uniformly in ``[0, T)``."""
        cfg = self.config
        init_key, stagger_key = jax.random.split(key)
        init_keys = jax.random.split(init_key, cfg.num_pairs)
        inner = jax.vmap(self.problem.init, in_axes=(None, 0))(theta, init_keys)
        steps = jax.random.randint(stagger_key, (cfg.num_pairs,), 0, cfg.horizon, jnp.int32)
        if cfg.kind == "es":
            return ESState(inner=inner, steps=steps)
        flat_theta, _ = ravel_pytree(theta)
        accumulator = jnp.zeros((cfg.num_pairs, flat_theta.size), flat_theta.dtype)
        return PESState(inner=tile_signs(inner), steps=steps, accumulator=accumulator)

    def estimate(
        self, theta: PyTree, key: jax.Array, state: PESState | ESState
    ) -> tuple[PyTree, PESState | ESState, dict[str, float]]:
        """One truncation: ``(grad, new_state, metrics)``; ``state`` is donated (see module doc).

        metrics: ``meta_loss`` (mean normalized inner loss over the truncation's training steps,
        both signs and all pairs), ``inner_steps`` (iterations run, both signs: ``2 P K``),
        ``episodes_ended`` (pairs whose episode ended and restarted in this truncation).
        """
        cfg = self.config
        data_key, kernel_key = jax.random.split(key)
        seed = int(jax.random.randint(data_key, (), 0, MAX_DATA_SEED))
        batches = self.batch_source(seed, cfg.num_pairs, cfg.truncation_length)
        grad, state, stats = self._truncation(theta, state, batches, kernel_key)
        stats = jax.device_get(stats)
        metrics = {name: float(value) for name, value in stats.items()}
        metrics["inner_steps"] = float(2 * cfg.num_pairs * cfg.truncation_length)
        return grad, state, metrics

    def _truncation_impl(
        self, theta: PyTree, state: Any, batches: PyTree, key: jax.Array
    ) -> tuple[PyTree, Any, dict[str, jax.Array]]:
        cfg = self.config
        num_pairs, num_steps = cfg.num_pairs, cfg.truncation_length
        eps_key, steps_key, reset_key = jax.random.split(key, 3)
        flat_theta, _ = ravel_pytree(theta)
        eps = cfg.sigma * jax.random.normal(eps_key, (num_pairs, flat_theta.size), flat_theta.dtype)
        keys = jax.random.split(steps_key, num_steps * num_pairs)
        keys = keys.reshape((num_steps, num_pairs) + keys.shape[1:])
        reset_keys = jax.random.split(reset_key, num_pairs)
        grad, state, record = self._kernel(
            self.problem, cfg.horizon, cfg.sigma, theta, state, eps, batches, keys, reset_keys
        )
        valid = jnp.sum(record.masks)
        stats = {
            "meta_loss": jnp.sum(record.losses) / jnp.maximum(2.0 * valid, 1.0),
            "episodes_ended": num_steps * num_pairs - valid,
        }
        return grad, state, stats


def make_estimator(task: Any, lopt: Any, config: EstimatorConfig) -> Estimator:
    """The ``Estimator`` that meta-trains ``lopt`` on ``task`` (data from ``task.batches``)."""
    return Estimator(make_inner_problem(task, lopt), task_batch_source(task), config)
