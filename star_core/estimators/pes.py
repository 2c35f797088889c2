"""Persistent evolution strategies (PES) meta-gradient (Vicol, Metz, Sohl-Dickstein, ICML 2021).

Truncated ES (``es.py``) is biased because it ignores how theta shaped the state a truncation
starts from. PES removes the bias: the ``+`` and ``-`` inner states of every pair evolve
separately and persist across truncations, and each pair keeps an accumulator ``A_j``, the sum
of the perturbations its trajectories have received so far in the current episode. Within an
episode the ``+`` trajectory has seen ``theta + eps_1, ..., theta + eps_i`` (one fresh
``eps ~ N(0, sigma^2 I)`` per truncation) and the ``-`` trajectory the negatives, so by the
score-function identity, summed over the truncations ``i`` of an episode,

    grad E[sum_t l_t] = sum_i E[(L+_i - L-_i) (eps_1 + ... + eps_i)] / (2 sigma^2),

where ``L+-_i`` is the loss of the steps of truncation ``i``. Per truncation, with
``A~_j = A_j + eps_j`` (docs/algorithm.md, "PES"):

    g_j = (l_old_j * A~_j + l_new_j * eps_j) / (2 sigma^2),     g = 1/P sum_j g_j,

where ``l_old_j`` is the ``+`` minus ``-`` loss of the steps before an episode end inside the
truncation (they belong to the episode that accumulated ``A~_j``) and ``l_new_j`` that of the
steps after it (the new episode has only seen ``eps_j``). Afterwards ``A_j`` becomes ``A~_j``, or,
after an episode end, ``eps_j`` if steps of the new episode used it in this truncation and 0 if the
end was the truncation's last iteration (then no new-episode loss depends on ``eps_j``; this only
removes a zero-mean term, lowering variance).

Loss scale: ``l_old``/``l_new`` are sums of unmasked losses divided by ``K``. An episode spans
``T + 1`` iterations (``T`` steps and a masked reset), so with starts staggered uniformly, the mean
of ``g`` over truncations is ``T / (T + 1) * grad L_sigma(theta; T)`` (each loss term is in a given
truncation with probability ``K / (T + 1)``): a constant factor, immaterial under Adam. Summing
``K / T * g`` over the truncations of one episode gives exactly the unbiased estimate of
``grad L(theta; T)``.
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
    unroll,
)


class PESState(NamedTuple):
    """PES state for ``P`` antithetic pairs.

    inner: inner states with leading axis ``2P`` (``+`` members, then ``-`` members).
    steps: ``[P]`` int32 training steps taken in each pair's current episode.
    accumulator: ``[P, D]`` sum of the perturbations applied in the current episode.
    """

    inner: PyTree
    steps: jax.Array
    accumulator: jax.Array


def split_at_episode_end(record: UnrollOutput) -> tuple[jax.Array, jax.Array]:
    """Weights ``[K, P]`` of the iterations before / after the (at most one) episode end."""
    ended = 1.0 - record.masks
    at_or_after_end = jnp.cumsum(ended, axis=0) > 0
    before = jnp.where(at_or_after_end, 0.0, record.masks)
    after = jnp.where(at_or_after_end, record.masks, 0.0)
    return before, after


def pes_grad(
    problem: InnerProblem,
    horizon: int,
    sigma: float,
    theta: PyTree,
    state: PESState,
    eps: jax.Array,
    batches: PyTree,
    keys: jax.Array,
    reset_keys: jax.Array,
) -> tuple[PyTree, PESState, UnrollOutput]:
    """One PES estimate; arguments as in ``es.es_grad`` with a ``PESState``.

    Returns:
      ``(grad, state, record)``: ``grad`` has theta's structure; the new state holds the
      persisted ``+``/``-`` inner states, step counters and accumulators.
    """
    flat_theta, unravel = ravel_pytree(theta)
    num_steps = keys.shape[0]
    thetas = perturbed_thetas(unravel, flat_theta, eps)
    reset_inner = jax.vmap(problem.init, in_axes=(None, 0))(theta, reset_keys)
    inner, steps, record = unroll(
        problem, horizon, thetas, state.inner, state.steps, batches, keys, reset_inner
    )
    before, after = split_at_episode_end(record)
    pos_losses, neg_losses = sign_halves(record.losses)
    delta = pos_losses - neg_losses
    delta_old = jnp.sum(delta * before, axis=0) / num_steps
    delta_new = jnp.sum(delta * after, axis=0) / num_steps

    tilde = state.accumulator + eps
    per_pair = delta_old[:, None] * tilde + delta_new[:, None] * eps
    flat_grad = jnp.mean(per_pair, axis=0) / (2.0 * sigma**2)

    ended = jnp.any(record.masks < 1.0, axis=0)[:, None]
    new_used_eps = jnp.any(after > 0.0, axis=0)[:, None]
    after_end = jnp.where(new_used_eps, eps, 0.0)
    accumulator = jnp.where(ended, after_end, tilde)
    new_state = PESState(inner=inner, steps=steps, accumulator=accumulator)
    return unravel(flat_grad), new_state, record
