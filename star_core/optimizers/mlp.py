"""The per-parameter MLP shared by the learned optimizers (docs/algorithm.md, "Network").

``39 -> 4 -> ReLU -> 4 -> ReLU -> K``, applied independently to the feature vector of every
parameter entry. Weights are a standard normal truncated at +-2 and scaled by ``1/sqrt(fan_in)``
(standard deviation ~0.88/sqrt(fan_in)), biases zero. Layout (a plain dict, readable in any
checkpoint):
``{"w0": (39, 4), "b0": (4,), "w1": (4, 4), "b1": (4,), "w2": (4, K), "b2": (K,)}``.

``mlp_apply`` is the plain definition on the materialized ``S + (39,)`` features.
``mlp_apply_groups`` computes the same function without materializing them: the per-channel
RMS normalization is a per-tensor scale, so it is folded into the rows of ``w0``; the 11 time
features are equal for all entries, so their contribution ``time @ w0[28:]`` is folded into
``b0``; and row/column statistics are multiplied by their rows of ``w0`` before being broadcast.
Every channel and hidden unit is kept as its own array of shape S and the layers are written as
multiply-adds of those arrays, which XLA fuses into elementwise passes over the tensor (no (N, 39)
intermediate, and row/column statistics are broadcast inside the fused loop).
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
        # Truncated-normal fan-in init: N(0, 1) cut at +-2, / sqrt(fan_in); std ~0.88/sqrt(fan_in).
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


def _combine(channels: list[jax.Array], weight: jax.Array, bias: jax.Array) -> list[jax.Array]:
    """``[sum_c channels[c] * weight[c, j] + bias[j] for j]``: a tiny dense layer, elementwise."""
    outputs = []
    for j in range(weight.shape[1]):
        total = bias[j]
        for c, channel in enumerate(channels):
            total = total + channel * weight[c, j]
        outputs.append(total)
    return outputs


def mlp_apply_groups(
    mlp: dict[str, jax.Array], groups: tuple[jax.Array, ...], step: jax.Array
) -> list[jax.Array]:
    """Forward pass from the un-normalized feature groups of ``features.feature_groups``.

    Returns the K heads as a list of arrays of shape S; stacked on a last axis they equal
    ``mlp_apply(mlp, build_features(...))``.
    """
    w0 = mlp["w0"]
    first_bias = mlp["b0"] + time_features(step) @ w0[NUM_NORMALIZED_FEATURES:]
    channels: list[jax.Array] = []
    rows: list[jax.Array] = []
    for x in groups:
        scale = inverse_rms(x)
        for c in range(x.shape[0]):
            channels.append(x[c])
            rows.append(w0[len(rows)] * scale[c])
    hidden = [jax.nn.relu(h) for h in _combine(channels, jnp.stack(rows), first_bias)]
    hidden = [jax.nn.relu(h) for h in _combine(hidden, mlp["w1"], mlp["b1"])]
    return _combine(hidden, mlp["w2"], mlp["b2"])
