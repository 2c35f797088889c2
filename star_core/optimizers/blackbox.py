"""Blackbox learned optimizer: ``small_fc_lopt`` of Metz et al. 2022, the paper's baseline.

Harrison, Metz, Sohl-Dickstein, "A Closer Look at Learned Optimization", NeurIPS 2022, eq. (20).
The per-parameter MLP (``mlp``) has K = 2 heads, direction ``d`` and magnitude ``a``; the step is

    update = beta_1 * d * exp(beta_2 * a),    params <- params - update,    beta_1 = beta_2 = 1e-3.

Meta-parameters (197): ``{"mlp": 39*4+4 + 4*4+4 + 4*2+2, "decays": 3 + 1 + 3}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from star_core.features import TensorAccumulators, init_decay_offsets
from star_core.optimizers.base import LearnedOptimizer, check_nonnegative
from star_core.optimizers.learned import learned_transformation
from star_core.optimizers.mlp import init_mlp

BLACKBOX_HEADS = ("d", "m_b")  # output columns: direction, magnitude
DEFAULT_BETA = 1e-3  # beta_1 and beta_2 of eq. (20), as in the paper and Metz et al. 2022


@dataclasses.dataclass(frozen=True)
class BlackboxConfig:
    """beta1 scales the direction head, beta2 the magnitude head (both >= 0)."""

    beta1: float = DEFAULT_BETA
    beta2: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        check_nonnegative("beta1", self.beta1)
        check_nonnegative("beta2", self.beta2)


class Blackbox(LearnedOptimizer):
    """The Blackbox learned optimizer (eq. 20); ``Blackbox(beta1=..., beta2=...)``."""

    name = "blackbox"
    config_class = BlackboxConfig

    def init_meta_params(self, key: jax.Array) -> dict[str, Any]:
        return {"mlp": init_mlp(key, len(BLACKBOX_HEADS)), "decays": init_decay_offsets()}

    def transform(self, theta: dict[str, Any]) -> optax.GradientTransformation:
        beta1, beta2 = self.config.beta1, self.config.beta2

        def head_rule(outputs: list, grad: jax.Array, acc: TensorAccumulators) -> jax.Array:
            direction, magnitude = outputs
            return -beta1 * direction * jnp.exp(beta2 * magnitude)

        return learned_transformation(theta, head_rule)
