"""Per-tensor accumulators with meta-learned decays (docs/algorithm.md, "Accumulators").

For every parameter tensor with gradient ``g`` the optimizer keeps, without bias correction:

- three momenta        ``m_i <- b_i m_i + (1 - b_i) g``,          ``b_m = (0.9, 0.99, 0.999)``
- one second moment    ``v   <- b v + (1 - b) g^2``,               ``b_v = 0.999``
- Adafactor factored second moments (Shazeer & Stern, ICML 2018), ``b_f = (0.9, 0.99, 0.999)``:
  for rank >= 2, with ``d0`` the largest and ``d1`` the second largest axis,
  ``v_row <- b v_row + (1 - b) mean_{d0}(g^2 + eps)`` and
  ``v_col <- b v_col + (1 - b) mean_{d1}(g^2 + eps)``; the Adafactor preconditioner is
  ``rsqrt(v_row / (mean_{d1} v_row + 1e-9)) * rsqrt(v_col)`` (each rsqrt argument floored at
  1e-9). Rank < 2 tensors keep an unfactored ``v_diag`` with preconditioner
  ``rsqrt(v_diag + 1e-9)``.

The seven decays are meta-learned as offsets ``theta_decay`` (initialized to 0):
``b = clip(1 - (1 - b0) * exp(10 * theta_decay), 0, 1)``. The clip keeps every EMA a convex
combination: without it an offset above ``ln(1 / (1 - b0)) / 10`` (~0.23 for ``b0 = 0.9``) makes
the decay negative, a second-moment statistic can then turn negative and its ``rsqrt`` NaN.

Arrays carry the decay index on a leading axis: ``momentum`` has shape ``(3,) + param.shape``;
``row``/``col`` keep the reduced axes with size 1 (``keepdims``), so they broadcast against the
tensor. (A leading axis keeps every per-decay slice contiguous, for fused elementwise code.)
Scalars are treated as shape ``(1,)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MOMENTUM_DECAYS = (0.9, 0.99, 0.999)  # base decays of the three momenta
RMS_DECAYS = (0.999,)  # base decay of the second-moment EMA
ADAFACTOR_DECAYS = (0.9, 0.99, 0.999)  # base decays of the factored second moments
DECAY_OFFSET_SCALE = 10.0  # b = clip(1 - (1 - b0) * exp(DECAY_OFFSET_SCALE * offset), 0, 1)
ADAFACTOR_EPS = 1e-30  # added to g^2 before the factored means (Adafactor's eps1)
ADAFACTOR_FLOOR = 1e-9  # guard of the Adafactor rsqrt arguments and of the row-mean division
ACCUMULATOR_DTYPE = jnp.float32  # accumulators are kept in float32 whatever the param dtype


class Decays(NamedTuple):
    """Decay rates in [0, 1]: momentum (3,), rms (1,), adafactor (3,)."""

    momentum: jax.Array
    rms: jax.Array
    adafactor: jax.Array


class TensorAccumulators(NamedTuple):
    """Accumulators of one parameter tensor of shape S.

    momentum: (3,) + S. second_moment: S. row: (3,) + S with d0 -> 1 (rank < 2: v_diag, (3,) + S).
    col: (3,) + S with d1 -> 1 (rank < 2: None, the row statistic doubles as column statistic).
    """

    momentum: jax.Array
    second_moment: jax.Array
    row: jax.Array
    col: jax.Array | None


def init_decay_offsets() -> dict[str, jax.Array]:
    """Zero offsets, i.e. the base decays; the layout of ``theta["decays"]``."""
    return {
        "momentum": jnp.zeros((len(MOMENTUM_DECAYS),), jnp.float32),
        "rms": jnp.zeros((len(RMS_DECAYS),), jnp.float32),
        "adafactor": jnp.zeros((len(ADAFACTOR_DECAYS),), jnp.float32),
    }


def decays_from_offsets(offsets: dict[str, jax.Array]) -> Decays:
    """Offsets ``theta["decays"]`` to decay rates ``clip(1 - (1 - b0) exp(10 offset), 0, 1)``."""

    def to_decay(base: tuple[float, ...], offset: jax.Array) -> jax.Array:
        one_minus = (1.0 - jnp.asarray(base, jnp.float32)) * jnp.exp(DECAY_OFFSET_SCALE * offset)
        return jnp.clip(1.0 - one_minus, 0.0, 1.0)

    return Decays(
        momentum=to_decay(MOMENTUM_DECAYS, offsets["momentum"]),
        rms=to_decay(RMS_DECAYS, offsets["rms"]),
        adafactor=to_decay(ADAFACTOR_DECAYS, offsets["adafactor"]),
    )


def factored_dims(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(d0, d1) = (largest, second largest) axes for rank >= 2 (ties: the later axis), else None."""
    if len(shape) < 2:
        return None
    order = np.argsort(np.asarray(shape), kind="stable")
    return int(order[-1]), int(order[-2])


