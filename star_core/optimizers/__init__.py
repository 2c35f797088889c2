"""Learned optimizers (Blackbox, STAR, Hyperparam) and hand-designed baselines.

Every entry of ``OPTIMIZERS`` is a ``LearnedOptimizer`` class built from config keywords::

    opt = star_core.optimizers.get("star", beta3=1e-3)
    theta = opt.init_meta_params(jax.random.key(0))
    tx = opt.transform(theta)              # an optax.GradientTransformation
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)

Baselines ("adam", "sgdm", "aggmo") have ``theta == {}``.
"""

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


def get(name: str, **config) -> LearnedOptimizer:
    """The optimizer ``name`` of ``OPTIMIZERS`` with the given config fields.

    Raises ValueError naming the allowed names (unknown optimizer) or fields (bad config).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](**config)


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
    "get",
    "scale_by_aggmo",
]
