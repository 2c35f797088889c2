"""The per-parameter MLP shared by the learned optimizers (spec §2.3).

``39 -> 4 -> ReLU -> 4 -> ReLU -> K``, applied independently to the feature vector of every
parameter entry. Weights are truncated normal (cut at 2 standard deviations) with standard
deviation ``1/sqrt(fan_in)``, biases zero. Layout (a plain dict, readable in any checkpoint):
``{"w0": (39, 4), "b0": (4,), "w1": (4, 4), "b1": (4,), "w2": (4, K), "b2": (K,)}``.

``mlp_apply`` is the plain definition on the materialized ``S + (39,)`` features.
``mlp_apply_groups`` computes the same function without materializing them: the per-channel
RMS normalization is a per-tensor scale, so it is folded into the rows of ``w0``; the 11 time
features are equal for all entries, so their contribution ``time @ w0[28:]`` is folded into
``b0``; and row/column statistics are multiplied by their rows of ``w0`` before being broadcast.
All contractions have at most 4 input channels and are written as broadcast multiply-adds, which
XLA fuses into a single elementwise pass over the tensor (no (N, 39) intermediate).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from star_core.features import (
    NUM_FEATURES,
    NUM_NORMALIZED_FEATURES,
    inverse_rms,
    time_features,
)

HIDDEN_WIDTH = 4  # width of both hidden layers
TRUNCATION = 2.0  # weights are drawn from a normal truncated at +/- 2 standard deviations


def init_mlp(key: jax.Array, num_outputs: int) -> dict[str, jax.Array]:
    """Fresh MLP parameters with ``num_outputs`` heads."""
    sizes = (NUM_FEATURES, HIDDEN_WIDTH, HIDDEN_WIDTH, num_outputs)
    keys = jax.random.split(key, len(sizes) - 1)
    mlp = {}
    for layer, (layer_key, fan_in, fan_out) in enumerate(
        zip(keys, sizes[:-1], sizes[1:], strict=True)
    ):
        normal = jax.random.truncated_normal(
            layer_key, -TRUNCATION, TRUNCATION, (fan_in, fan_out), jnp.float32
        )
        mlp[f"w{layer}"] = normal / math.sqrt(fan_in)
        mlp[f"b{layer}"] = jnp.zeros((fan_out,), jnp.float32)
    return mlp


def mlp_apply(mlp: dict[str, jax.Array], features: jax.Array) -> jax.Array:
    """Reference forward pass on materialized features ``(..., 39) -> (..., K)``."""
    hidden = jax.nn.relu(features @ mlp["w0"] + mlp["b0"])
    hidden = jax.nn.relu(hidden @ mlp["w1"] + mlp["b1"])
    return hidden @ mlp["w2"] + mlp["b2"]


def contract(x: jax.Array, weight: jax.Array) -> jax.Array:
    """``x @ weight`` for a handful of input channels, as fusable multiply-adds.

    ``x``: (..., c) with c small; ``weight``: (c, n). Returns (..., n).
    """
    total = x[..., 0:1] * weight[0]
    for channel in range(1, x.shape[-1]):
        total = total + x[..., channel : channel + 1] * weight[channel]
    return total


def mlp_apply_groups(
    mlp: dict[str, jax.Array], groups: tuple[jax.Array, ...], step: jax.Array
) -> jax.Array:
    """Forward pass from the un-normalized feature groups of ``features.feature_groups``.

    Equal to ``mlp_apply(mlp, build_features(...))``; returns S + (K,).
    """
    w0 = mlp["w0"]
    pre = mlp["b0"] + time_features(step) @ w0[NUM_NORMALIZED_FEATURES:]
    row = 0
    for x in groups:
        width = x.shape[-1]
        scaled_w0 = w0[row : row + width] * inverse_rms(x)[:, None]
        pre = pre + contract(x, scaled_w0)
        row += width
    hidden = jax.nn.relu(pre)
    hidden = jax.nn.relu(contract(hidden, mlp["w1"]) + mlp["b1"])
    return contract(hidden, mlp["w2"]) + mlp["b2"]
