"""STAR and Hyperparam learned optimizers (paper Section 5, eqs. 21-22).

Harrison, Metz, Sohl-Dickstein, "A Closer Look at Learned Optimization: Stability, Robustness, and
Inductive Biases", NeurIPS 2022. STAR is the Blackbox optimizer plus a nominal descent term with a
learned magnitude, and a preconditioned blackbox term. The MLP has K = 3 heads (d, m_b, m_g):

    f_g = beta_1 * exp(beta_2 * m_g) * g_nom                          (eq. 21, nominal term)
    f_b = beta_3 * d / sqrt(v + 1e-6) * exp(beta_4 * m_b)             (eq. 22, blackbox term)
    params <- params - (f_b + f_g),        beta_1 = alpha0 * exp(theta["nominal_log_scale"])

``g_nom`` never passes through the network: "adamaggmo" (default) is ``mean_i m_i rsqrt(v + 1e-6)``
over the three momenta; "adam" is ``m_0.999 rsqrt(v + 1e-6)``; "aggmo" is ``mean_i m_i``; "sgd"
is ``g``. ``v`` is the (bias-uncorrected) second-moment EMA.

Ablations (paper Appendix C) are config switches: ``nominal=False`` drops f_g,
``precondition_blackbox=False`` drops the division by ``sqrt(v + 1e-6)``; outer weight decay is a
meta-training setting. Hyperparam (the paper's hyperparameter controller) is STAR without f_b: the
same MLP with the single head m_g, so no meta-parameter goes unused.

Meta-parameters: STAR (203) ``{"mlp": 39*4+4 + 4*4+4 + 4*3+3, "decays": 7,
"nominal_log_scale": ()}``; Hyperparam (193) the same with ``4*1+1`` in the last layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from star_core.features import RMS_EPS, TensorAccumulators, init_decay_offsets
from star_core.optimizers.base import LearnedOptimizer, check_choice, check_nonnegative
from star_core.optimizers.learned import learned_transformation
from star_core.optimizers.mlp import init_mlp

STAR_HEADS = ("d", "m_b", "m_g")  # output columns: blackbox direction and magnitude, nominal scale
HYPERPARAM_HEADS = ("m_g",)  # output column: the nominal term's magnitude
DEFAULT_BETA = 1e-3  # beta_2, beta_4 and alpha0 defaults (the paper's 0.001)
# beta_3: dividing the blackbox output by sqrt(v + 1e-6) (~|g|, often 1e-3..1e-2) makes the
# paper's 0.001 an O(1) step per entry. Measured (experiments/paper_claims.py sweep, digits_mlp,
# 300 steps, untrained theta, 2 draws x 2 seeds): 1e-3, 1e-4 and 1e-5 diverge for some draws,
# 1e-6 and 1e-7 do not;
# the default is the largest stable value (docs/results.md).
DEFAULT_BETA3 = 1e-6
NOMINAL_DIRECTIONS = ("adamaggmo", "adam", "aggmo", "sgd")
ADAM_MOMENTUM_INDEX = 2  # the "adam" nominal direction uses the 0.999 momentum


@dataclasses.dataclass(frozen=True)
class StarConfig:
    """Constants of eqs. (21)-(22) (all >= 0), the nominal direction and the ablation switches."""

    alpha0: float = DEFAULT_BETA
    beta2: float = DEFAULT_BETA
    beta3: float = DEFAULT_BETA3
    beta4: float = DEFAULT_BETA
    nominal_direction: str = "adamaggmo"
    nominal: bool = True
    precondition_blackbox: bool = True

    def __post_init__(self) -> None:
        for field in ("alpha0", "beta2", "beta3", "beta4"):
            check_nonnegative(field, getattr(self, field))
        check_choice("nominal_direction", self.nominal_direction, NOMINAL_DIRECTIONS)
        check_choice("nominal", self.nominal, (True, False))
        check_choice("precondition_blackbox", self.precondition_blackbox, (True, False))


@dataclasses.dataclass(frozen=True)
class HyperparamConfig:
    """Constants of eq. (21) (>= 0) and the nominal direction."""

    alpha0: float = DEFAULT_BETA
    beta2: float = DEFAULT_BETA
    nominal_direction: str = "adamaggmo"

    def __post_init__(self) -> None:
        check_nonnegative("alpha0", self.alpha0)
        check_nonnegative("beta2", self.beta2)
        check_choice("nominal_direction", self.nominal_direction, NOMINAL_DIRECTIONS)


def _mean_of_momenta(momentum: jax.Array) -> jax.Array:
    """Mean over the leading decay axis, as a sum of slices: XLA then fuses it elementwise
    with the rest of the update (a reduce op would split the fused loop)."""
    total = momentum[0]
    for i in range(1, momentum.shape[0]):
        total = total + momentum[i]
    return total / momentum.shape[0]


def nominal_direction(name: str, grad: jax.Array, acc: TensorAccumulators) -> jax.Array:
    """The descent direction ``g_nom`` of eq. (21), shape of ``grad``."""
    if name == "sgd":
        return grad
    if name == "aggmo":
        return _mean_of_momenta(acc.momentum)
    rsqrt_v = jax.lax.rsqrt(acc.second_moment + RMS_EPS)
    if name == "adam":
        return acc.momentum[ADAM_MOMENTUM_INDEX] * rsqrt_v
    return _mean_of_momenta(acc.momentum) * rsqrt_v


def _meta_params(key: jax.Array, heads: tuple[str, ...]) -> dict[str, Any]:
    return {
        "mlp": init_mlp(key, len(heads)),
        "decays": init_decay_offsets(),
        "nominal_log_scale": jnp.zeros((), jnp.float32),
    }


def _nominal_term(
    theta: dict[str, Any],
    config: StarConfig | HyperparamConfig,
    nominal_mag: jax.Array,
    grad: jax.Array,
    acc: TensorAccumulators,
) -> jax.Array:
    """f_g of eq. (21): ``alpha0 * exp(theta_scale) * exp(beta2 * m_g) * g_nom``."""
    nominal_scale = config.alpha0 * jnp.exp(theta["nominal_log_scale"])
    g_nom = nominal_direction(config.nominal_direction, grad, acc)
    return nominal_scale * jnp.exp(config.beta2 * nominal_mag) * g_nom


class Star(LearnedOptimizer):
    """STAR (eqs. 21-22); ``Star(beta3=..., nominal_direction=..., nominal=..., ...)``."""

    name = "star"
    config_class = StarConfig

    def init_meta_params(self, key: jax.Array) -> dict[str, Any]:
        return _meta_params(key, STAR_HEADS)

    def transform(self, theta: dict[str, Any]) -> optax.GradientTransformation:
        config = self.config

        def head_rule(outputs: list, grad: jax.Array, acc: TensorAccumulators) -> jax.Array:
            direction, blackbox_mag, nominal_mag = outputs
            step = config.beta3 * direction * jnp.exp(config.beta4 * blackbox_mag)  # f_b
            if config.precondition_blackbox:
                step = step * jax.lax.rsqrt(acc.second_moment + RMS_EPS)
            if config.nominal:
                step = step + _nominal_term(theta, config, nominal_mag, grad, acc)
            return -step

        return learned_transformation(theta, head_rule)


class Hyperparam(LearnedOptimizer):
    """The hyperparameter controller: STAR's nominal term f_g alone (eq. 21), one MLP head."""

    name = "hyperparam"
    config_class = HyperparamConfig

    def init_meta_params(self, key: jax.Array) -> dict[str, Any]:
        return _meta_params(key, HYPERPARAM_HEADS)

    def transform(self, theta: dict[str, Any]) -> optax.GradientTransformation:
        config = self.config

        def head_rule(outputs: list, grad: jax.Array, acc: TensorAccumulators) -> jax.Array:
            (nominal_mag,) = outputs
            return -_nominal_term(theta, config, nominal_mag, grad, acc)

        return learned_transformation(theta, head_rule)