def as_rank1(x: jax.Array) -> jax.Array:
    """Scalars become shape (1,); other arrays are returned unchanged."""
    x = jnp.asarray(x)
    return x.reshape((1,)) if x.ndim == 0 else x


def _per_decay(decays: jax.Array, ndim: int) -> jax.Array:
    """Decays of shape (k,) reshaped to broadcast against (k,) + S arrays of rank ``ndim``."""
    return decays.reshape((-1,) + (1,) * ndim)


def init_accumulators(param: jax.Array) -> TensorAccumulators:
    """Zero accumulators for a parameter (scalars count as shape (1,))."""
    shape = tuple(as_rank1(param).shape)
    momentum = jnp.zeros((len(MOMENTUM_DECAYS),) + shape, ACCUMULATOR_DTYPE)
    second_moment = jnp.zeros(shape, ACCUMULATOR_DTYPE)
    num_fac = (len(ADAFACTOR_DECAYS),)
    dims = factored_dims(shape)
    if dims is None:
        row = jnp.zeros(num_fac + shape, ACCUMULATOR_DTYPE)
        return TensorAccumulators(momentum, second_moment, row, None)
    d0, d1 = dims
    row_shape = num_fac + tuple(1 if axis == d0 else n for axis, n in enumerate(shape))
    col_shape = num_fac + tuple(1 if axis == d1 else n for axis, n in enumerate(shape))
    return TensorAccumulators(
        momentum,
        second_moment,
        jnp.zeros(row_shape, ACCUMULATOR_DTYPE),
        jnp.zeros(col_shape, ACCUMULATOR_DTYPE),
    )


def _col(acc: TensorAccumulators) -> jax.Array:
    """The column statistic, which every tensor of rank >= 2 has."""
    if acc.col is None:
        raise ValueError("a tensor of rank >= 2 without a column statistic")
    return acc.col


def _ema(old: jax.Array, new: jax.Array, decay: jax.Array) -> jax.Array:
    return decay * old + (1.0 - decay) * new


def update_accumulators(
    acc: TensorAccumulators, grad: jax.Array, decays: Decays
) -> TensorAccumulators:
    """Fold the current gradient into every accumulator (scalars count as shape (1,))."""
    grad = as_rank1(grad).astype(ACCUMULATOR_DTYPE)
    ndim = grad.ndim
    momentum = _ema(acc.momentum, grad, _per_decay(decays.momentum, ndim))
    second_moment = _ema(acc.second_moment, grad * grad, decays.rms[0])
    g_sq_eps = grad * grad + ADAFACTOR_EPS
    fac_decays = _per_decay(decays.adafactor, ndim)
    dims = factored_dims(tuple(grad.shape))
    if dims is None:
        row = _ema(acc.row, g_sq_eps, fac_decays)
        return TensorAccumulators(momentum, second_moment, row, None)
    d0, d1 = dims
    row = _ema(acc.row, jnp.mean(g_sq_eps, axis=d0, keepdims=True), fac_decays)
    col = _ema(_col(acc), jnp.mean(g_sq_eps, axis=d1, keepdims=True), fac_decays)
    return TensorAccumulators(momentum, second_moment, row, col)


def adafactor_preconditioner(acc: TensorAccumulators, shape: tuple[int, ...]) -> jax.Array:
    """Per-decay Adafactor preconditioner of a tensor of shape S, broadcastable to (3,) + S.

    Rank >= 2: ``rsqrt(max(v_row / (mean_{d1} v_row + 1e-9), 1e-9)) * rsqrt(max(v_col, 1e-9))``.
    Rank < 2: ``rsqrt(v_diag + 1e-9)``.
    """
    dims = factored_dims(shape)
    if dims is None:
        return jax.lax.rsqrt(acc.row + ADAFACTOR_FLOOR)
    _, d1 = dims
    row_mean = jnp.mean(acc.row, axis=1 + d1, keepdims=True)  # axis 0 indexes the decays
    row_factor = jax.lax.rsqrt(jnp.maximum(acc.row / (row_mean + ADAFACTOR_FLOOR), ADAFACTOR_FLOOR))
    col_factor = jax.lax.rsqrt(jnp.maximum(_col(acc), ADAFACTOR_FLOOR))
    return row_factor * col_factor
