"""Per-tensor RMS normalization of the learned optimizers' input features (docs/algorithm.md).

Each of the 28 "normalized" feature channels ``x`` of a parameter tensor is divided by its
root-mean-square over the whole tensor: ``x * rsqrt(1e-5 + mean(x^2))``. This is the only place
where entries of a tensor are coupled (besides the Adafactor statistics), so the learned
optimizer sees inputs of order one whatever the scale of the parameters or gradients.

Feature groups carry their channels on the leading axis. A channel may be stored un-tiled (a row or
column statistic that keeps size-1 axes): the mean of a uniformly broadcast array equals the mean
of the array itself, so statistics are computed on the small array, never on a tiled copy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORMALIZATION_EPS = 1e-5  # added to the mean square before the rsqrt


def inverse_rms(x: jax.Array) -> jax.Array:
    """``rsqrt(1e-5 + mean(x^2))`` per channel (leading axis), over every other axis."""
    mean_square = jnp.mean(jnp.square(x), axis=tuple(range(1, x.ndim)))
    return jax.lax.rsqrt(NORMALIZATION_EPS + mean_square)


def rms_normalize(x: jax.Array) -> jax.Array:
    """Divide every channel of ``x`` by its root-mean-square over the tensor."""
    return x * inverse_rms(x).reshape((-1,) + (1,) * (x.ndim - 1))
