"""Machinery shared by the per-parameter learned optimizers (Blackbox, STAR, Hyperparam).

One update, for every tensor independently (docs/algorithm.md): fold the gradient into the
accumulators (``features.update_accumulators``), build the 39 input features, run the MLP on every
entry (``mlp.mlp_apply_groups``), and turn its K outputs into a step with the variant's head rule.
The state is ``LearnedOptState(t, accumulators)``: ``t`` the number of updates already applied
(int32 scalar), ``accumulators`` a pytree with the params' structure whose leaves are
``features.TensorAccumulators``. Everything is branch-free in ``theta`` and ``state``, so the
transformation runs under ``jit``, ``vmap`` and ``lax.scan``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from star_core.features import (
    TensorAccumulators,
    as_rank1,
    decays_from_offsets,
    feature_groups,
    init_accumulators,
    update_accumulators,
)
from star_core.optimizers.mlp import mlp_apply_groups

# head_rule(K outputs of shape S, grad S (float32), accumulators) -> step S to add to the params.
HeadRule = Callable[[list[jax.Array], jax.Array, TensorAccumulators], jax.Array]


class LearnedOptState(NamedTuple):
    """State of a learned optimizer: step counter and per-tensor accumulators."""

    t: jax.Array
    accumulators: Any


def _init_state(params: optax.Params) -> LearnedOptState:
    accumulators = jax.tree.map(lambda p: init_accumulators(as_rank1(jnp.asarray(p))), params)
    return LearnedOptState(t=jnp.zeros((), jnp.int32), accumulators=accumulators)


def learned_transformation(
    theta: dict[str, Any], head_rule: HeadRule
) -> optax.GradientTransformation:
    """An optax transformation that applies ``head_rule`` to the MLP outputs of ``theta``."""
    decays = decays_from_offsets(theta["decays"])

    def update_tensor(
        grad: jax.Array, param: jax.Array, acc: TensorAccumulators, step: jax.Array
    ) -> tuple[jax.Array, TensorAccumulators]:
        grad32 = as_rank1(grad).astype(jnp.float32)
        acc = update_accumulators(acc, grad32, decays)
        groups = feature_groups(grad32, as_rank1(param), acc)
        outputs = mlp_apply_groups(theta["mlp"], groups, step)
        update = head_rule(outputs, grad32, acc)
        return update.reshape(jnp.shape(param)).astype(param.dtype), acc

    def update_fn(
        grads: optax.Updates, state: LearnedOptState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, LearnedOptState]:
        if params is None:
            raise ValueError("learned optimizers need params: call update(grads, state, params)")
        pairs = jax.tree.map(
            lambda g, p, a: update_tensor(g, p, a, state.t), grads, params, state.accumulators
        )
        updates = jax.tree.map(lambda _, pair: pair[0], grads, pairs)
        accumulators = jax.tree.map(lambda _, pair: pair[1], grads, pairs)
        return updates, LearnedOptState(t=state.t + 1, accumulators=accumulators)

    return optax.GradientTransformation(_init_state, update_fn)
