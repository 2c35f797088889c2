"""Truncated unrolls of many antithetic inner problems at once.

An *inner problem* is two pure functions (``InnerProblem``):

- ``init(theta, key) -> inner_state``: a fresh inner problem (new model parameters drawn from
  ``key``, fresh optimizer state). The estimators call it with the unperturbed ``theta``; it must
  not depend on ``theta`` in a way that matters for the meta-gradient (a reset is theta-free).
- ``step(theta, inner_state, batch, key) -> (inner_state, loss)``: one inner training step, where
  ``loss`` is the (normalized, finite) training loss of ``batch`` **before** the update, i.e. the
  term ``L_t(phi_t)`` of the meta-loss ``L(theta; T) = 1/T sum_{t=1..T} L_t(phi_t)``
  (docs/algorithm.md, "Meta-loss"; paper eq. 3).

``unroll`` runs ``K`` steps of ``2P`` such problems: the leading axis of every per-trajectory
array is ``2P``, the first ``P`` entries are the ``+`` members of the antithetic pairs
(``theta + eps_j``) and the last ``P`` the ``-`` members (``theta - eps_j``). One ``jax.vmap``
covers both signs and all pairs, one ``jax.lax.scan`` covers the ``K`` steps. The two members of a
pair see the same batch and the same step key; the batch of pair ``j`` comes from task copy ``j``.

Episodes and resets. Each pair has a step counter ``steps_j`` (number of training steps taken in
its current episode, shared by both signs). At an iteration where ``steps_j >= T`` (the horizon)
the episode has ended: the pair's inner states are replaced by a fresh state and the counter
returns to 0; that *reset iteration* takes no training step and its loss is masked out
(``mask = 0``). An episode therefore occupies ``T + 1`` iterations (``T`` training steps and one
reset). Per trajectory, resets are branch-free (``jnp.where``, as everything runs under ``vmap``
and ``scan``); one scalar ``lax.cond`` (does any pair reset at this iteration?) skips that
full-state select on the iterations where no pair resets, which are most of them.

The fresh state used at a reset is computed once per truncation and per pair (``reset_inner``),
so a truncation may contain at most one reset per pair: ``K <= T + 1``. The PES estimator needs
the same condition (it splits a truncation at no more than one episode end).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class InnerProblem(NamedTuple):
    """A trainable inner problem: ``init(theta, key)`` and ``step(theta, state, batch, key)``."""

    init: Callable[[PyTree, jax.Array], PyTree]
    step: Callable[[PyTree, PyTree, PyTree, jax.Array], tuple[PyTree, jax.Array]]


class UnrollOutput(NamedTuple):
    """Per-iteration record of a truncation.

    losses: ``[K, 2P]`` losses before each update (0 at masked iterations; ``+`` then ``-``).
    masks: ``[K, P]`` 1.0 where the iteration was a training step, 0.0 at a reset iteration.
    """

    losses: jax.Array
    masks: jax.Array


def tile_signs(tree: PyTree) -> PyTree:
    """Repeat every leaf along its leading axis: ``[P, ...] -> [2P, ...]`` (``+``, then ``-``)."""
    return jax.tree.map(lambda x: jnp.concatenate([x, x], axis=0), tree)


def tree_where(condition: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise ``jnp.where`` with a per-trajectory ``condition`` of shape ``[N]``."""

    def select(a: jax.Array, b: jax.Array) -> jax.Array:
        cond = condition.reshape(condition.shape + (1,) * (a.ndim - 1))
        return jnp.where(cond, a, b)

    return jax.tree.map(select, on_true, on_false)


def unroll(
    problem: InnerProblem,
    horizon: int,
    thetas: PyTree,
    inner: PyTree,
    steps: jax.Array,
    batches: PyTree,
    keys: jax.Array,
    reset_inner: PyTree,
) -> tuple[PyTree, jax.Array, UnrollOutput]:
    """Unroll ``2P`` inner problems for ``K`` iterations with resets at the horizon.

    Args:
      problem: the inner problem.
      horizon: episode length ``T`` in training steps (static).
      thetas: meta-parameters per trajectory, leading axis ``2P`` (``+`` block then ``-`` block).
      inner: inner states, leading axis ``2P``.
      steps: ``[P]`` int32 training steps already taken in each pair's episode.
      batches: data with leading axes ``[K, P]`` (shared by the two signs of a pair).
      keys: ``[K, P]`` step keys (shared by the two signs of a pair).
      reset_inner: ``[P]`` fresh inner states used if a pair's episode ends in this truncation.

    Returns:
      ``(inner, steps, UnrollOutput)`` after the ``K`` iterations.
    """
    reset_both = tile_signs(reset_inner)
    train_step = jax.vmap(problem.step)

    def body(
        carry: tuple[PyTree, jax.Array], xs: tuple[PyTree, jax.Array]
    ) -> tuple[tuple[PyTree, jax.Array], tuple[jax.Array, jax.Array]]:
        inner, steps = carry
        batch, key = xs
        done = steps >= horizon
        stepped, loss = train_step(thetas, inner, tile_signs(batch), tile_signs(key))
        done_both = tile_signs(done)
        # Resets are rare (P / (T + 1) per iteration): skip the full-state select otherwise.
        inner = jax.lax.cond(
            jnp.any(done),
            lambda: tree_where(done_both, reset_both, stepped),
            lambda: stepped,
        )
        loss = jnp.where(done_both, 0.0, loss)
        steps = jnp.where(done, 0, steps + 1)
        return (inner, steps), (loss, 1.0 - done.astype(loss.dtype))

    (inner, steps), (losses, masks) = jax.lax.scan(body, (inner, steps), (batches, keys))
    return inner, steps, UnrollOutput(losses=losses, masks=masks)


def perturbed_thetas(
    unravel: Callable[[jax.Array], PyTree], flat_theta: jax.Array, eps: jax.Array
) -> PyTree:
    """Stack ``theta + eps_j`` (first ``P``) and ``theta - eps_j`` (last ``P``) as pytrees."""
    flat = jnp.concatenate([flat_theta + eps, flat_theta - eps], axis=0)
    return jax.vmap(unravel)(flat)


def sign_halves(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split the ``2P`` axis (axis 1 of ``[K, 2P]`` records) into ``(+, -)`` halves."""
    num_pairs = x.shape[1] // 2
    return x[:, :num_pairs], x[:, num_pairs:]
