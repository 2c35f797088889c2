"""Time features: the last 11 input channels (docs/algorithm.md, "Time features").

``tanh(t / tau - 1)`` for tau in {1, 3, 10, ..., 1e5}, where ``t`` is the number of updates already
applied (0 on the first update). They are the same for every parameter entry and are not
normalized, so the network sees each one as a smooth step that switches on around ``t = tau``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Time scales tau of the 11 time features, log-spaced from 1 to 1e5 steps.
TIME_SCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
NUM_TIME_FEATURES = len(TIME_SCALES)


def time_features(step: jax.Array) -> jax.Array:
    """The 11 time features, shape (11,), float32, for an integer step counter ``t``."""
    t = jnp.asarray(step, jnp.float32)
    return jnp.tanh(t / jnp.asarray(TIME_SCALES, jnp.float32) - 1.0)
