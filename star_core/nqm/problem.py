"""The noisy quadratic problem instance used for the paper's Figures 1 and 2 (Section 4).

The paper's appendix with the exact sizes is not available, so the instance is fixed here and
documented beside every figure: dimension ``N``, a Hessian ``H = Q diag(h) Q^T`` with
log-spaced eigenvalues ``h`` in ``[H_EIG_MIN, H_EIG_MAX]`` and a random rotation ``Q`` (so that H
is dense and does not commute with a diagonal P), noise ``Sigma_xi = NOISE_SCALE**2 I`` and a
random start ``phi_0 ~ N(0, PHI0_SCALE**2 I)`` (a distribution of initial points: with one fixed
``phi_0`` the optimal P would only act along ``phi_0`` and leave A = I on the rest of the space).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

# Default dimension of the quadratic (the paper does not give its size; 10-20 is small and rich).
DIMENSION = 10
# Hessian spectrum: log-spaced eigenvalues in [H_EIG_MIN, H_EIG_MAX]; lambda_max(H) = 1 makes
# alpha's stable range of Theorem 1 with P = 0 exactly [0, 2].
H_EIG_MIN = 0.1
H_EIG_MAX = 1.0
# Standard deviation of each coordinate of xi_t (Sigma_xi = NOISE_SCALE**2 I = I).
NOISE_SCALE = 1.0
# Standard deviation of each coordinate of phi_0: the start's expected excess loss is
# PHI0_SCALE**2 times the noise floor 1/2 tr(H Sigma_xi), so the optimizer has work to do.
PHI0_SCALE = 3.0


class NQMProblem(NamedTuple):
    """Noisy quadratic ``l_t(phi) = 1/2 (phi - xi_t)^T H (phi - xi_t)``, ``xi_t ~ N(0, Sigma)``."""

    H: np.ndarray
    phi0: np.ndarray  # mean of phi_0
    sigma_xi: np.ndarray
    phi0_cov: np.ndarray  # covariance of phi_0


def random_rotation(key: jax.Array, n: int) -> np.ndarray:
    """A Haar-distributed ``n x n`` orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    gaussian = np.asarray(jax.random.normal(key, (n, n)), dtype=np.float64)
    q, r = np.linalg.qr(gaussian)
    return q * np.sign(np.diag(r))


def make_problem(
    key: jax.Array,
    dimension: int = DIMENSION,
    h_min: float = H_EIG_MIN,
    h_max: float = H_EIG_MAX,
    noise_scale: float = NOISE_SCALE,
    phi0_scale: float = PHI0_SCALE,
) -> NQMProblem:
    """Build the float64 NumPy problem instance; ``key`` draws the rotation Q."""
    if dimension < 1:
        raise ValueError(f"dimension must be >= 1, got {dimension}")
    if not 0.0 < h_min <= h_max:
        raise ValueError(f"need 0 < h_min <= h_max, got h_min={h_min}, h_max={h_max}")
    rotation = random_rotation(key, dimension)
    h = np.geomspace(h_min, h_max, dimension)
    H = (rotation * h) @ rotation.T
    return NQMProblem(
        H=0.5 * (H + H.T),
        phi0=np.zeros(dimension),
        sigma_xi=noise_scale**2 * np.eye(dimension),
        phi0_cov=phi0_scale**2 * np.eye(dimension),
    )


def problem_summary(problem: NQMProblem) -> dict:
    """The numbers that define a problem, for the JSON written beside each figure."""
    h = np.linalg.eigvalsh(problem.H)
    return {
        "dimension": int(problem.H.shape[0]),
        "H_eigenvalues": [float(v) for v in h],
        "H_spectrum": "log-spaced, randomly rotated (dense H)",
        "sigma_xi": "noise_scale^2 * I",
        "noise_scale": float(np.sqrt(problem.sigma_xi[0, 0])),
        "phi0": "phi_0 ~ N(0, phi0_scale^2 * I)",
        "phi0_scale": float(np.sqrt(problem.phi0_cov[0, 0])),
    }
