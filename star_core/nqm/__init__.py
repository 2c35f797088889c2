"""The noisy quadratic model (NQM) stability analysis of the paper's Section 4.

Harrison, Metz, Sohl-Dickstein, "A Closer Look at Learned Optimization: Stability, Robustness,
and Inductive Biases", NeurIPS 2022. A linear learned optimizer
``phi <- phi - K (alpha I + P) grad`` on ``l_t(phi) = 1/2 (phi - xi_t)^T H (phi - xi_t)`` has
dynamics ``A = I - K (alpha I + P) H``
(eq. 6, ``K = I``; eq. 12, ``K = H^{-1/2}``). This package gives the dynamics and their spectra,
the closed-form and sampled meta-loss (eqs. 7-8), the stability conditions (Theorem 1, Lemmas 2
and 3, eqs. 18-19), Adam meta-training of P, and the reproduction of Figures 1 and 2.
Nothing else in ``star_core`` imports this package.
"""

from star_core.nqm.closed_form import (
    expected_meta_loss,
    expected_step_losses,
    sample_meta_loss,
    sample_step_losses,
)
from star_core.nqm.dynamics import dynamics_matrix, inverse_sqrt_spd, spectral_radius
from star_core.nqm.meta_train import (
    ESTIMATORS,
    NQMMetaTrainConfig,
    NQMMetaTrainResult,
    meta_train,
)
from star_core.nqm.problem import NQMProblem, make_problem
from star_core.nqm.stability import (
    cancellation_dynamics,
    lemma2_holds,
    lemma3_holds,
    theorem1_holds,
)

__all__ = [
    "ESTIMATORS",
    "NQMMetaTrainConfig",
    "NQMMetaTrainResult",
    "NQMProblem",
    "cancellation_dynamics",
    "dynamics_matrix",
    "expected_meta_loss",
    "expected_step_losses",
    "inverse_sqrt_spd",
    "lemma2_holds",
    "lemma3_holds",
    "make_problem",
    "meta_train",
    "sample_meta_loss",
    "sample_step_losses",
    "spectral_radius",
    "theorem1_holds",
]
