"""The outer (meta) optimizer: Adam on theta, with element-wise clipping and outer weight decay.

Meta-training minimizes the regularized meta-objective (docs/algorithm.md, "Outer step";
Harrison, Metz, Sohl-Dickstein 2022, Section 5, "magnitude control via weight decay")::

    J(theta) = L(theta; T) + lambda / 2 * ||theta_mlp||^2

where ``theta_mlp = theta["mlp"]`` holds the weights and biases of the blackbox network. The 7
decay offsets and the nominal scale ``beta_1`` are not decayed (the paper's text). With
``decay_all=True`` every meta-parameter is decayed, as the reference implementation's wrapper does.

``lambda`` follows the reference implementation's and optax's convention
(``optax.add_decayed_weights(lambda)``): the gradient gains ``lambda * theta``. Before this
convention was adopted the penalty was ``lambda * ||theta_mlp||^2`` (gradient ``2 lambda theta``):
an old ``lambda`` equals a new ``2 * lambda``, with identical trajectories.

One outer step, given an estimate ``g_hat`` of ``dL/dtheta`` (from ES or PES)::

    g     = g_hat + lambda * mask * theta              (gradient of the regularizer; mask = mlp)
    g     = clip(g, -c, c)                             (per element, c = 3 by default)
    theta = theta + adam_lr(g)                         (Adam, learning rate about 1e-3)

The regularizer's gradient is part of the meta-gradient, so it is clipped together with the
estimate. Non-finite estimates never reach this transformation: the training loop drops them.

The result is an ordinary ``optax.GradientTransformation`` whose state is a pytree of arrays,
so it is saved leaf by leaf in checkpoints (``star_core.training.checkpoint``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

# The key of theta that holds the blackbox MLP (the only meta-parameters decayed by default).
MLP_KEY = "mlp"


def weight_decay_mask(theta: Any, decay_all: bool) -> Any:
    """A pytree of booleans with theta's structure: True where the outer weight decay applies.

    ``theta`` is a dict of sub-trees; the leaves under ``theta["mlp"]`` are decayed, or every leaf
    when ``decay_all`` is set.
    """
    if not isinstance(theta, dict):
        raise ValueError(f"theta: expected a dict of meta-parameter groups, got {type(theta)!r}")
    return {
        group: jax.tree_util.tree_map(lambda _, g=group: decay_all or g == MLP_KEY, subtree)
        for group, subtree in theta.items()
    }


def outer_optimizer(
    learning_rate: float,
    clip: float,
    weight_decay: float,
    decay_all: bool = False,
) -> optax.GradientTransformation:
    """Adam with per-element clipping of the (regularized) meta-gradient.

    Args:
      learning_rate: Adam's step size (the library's default is 3e-3, docs/results.md).
      clip: each meta-gradient element is clipped to ``[-clip, clip]``.
      weight_decay: ``lambda`` of the penalty ``lambda / 2 * ||theta_mlp||^2`` (its gradient,
        ``lambda * theta_mlp``, is added to the estimate, as ``optax.add_decayed_weights``).
      decay_all: decay every meta-parameter instead of ``theta["mlp"]`` only.

    Returns:
      An ``optax.GradientTransformation``; apply its updates with ``optax.apply_updates``.
    """
    return optax.chain(
        optax.add_decayed_weights(
            weight_decay, mask=lambda theta: weight_decay_mask(theta, decay_all)
        ),
        optax.clip(clip),
        optax.adam(learning_rate),
    )


def all_finite(tree: Any) -> jax.Array:
    """True when every element of every leaf of ``tree`` is finite (a traced boolean scalar)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def guarded_step(
    tx: optax.GradientTransformation, grad: Any, state: Any, theta: Any
) -> tuple[Any, Any, jax.Array]:
    """Apply one outer step, unless ``grad`` has a non-finite element.

    Returns ``(theta, state, applied)``: when ``applied`` is False, theta and the optimizer
    state are returned unchanged (the estimate is dropped, never applied). Branch-free
    (``jnp.where``), so it runs under ``jax.jit``.
    """
    finite = all_finite(grad)
    safe_grad = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, 0.0), grad)
    updates, new_state = tx.update(safe_grad, state, theta)
    new_theta = optax.apply_updates(theta, updates)

    def keep(new: jax.Array, old: jax.Array) -> jax.Array:
        return jnp.where(finite, new, old)

    return (
        jax.tree_util.tree_map(keep, new_theta, theta),
        jax.tree_util.tree_map(keep, new_state, state),
        finite,
    )
