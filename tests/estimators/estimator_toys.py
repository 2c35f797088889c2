"""Tiny hand-made inner problems with known meta-losses, shared by the estimator tests.

- ``quadratic_meta_loss(A)``: every step's loss is ``1/2 theta^T A theta`` whatever the inner
  state, so the Gaussian-smoothed meta-gradient is exactly ``A theta``.
- ``sgd_on_quadratic(h, groups)``: inner parameters ``x ~ N(0, I)`` trained by plain gradient
  descent on ``1/2 sum_i h_i x_i^2`` with learning rate ``exp(theta["log_lr"][groups[i]])``.
  ``x_t = (1 - lr h)^t x_0``, so the expected meta-loss is
  ``L(theta; T) = 1/T sum_{t<T} 1/2 sum_i h_i (1 - lr_i h_i)^(2t)`` in closed form.
- ``counter``: the state counts steps from a start value; the loss is the count plus
  ``theta["offset"]``, which makes resets and masks readable by hand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from star_core.estimators import InnerProblem


def quadratic_meta_loss(a_matrix: jax.Array) -> InnerProblem:
    def init(theta, key):
        return jnp.zeros(())

    def step(theta, state, batch, key):
        w = theta["w"]
        return state + 1.0, 0.5 * w @ a_matrix @ w

    return InnerProblem(init=init, step=step)


def sgd_on_quadratic(h: np.ndarray, groups: np.ndarray) -> InnerProblem:
    h = jnp.asarray(h)

    def init(theta, key):
        return jax.random.normal(key, h.shape)

    def step(theta, x, batch, key):
        lr = jnp.exp(theta["log_lr"][groups])
        return x - lr * h * x, 0.5 * jnp.sum(h * x**2)

    return InnerProblem(init=init, step=step)


def sgd_expected_meta_loss(theta, h, groups, horizon: int, truncation: int | None = None):
    """Closed-form expected meta-loss; with ``truncation`` K, the truncated-ES target.

    The truncated target holds each truncation's starting state fixed (``stop_gradient``), for a
    run starting at step 0 with truncations of length K and an episode of ``horizon`` steps.
    """
    lr = jnp.exp(theta["log_lr"][groups])
    decay = (1.0 - lr * jnp.asarray(h)) ** 2
    total = 0.0
    for t in range(horizon):
        if truncation is None:
            factor = decay**t
        else:
            start = (t // truncation) * truncation
            factor = jax.lax.stop_gradient(decay**start) * decay ** (t - start)
        total = total + 0.5 * jnp.sum(jnp.asarray(h) * factor)
    return total / horizon


COUNTER_START = 100.0  # count of a fresh counter state (init)


def counter() -> InnerProblem:
    def init(theta, key):
        return jnp.asarray(COUNTER_START)

    def step(theta, count, batch, key):
        return count + 1.0, count + theta["offset"] + batch

    return InnerProblem(init=init, step=step)


def zero_batches(num_steps: int, num_pairs: int) -> jax.Array:
    return jnp.zeros((num_steps, num_pairs))


def step_keys(key: jax.Array, num_steps: int, num_pairs: int) -> jax.Array:
    keys = jax.random.split(key, num_steps * num_pairs)
    return keys.reshape((num_steps, num_pairs) + keys.shape[1:])
