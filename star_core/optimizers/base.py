"""The ``LearnedOptimizer`` interface shared by learned optimizers and baselines.

A learned optimizer is a factory from meta-parameters ``theta`` (a plain dict pytree) to an
``optax.GradientTransformation``. ``transform(theta)`` only closes over ``theta``: it may be called
on traced values inside ``jax.jit``, ``jax.vmap`` or ``jax.lax.scan`` (no Python control flow on
``theta``). Static choices live in ``config``, a frozen and hashable dataclass validated once at
construction; an optimizer is hashable and compares equal by (class, config), so it can be a
static argument of ``jax.jit``. Baselines have no meta-parameters: ``theta == {}``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import jax
import optax

from star_core.errors import ConfigError

# Key used only to read the shapes of init_meta_params (jax.eval_shape, nothing is sampled).
_SHAPE_KEY_SEED = 0


def check_nonnegative(field: str, value: float) -> None:
    """ConfigError (a ValueError) naming ``field`` unless ``value`` is a finite number >= 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ConfigError(field, f"{field} must be a finite number >= 0, got {value!r}")


def check_positive(field: str, value: float) -> None:
    """ConfigError (a ValueError) naming ``field`` unless ``value`` is a finite number > 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(field, f"{field} must be a finite number > 0, got {value!r}")


def check_choice(field: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """ConfigError naming ``field`` and the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        raise ConfigError(
            field, f"{field} must be one of {', '.join(map(repr, allowed))}; got {value!r}"
        )


def check_decay(field: str, value: float) -> None:
    """ConfigError (a ValueError) naming ``field`` unless ``0 <= value < 1``."""
    if not (isinstance(value, int | float) and 0 <= value < 1):
        raise ConfigError(field, f"{field} must be a number in [0, 1), got {value!r}")


class LearnedOptimizer(abc.ABC):
    """Factory of optax transformations from meta-parameters; see the module docstring.

    Subclasses set ``name`` and ``config_class`` and implement ``init_meta_params`` and
    ``transform``. Construct with keyword arguments of the config: ``Star(beta3=0.01)``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, **config: Any) -> None:
        allowed = tuple(field.name for field in dataclasses.fields(self.config_class))
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            raise ConfigError(
                unknown[0],
                f"unknown config field(s) {', '.join(unknown)} for optimizer {self.name!r}; "
                f"allowed: {', '.join(allowed)}",
            )
        self.config = self.config_class(**config)

    @abc.abstractmethod
    def init_meta_params(self, key: jax.Array) -> dict[str, Any]:
        """Initial meta-parameters ``theta`` (a plain dict pytree; ``{}`` for baselines)."""

    @abc.abstractmethod
    def transform(self, theta: dict[str, Any]) -> optax.GradientTransformation:
        """The optimizer with meta-parameters ``theta``; updates are added to the params."""

    @property
    def num_meta_params(self) -> int:
        """Number of scalar meta-parameters."""
        shapes = jax.eval_shape(self.init_meta_params, jax.random.key(_SHAPE_KEY_SEED))
        return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config == other.config

    def __hash__(self) -> int:
        return hash((type(self), self.config))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
