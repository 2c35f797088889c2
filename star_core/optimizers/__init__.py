"""Learned optimizers (Blackbox, STAR, Hyperparam) and hand-designed baselines.

Every entry of ``OPTIMIZERS`` is a ``LearnedOptimizer`` class built from config keywords::

    opt = star_core.optimizers.get("star", beta3=1e-3)
    theta = opt.init_meta_params(jax.random.key(0))
    tx = opt.transform(theta)              # an optax.GradientTransformation
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)

Baselines ("adam", "sgdm", "aggmo") have ``theta == {}``; :func:`meta_trainable` and
:func:`baselines` split the registry by that. Mistakes in a name or a config field raise
``ConfigError`` whose field is the config field (empty for the name, which the caller names).
"""

import functools
from typing import Any

from star_core.errors import ConfigError
from star_core.optimizers.base import LearnedOptimizer
from star_core.optimizers.baselines import SGDM, Adam, AggMo, AggMoState, scale_by_aggmo
from star_core.optimizers.blackbox import Blackbox, BlackboxConfig
from star_core.optimizers.learned import LearnedOptState
from star_core.optimizers.star import (
    NOMINAL_DIRECTIONS,
    Hyperparam,
    HyperparamConfig,
    Star,
    StarConfig,
)

OPTIMIZERS: dict[str, type[LearnedOptimizer]] = {
    "blackbox": Blackbox,
    "star": Star,
    "hyperparam": Hyperparam,
    "adam": Adam,
    "sgdm": SGDM,
    "aggmo": AggMo,
}


def get(name: str, **config: Any) -> LearnedOptimizer:
    """The optimizer ``name`` of ``OPTIMIZERS`` with the given config fields.

    Raises ConfigError: field "" for an unknown name (with the allowed names), the config
    field's name for a bad or unknown field (with the allowed fields).
    """
    if name not in OPTIMIZERS:
        raise ConfigError("", f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    try:
        return OPTIMIZERS[name](**config)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # a config class that checks without ConfigError
        raise ConfigError("", f"{name}: {err}") from err


@functools.cache
def _num_meta_params(name: str) -> int:
    return OPTIMIZERS[name]().num_meta_params


def meta_trainable() -> tuple[str, ...]:
    """Registry names of the optimizers that have meta-parameters (what meta-training trains),
    in registry order."""
    return tuple(name for name in OPTIMIZERS if _num_meta_params(name) > 0)


def baselines() -> tuple[str, ...]:
    """Registry names of the optimizers without meta-parameters (hand-designed baselines)."""
    return tuple(name for name in OPTIMIZERS if _num_meta_params(name) == 0)


__all__ = [
    "NOMINAL_DIRECTIONS",
    "OPTIMIZERS",
    "SGDM",
    "Adam",
    "AggMo",
    "AggMoState",
    "Blackbox",
    "BlackboxConfig",
    "Hyperparam",
    "HyperparamConfig",
    "LearnedOptState",
    "LearnedOptimizer",
    "Star",
    "StarConfig",
    "baselines",
    "get",
    "meta_trainable",
    "scale_by_aggmo",
]
