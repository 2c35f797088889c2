"""Hand-designed baselines in the ``LearnedOptimizer`` interface: Adam, SGD with momentum, AggMo.

They have no meta-parameters (``theta == {}``); their hyperparameters are config fields.

- Adam (Kingma & Ba 2015): ``optax.adam``.
- SGD with heavy-ball momentum: ``optax.sgd(learning_rate, momentum)``.
- AggMo, aggregated momentum (Lucas, Sun, Zemel, Grosse, ICLR 2019): K velocities with damping
  coefficients ``beta_i``, ``v_i <- beta_i v_i + g``, and the step ``-lr * mean_i v_i``
  (written here as the small transformation ``scale_by_aggmo`` followed by ``optax.scale``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from star_core.optimizers.base import (
    LearnedOptimizer,
    check_decay,
    check_nonnegative,
    check_positive,
)

ADAM_LEARNING_RATE = 1e-3  # Kingma & Ba's default step size
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # Kingma & Ba's defaults
SGDM_LEARNING_RATE = 1e-2  # a common default for SGD with momentum
SGDM_MOMENTUM = 0.9  # heavy-ball coefficient
AGGMO_LEARNING_RATE = 1e-2  # Lucas et al. use SGD-like step sizes
AGGMO_BETAS = (0.0, 0.9, 0.99)  # Lucas et al.'s default damping coefficients


class AggMoState(NamedTuple):
    """One velocity pytree per damping coefficient, stacked on a leading axis of size K."""

    velocities: optax.Updates


def scale_by_aggmo(betas: tuple[float, ...]) -> optax.GradientTransformation:
    """``v_i <- beta_i v_i + g``; returns ``mean_i v_i`` (AggMo's direction before ``-lr``)."""
    beta_column = jnp.asarray(betas, jnp.float32)

    def init_fn(params: optax.Params) -> AggMoState:
        return AggMoState(
            jax.tree.map(
                lambda p: jnp.zeros((len(betas),) + jnp.shape(p), jnp.result_type(p)), params
            )
        )

    def update_fn(
        updates: optax.Updates, state: AggMoState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, AggMoState]:
        del params

        def step(g: jax.Array, v: jax.Array) -> jax.Array:
            beta = beta_column.reshape((-1,) + (1,) * jnp.ndim(g)).astype(v.dtype)
            return beta * v + g[None]

        velocities = jax.tree.map(step, updates, state.velocities)
        directions = jax.tree.map(
            lambda g, v: jnp.mean(v, axis=0).astype(g.dtype), updates, velocities
        )
        return directions, AggMoState(velocities)

    return optax.GradientTransformation(init_fn, update_fn)


class _Baseline(LearnedOptimizer):
    """A baseline: ``init_meta_params`` returns ``{}`` and ``transform`` ignores theta."""

    def init_meta_params(self, key: jax.Array) -> dict[str, Any]:
        del key
        return {}

    def transform(self, theta: dict[str, Any]) -> optax.GradientTransformation:
        del theta
        return self.optax_transformation()

    def optax_transformation(self) -> optax.GradientTransformation:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class AdamConfig:
    learning_rate: float = ADAM_LEARNING_RATE
    b1: float = ADAM_B1
    b2: float = ADAM_B2
    eps: float = ADAM_EPS

    def __post_init__(self) -> None:
        check_positive("learning_rate", self.learning_rate)
        check_decay("b1", self.b1)
        check_decay("b2", self.b2)
        check_nonnegative("eps", self.eps)


class Adam(_Baseline):
    """Adam via ``optax.adam``."""

    name = "adam"
    config_class = AdamConfig

    def optax_transformation(self) -> optax.GradientTransformation:
        c = self.config
        return optax.adam(c.learning_rate, b1=c.b1, b2=c.b2, eps=c.eps)


@dataclasses.dataclass(frozen=True)
class SGDMConfig:
    learning_rate: float = SGDM_LEARNING_RATE
    momentum: float = SGDM_MOMENTUM

    def __post_init__(self) -> None:
        check_positive("learning_rate", self.learning_rate)
        check_decay("momentum", self.momentum)


class SGDM(_Baseline):
    """SGD with heavy-ball momentum via ``optax.sgd``."""

    name = "sgdm"
    config_class = SGDMConfig

    def optax_transformation(self) -> optax.GradientTransformation:
        return optax.sgd(self.config.learning_rate, momentum=self.config.momentum)


@dataclasses.dataclass(frozen=True)
class AggMoConfig:
    learning_rate: float = AGGMO_LEARNING_RATE
    betas: tuple[float, ...] = AGGMO_BETAS

    def __post_init__(self) -> None:
        check_positive("learning_rate", self.learning_rate)
        object.__setattr__(self, "betas", tuple(self.betas))  # lists become hashable tuples
        if not self.betas:
            raise ValueError("betas must hold at least one damping coefficient in [0, 1)")
        for beta in self.betas:
            check_decay("betas", beta)


class AggMo(_Baseline):
    """Aggregated momentum (Lucas et al. 2019)."""

    name = "aggmo"
    config_class = AggMoConfig

    def optax_transformation(self) -> optax.GradientTransformation:
        return optax.chain(
            scale_by_aggmo(self.config.betas), optax.scale(-self.config.learning_rate)
        )
