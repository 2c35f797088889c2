"""Meta-gradient estimators: truncated unrolls, antithetic ES and PES.

- ``unroll``: ``InnerProblem`` and the ``scan``/``vmap`` truncated unroll with episode resets.
- ``es``: truncated antithetic ES kernel ``es_grad``.
- ``pes``: persistent ES kernel ``pes_grad`` (Vicol et al. 2021).
- ``inner``: a (task, learned optimizer) pair as an ``InnerProblem``.
- ``estimator``: ``EstimatorConfig``, ``Estimator``, ``make_estimator``.
"""

from star_core.estimators.es import ESState, es_grad
from star_core.estimators.estimator import (
    KINDS,
    Estimator,
    EstimatorConfig,
    make_estimator,
    task_batch_source,
)
from star_core.estimators.inner import InnerState, make_inner_problem
from star_core.estimators.pes import PESState, pes_grad
from star_core.estimators.unroll import InnerProblem, UnrollOutput, unroll

__all__ = [
    "KINDS",
    "ESState",
    "Estimator",
    "EstimatorConfig",
    "InnerProblem",
    "InnerState",
    "PESState",
    "UnrollOutput",
    "es_grad",
    "make_estimator",
    "make_inner_problem",
    "pes_grad",
    "task_batch_source",
    "unroll",
]
