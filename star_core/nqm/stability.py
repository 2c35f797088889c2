"""Sufficient stability conditions for the NQM dynamics (paper Theorem 1, Lemmas 2 and 3).

Harrison, Metz, Sohl-Dickstein, NeurIPS 2022, Section 4. With ``A = I - K (alpha I + P) H``
(see :mod:`star_core.nqm.dynamics`), H symmetric positive definite and P symmetric:

- Theorem 1 (``K = I``): ``rho(A) <= 1`` if
  ``-alpha <= lambda_min(P)`` (9) and ``lambda_max(P) <= 2 / lambda_max(H) - alpha`` (10).
- Lemma 2 (``K = H^{-1/2}``, eq. 12): (9) and ``lambda_max(P) <= 2 / sqrt(lambda_max(H)) - alpha``
  (13).
- Lemma 3 (robust): ``P = Delta P~`` with ``Delta = diag(d)``, ``0 < d_i <= d_bar_i``, Delta and
  P~ simultaneously diagonalizable, and ``0 < alpha < 2 / lambda_max(H)``. Then ``rho(A) <= 1`` for
  every such Delta if ``-alpha / max_i d_bar_i <= lambda_min(P~)`` (16) and
  ``lambda_max(P~) <= (2 / lambda_max(H) - alpha) / max_i d_bar_i`` (17).
- Eqs. 18-19: cancelling the nominal term (``P~ = P* - alpha I``) under ``Delta = (1 - eps) I``
  gives ``A = I - alpha eps H - (1 - eps) P* H``.

The conditions are sufficient, not necessary. Which P they cover: the paper states the hypothesis
as "P diagonalizable with real eigenvalues", but the proofs bound the eigenvalues of
``(alpha I + P) H`` through its similarity to ``H^{1/2} (alpha I + P) H^{1/2}``, which is symmetric
(real spectrum, eigenvalues bounded by those of ``alpha I + P`` times ``lambda_max(H)``) only when
P is symmetric. A non-symmetric P with real eigenvalues that meets (9)-(10) can have
``rho(A) > 1`` (about a fifth of random draws ``S diag(p) S^{-1}``; ``tests/nqm/test_stability.py``
counts them), and a P with complex eigenvalues or a Jordan block has no ordered spectrum at all.
So the helpers refuse every P (and P~) that is not symmetric, and every H that is not symmetric
positive definite, with a ``ValueError`` that says why; for such a P compute
``spectral_radius(dynamics_matrix(alpha, P, H))`` directly. Symmetry is checked up to
``SYMMETRY_TOLERANCE`` (float32 round-off) and the conditions are evaluated on ``(P + P^T) / 2``.
The checks run in NumPy float64.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

# Largest max|M - M^T| / max(1, max|M|) still treated as symmetric: float32 round-off of a matrix
# built symmetric (its eigenvalues then move by at most N times this, relative).
SYMMETRY_TOLERANCE = 1e-6


def _symmetric(M: ArrayLike, name: str) -> np.ndarray:
    """``(M + M^T) / 2`` in float64 for a finite square M symmetric up to the tolerance."""
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} has non-finite entries")
    asymmetry = float(np.max(np.abs(M - M.T), initial=0.0))
    if asymmetry > SYMMETRY_TOLERANCE * max(1.0, float(np.max(np.abs(M), initial=0.0))):
        raise ValueError(
            f"{name} is not symmetric (max |{name} - {name}^T| = {asymmetry:.3g}): Theorem 1 and "
            "Lemmas 2-3 certify rho(A) <= 1 only for symmetric P (a non-symmetric P, even with "
            "real eigenvalues, can meet the conditions and still diverge); compute "
            "spectral_radius(dynamics_matrix(alpha, P, H)) instead"
        )
    return 0.5 * (M + M.T)


def _spectrum(P: ArrayLike, name: str = "P") -> np.ndarray:
    """Ascending eigenvalues of a symmetric P (ValueError for any other P)."""
    return np.linalg.eigvalsh(_symmetric(P, name))


def _lambda_max_spd(H: ArrayLike) -> float:
    """Largest eigenvalue of a symmetric positive definite H (ValueError for any other H)."""
    eigvals = np.linalg.eigvalsh(_symmetric(H, "H"))
    if eigvals[0] <= 0.0:
        raise ValueError(f"H must be positive definite, got lambda_min(H) = {eigvals[0]:.3g}")
    return float(eigvals[-1])


def _nominal_bounds_hold(alpha: float, P: ArrayLike, upper: float) -> bool:
    """Condition (9) ``-alpha <= lambda_min(P)`` and ``lambda_max(P) <= upper``."""
    spectrum = _spectrum(P)
    return bool(-alpha <= spectrum[0] and spectrum[-1] <= upper)


def theorem1_holds(alpha: float, P: ArrayLike, H: ArrayLike) -> bool:
    """Whether (alpha, P, H) satisfy conditions (9) and (10) of Theorem 1.

    Raises ValueError when P is not symmetric or H not symmetric positive definite: the theorem
    says nothing about those (see the module docstring).
    """
    alpha = float(alpha)
    return _nominal_bounds_hold(alpha, P, 2.0 / _lambda_max_spd(H) - alpha)


def lemma2_holds(alpha: float, P: ArrayLike, H: ArrayLike) -> bool:
    """Whether (alpha, P, H) satisfy conditions (9) and (13) of Lemma 2 (preconditioned, eq. 12).

    Raises ValueError when P is not symmetric or H not symmetric positive definite.
    """
    alpha = float(alpha)
    return _nominal_bounds_hold(alpha, P, 2.0 / np.sqrt(_lambda_max_spd(H)) - alpha)


def lemma3_holds(alpha: float, P_tilde: ArrayLike, H: ArrayLike, d_bar: ArrayLike) -> bool:
    """Whether Lemma 3's hypothesis on alpha and its conditions (16) and (17) hold.

    Args:
      alpha: nominal step size; the lemma needs ``0 < alpha < 2 / lambda_max(H)``.
      P_tilde: the undisturbed learned matrix ``P~`` (``P = Delta P~``), symmetric.
      H: symmetric positive definite Hessian.
      d_bar: length-N vector of upper bounds on the disturbance ``Delta = diag(d)``, all positive.

    Raises ValueError when P~ is not symmetric, H not symmetric positive definite or some d_bar_i
    not positive. The certificate covers the Delta that commute with P~ (every diagonal Delta when
    P~ is diagonal, ``Delta = c I`` when P~ has distinct eigenvalues and a dense eigenbasis).
    """
    alpha = float(alpha)
    d_bar = np.asarray(d_bar, dtype=np.float64).reshape(-1)
    if np.any(d_bar <= 0):
        raise ValueError(f"d_bar must be positive, got min {float(d_bar.min())}")
    spectrum = _spectrum(P_tilde, "P_tilde")
    lambda_max_h = _lambda_max_spd(H)
    if not 0.0 < alpha < 2.0 / lambda_max_h:
        return False
    d_max = float(np.max(d_bar))
    lower_ok = -alpha / d_max <= spectrum[0]
    upper_ok = spectrum[-1] <= (2.0 / lambda_max_h - alpha) / d_max
    return bool(lower_ok and upper_ok)


def cancellation_dynamics(alpha: float, P_star: ArrayLike, H: ArrayLike, eps: float) -> np.ndarray:
    """Eq. 19: A when ``P~ = P* - alpha I`` cancels the nominal term and ``Delta = (1 - eps) I``.

    Returns ``I - alpha eps H - (1 - eps) P* H`` in float64, which equals
    ``dynamics_matrix(alpha, (1 - eps) (P* - alpha I), H)``.
    """
    P_star = np.asarray(P_star, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    return np.eye(P_star.shape[0]) - alpha * eps * H - (1.0 - eps) * P_star @ H
