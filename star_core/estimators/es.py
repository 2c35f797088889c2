"""Truncated antithetic evolution strategies (ES) meta-gradient.

Gaussian smoothing of the meta-loss, ``L_sigma(theta) = E_eps[L(theta + eps)]`` with
``eps ~ N(0, sigma^2 I)`` over the flattened theta, has gradient
``E[L(theta + eps) eps] / sigma^2``; its antithetic form (Salimans et al. 2017) is

    g = 1/P sum_j (Lbar+_j - Lbar-_j) eps_j / (2 sigma^2),

with ``Lbar+-_j`` the mean normalized loss of pair ``j``'s truncation run at ``theta +- eps_j``
(docs/algorithm.md, "Truncated ES"). On ``L = 1/2 theta^T A theta`` the smoothed gradient is exactly
``A theta``, and each sample is unbiased for it.

*Truncated* ES unrolls ``K`` steps from a state shared by both signs. The estimate only sees how
theta affects the ``K`` losses of the truncation, not how earlier truncations (which produced the
starting state) depended on theta: it is biased toward short-horizon behaviour (the truncation
bias, Wu et al. 2018; Vicol et al. 2021). PES (``pes.py``) removes that bias.

Choice of the shared state after a truncation: it becomes the ``+`` trajectory's end state. This
costs nothing (advancing with the unperturbed theta would need a third unroll, +50% compute); the
state then lies on a trajectory whose theta differed by ``O(sigma)`` per truncation from the
current theta, a perturbation of the same order as the one the estimate itself applies, and the
truncated estimate ignores the starting state's dependence on theta in either case.

``Lbar`` is the sum of the unmasked losses of the truncation divided by ``K`` (a reset iteration
counts as zero, see ``unroll.py``), so with ``K = T`` from a fresh state it is exactly
``L(theta; T)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from star_core.estimators.unroll import (
    InnerProblem,
    PyTree,
    UnrollOutput,
    perturbed_thetas,
    sign_halves,
    tile_signs,
    unroll,
)


class ESState(NamedTuple):
    """Truncated-ES state: one inner state per pair (shared by both signs) and its step counter.

    inner: inner states with leading axis ``P``.
    steps: ``[P]`` int32 training steps taken in each pair's current episode.
    """

    inner: PyTree
    steps: jax.Array


def es_grad(
    problem: InnerProblem,
    horizon: int,
    sigma: float,
    theta: PyTree,
    state: ESState,
    eps: jax.Array,
    batches: PyTree,
    keys: jax.Array,
    reset_keys: jax.Array,
) -> tuple[PyTree, ESState, UnrollOutput]:
    """One truncated antithetic ES estimate.

    Args:
      problem: the inner problem.
      horizon: episode length ``T`` (static).
      sigma: perturbation scale (``eps`` was drawn from ``N(0, sigma^2 I)``).
      theta: meta-parameters (pytree).
      state: ``ESState`` with ``P`` pairs.
      eps: ``[P, D]`` perturbations of the flattened theta.
      batches: data with leading axes ``[K, P]``; keys: ``[K, P]`` step keys.
      reset_keys: ``[P]`` keys for the fresh inner state of a pair whose episode ends.

    Returns:
      ``(grad, state, record)``: ``grad`` has theta's structure.
    """
    flat_theta, unravel = ravel_pytree(theta)
    num_steps = keys.shape[0]
    thetas = perturbed_thetas(unravel, flat_theta, eps)
    reset_inner = jax.vmap(problem.init, in_axes=(None, 0))(theta, reset_keys)
    inner, steps, record = unroll(
        problem, horizon, thetas, tile_signs(state.inner), state.steps, batches, keys, reset_inner
    )
    pos_losses, neg_losses = sign_halves(record.losses)
    delta = (pos_losses.sum(axis=0) - neg_losses.sum(axis=0)) / num_steps
    flat_grad = jnp.mean(delta[:, None] * eps, axis=0) / (2.0 * sigma**2)
    num_pairs = eps.shape[0]
    keep_positive = jax.tree.map(lambda x: x[:num_pairs], inner)
    return unravel(flat_grad), ESState(inner=keep_positive, steps=steps), record
