"""The 39 per-entry input features of the learned optimizers (docs/algorithm.md, "Features").

For a parameter tensor with gradient ``g``, value ``p`` and accumulators (see ``accumulators``),
the 28 normalized channels are, in order (``P_i`` the Adafactor preconditioner with decay i):

    g | p | m_1..3 | v | m_i rsqrt(v + 1e-6) | rsqrt(v + 1e-6) | g P_i | row_i | col_i
      | rsqrt(row_i + 1e-8) | rsqrt(col_i + 1e-8) | m_i P_i

(rank < 2: ``row_i = col_i = v_diag_i`` and the last group is ``m_i rsqrt(v_diag_i + 1e-6)``),
each divided by its RMS over the tensor, followed by the 11 un-normalized time features.
Scalars are treated as shape (1,).

``feature_groups`` returns the 28 channels as 12 groups, channels on a leading axis, whose
row/column statistics stay un-tiled (they broadcast against the tensor); the optimizers consume
them in that form, folding the normalization and the time features into their first layer.
``build_features`` materializes the full ``S + (39,)`` array: the plain definition, the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from star_core.features.accumulators import (
    ACCUMULATOR_DTYPE,
    TensorAccumulators,
    adafactor_preconditioner,
    as_rank1,
)
from star_core.features.normalization import rms_normalize
from star_core.features.time import NUM_TIME_FEATURES, TIME_SCALES, time_features

RMS_EPS = 1e-6  # in rsqrt(v + 1e-6), the second-moment preconditioner (also STAR's v(z)^2 floor)
FACTORED_EPS = 1e-8  # in rsqrt(row + 1e-8) and rsqrt(col + 1e-8)

# (name, number of channels) of the normalized feature groups, in the order of docs/algorithm.md.
FEATURE_GROUPS = (
    ("grad", 1),
    ("param", 1),
    ("momentum", 3),
    ("second_moment", 1),
    ("momentum_rsqrt_v", 3),
    ("rsqrt_v", 1),
    ("adafactor_grad", 3),
    ("row", 3),
    ("col", 3),
    ("rsqrt_row", 3),
    ("rsqrt_col", 3),
    ("adafactor_momentum", 3),
)
NUM_NORMALIZED_FEATURES = sum(width for _, width in FEATURE_GROUPS)  # 28
NUM_FEATURES = NUM_NORMALIZED_FEATURES + NUM_TIME_FEATURES  # 39
FEATURE_NAMES = tuple(
    name if width == 1 else f"{name}_{i}" for name, width in FEATURE_GROUPS for i in range(width)
) + tuple(f"time_{tau:g}" for tau in TIME_SCALES)


def feature_groups(
    grad: jax.Array, param: jax.Array, acc: TensorAccumulators
) -> tuple[jax.Array, ...]:
    """The 12 un-normalized groups of ``FEATURE_GROUPS``, each broadcastable to (width,) + S.

    ``grad`` and ``param`` have rank >= 1 and ``acc`` already includes ``grad``.
    """
    g = grad.astype(ACCUMULATOR_DTYPE)[None]
    p = param.astype(ACCUMULATOR_DTYPE)[None]
    m = acc.momentum
    v = acc.second_moment[None]
    rsqrt_v = jax.lax.rsqrt(v + RMS_EPS)
    precond = adafactor_preconditioner(acc, tuple(grad.shape))
    row = acc.row
    col = acc.row if acc.col is None else acc.col
    rsqrt_row = jax.lax.rsqrt(row + FACTORED_EPS)
    rsqrt_col = rsqrt_row if acc.col is None else jax.lax.rsqrt(col + FACTORED_EPS)
    momentum_precond = jax.lax.rsqrt(row + RMS_EPS) if acc.col is None else precond
    return (
        g,
        p,
        m,
        v,
        m * rsqrt_v,
        rsqrt_v,
        g * precond,
        row,
        col,
        rsqrt_row,
        rsqrt_col,
        m * momentum_precond,
    )


def build_features(
    grad: jax.Array, param: jax.Array, acc: TensorAccumulators, step: jax.Array
) -> jax.Array:
    """All 39 features of every entry, shape S + (39,) (S = (1,) for scalars), float32."""
    grad, param = as_rank1(grad), as_rank1(param)
    shape = tuple(grad.shape)
    groups = feature_groups(grad, param, acc)
    normalized = [jnp.broadcast_to(rms_normalize(x), x.shape[:1] + shape) for x in groups]
    channels = jnp.moveaxis(jnp.concatenate(normalized, axis=0), 0, -1)
    times = jnp.broadcast_to(time_features(step), shape + (NUM_TIME_FEATURES,))
    return jnp.concatenate([channels, times], axis=-1)
