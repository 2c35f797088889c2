"""Pure-JAX layers: each is an ``init_*(key, ...) -> params`` and an ``apply`` function.

Parameters are plain dicts of arrays. Weights are drawn from a truncated normal (cut at two
standard deviations) rescaled to standard deviation ``1/sqrt(fan_in)`` (LeCun initialization,
LeCun et al. 1998); biases start at zero, normalization scales at one.

- dense: ``y = x W + b``;
- conv: 2-D convolution, NHWC inputs, HWIO kernels, SAME padding;
- layer norm (Ba et al. 2016): ``y = g (x - mean) / sqrt(var + eps) + b`` over the last axis;
- batch norm (Ioffe & Szegedy 2015): the same over all axes but the channel axis, with the
  statistics of the current batch (no running averages: the tasks' losses stay pure functions of
  ``(params, key, batch)``);
- embedding: a table lookup, entries with standard deviation ``1/sqrt(width)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Truncation of the initial weight distribution, in standard deviations.
TRUNCATION = 2.0
# Standard deviation of a unit normal truncated to [-2, 2]; dividing by it restores unit std.
TRUNCATED_STD = 0.87962566
# Variance floor of the normalization layers.
NORM_EPSILON = 1e-5


def lecun_normal(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    """Truncated-normal weights with standard deviation ``1/sqrt(fan_in)``."""
    unit = jax.random.truncated_normal(key, -TRUNCATION, TRUNCATION, shape, jnp.float32)
    return unit * (1.0 / (TRUNCATED_STD * jnp.sqrt(fan_in)))


def init_dense(key: jax.Array, fan_in: int, fan_out: int) -> dict:
    return {"w": lecun_normal(key, (fan_in, fan_out), fan_in), "b": jnp.zeros((fan_out,))}


def dense(params: dict, x: jax.Array) -> jax.Array:
    return x @ params["w"] + params["b"]


def init_conv(key: jax.Array, in_channels: int, out_channels: int, size: int = 3) -> dict:
    fan_in = size * size * in_channels
    shape = (size, size, in_channels, out_channels)
    return {"w": lecun_normal(key, shape, fan_in), "b": jnp.zeros((out_channels,))}


def conv(params: dict, x: jax.Array, stride: int = 1) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x,
        params["w"],
        window_strides=(stride, stride),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y + params["b"]


def init_norm(width: int) -> dict:
    return {"scale": jnp.ones((width,)), "offset": jnp.zeros((width,))}


def layer_norm(params: dict, x: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + NORM_EPSILON) * params["scale"] + params["offset"]


def batch_norm(params: dict, x: jax.Array) -> jax.Array:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.var(x, axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + NORM_EPSILON) * params["scale"] + params["offset"]


def init_embedding(key: jax.Array, vocab: int, width: int) -> dict:
    return {"table": lecun_normal(key, (vocab, width), width)}


def embed(params: dict, tokens: jax.Array) -> jax.Array:
    return jnp.take(params["table"], tokens, axis=0)
