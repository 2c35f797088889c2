"""Sufficient stability conditions for the NQM dynamics (paper Theorem 1, Lemmas 2 and 3).

Harrison, Metz, Sohl-Dickstein, NeurIPS 2022, Section 4. With ``A = I - K (alpha I + P) H``
(see :mod:`star_core.nqm.dynamics`), H symmetric positive definite and P diagonalizable with real
eigenvalues:

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

The conditions are sufficient, not necessary. The proofs bound the eigenvalues of
``(alpha I + P) H``, which is similar to the symmetric ``H^{1/2} (alpha I + P) H^{1/2}`` when P is
symmetric; for a non-symmetric P the conditions are evaluated all the same but certify nothing.
The checks run in NumPy float64; a P whose eigenvalues are not real (beyond
``IMAGINARY_TOLERANCE``) fails the theorem's hypothesis, so the functions return False for it.
"""

from __future__ import annotations

import numpy as np

# Largest |imaginary part| (relative to the largest |eigenvalue|, plus an absolute floor) still
# treated as a real eigenvalue: the round-off of a float64 eigen-solver on a real-spectrum matrix.
IMAGINARY_TOLERANCE = 1e-9


def _real_spectrum(M) -> np.ndarray | None:
    """Sorted real eigenvalues of M, or None when some eigenvalue is not real."""
    M = np.asarray(M, dtype=np.float64)
    if np.allclose(M, M.T):
        return np.linalg.eigvalsh(0.5 * (M + M.T))
    eigvals = np.linalg.eigvals(M)
    scale = max(1.0, float(np.max(np.abs(eigvals))))
    if np.max(np.abs(eigvals.imag)) > IMAGINARY_TOLERANCE * scale:
        return None
    return np.sort(eigvals.real)


def _lambda_max_spd(H) -> float:
    return float(np.linalg.eigvalsh(np.asarray(H, dtype=np.float64))[-1])


def _nominal_bounds_hold(alpha: float, P, upper: float) -> bool:
    """Condition (9) ``-alpha <= lambda_min(P)`` and ``lambda_max(P) <= upper``."""
    spectrum = _real_spectrum(P)
    if spectrum is None:
        return False
    return bool(-alpha <= spectrum[0] and spectrum[-1] <= upper)


def theorem1_holds(alpha, P, H) -> bool:
    """Whether (alpha, P, H) satisfy conditions (9) and (10) of Theorem 1."""
    alpha = float(alpha)
    return _nominal_bounds_hold(alpha, P, 2.0 / _lambda_max_spd(H) - alpha)


def lemma2_holds(alpha, P, H) -> bool:
    """Whether (alpha, P, H) satisfy conditions (9) and (13) of Lemma 2 (preconditioned, eq. 12)."""
    alpha = float(alpha)
    return _nominal_bounds_hold(alpha, P, 2.0 / np.sqrt(_lambda_max_spd(H)) - alpha)


def lemma3_holds(alpha, P_tilde, H, d_bar) -> bool:
    """Whether Lemma 3's hypothesis on alpha and its conditions (16) and (17) hold.

    Args:
      alpha: nominal step size; the lemma needs ``0 < alpha < 2 / lambda_max(H)``.
      P_tilde: the undisturbed learned matrix ``P~`` (``P = Delta P~``).
      H: symmetric positive definite Hessian.
      d_bar: length-N vector of upper bounds on the disturbance ``Delta = diag(d)``, all positive.
    """
    alpha = float(alpha)
    d_bar = np.asarray(d_bar, dtype=np.float64).reshape(-1)
    if np.any(d_bar <= 0):
        raise ValueError(f"d_bar must be positive, got min {float(d_bar.min())}")
    lambda_max_h = _lambda_max_spd(H)
    if not 0.0 < alpha < 2.0 / lambda_max_h:
        return False
    spectrum = _real_spectrum(P_tilde)
    if spectrum is None:
        return False
    d_max = float(np.max(d_bar))
    lower_ok = -alpha / d_max <= spectrum[0]
    upper_ok = spectrum[-1] <= (2.0 / lambda_max_h - alpha) / d_max
    return bool(lower_ok and upper_ok)


def cancellation_dynamics(alpha, P_star, H, eps) -> np.ndarray:
    """Eq. 19: A when ``P~ = P* - alpha I`` cancels the nominal term and ``Delta = (1 - eps) I``.

    Returns ``I - alpha eps H - (1 - eps) P* H`` in float64, which equals
    ``dynamics_matrix(alpha, (1 - eps) (P* - alpha I), H)``.
    """
    P_star = np.asarray(P_star, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    return np.eye(P_star.shape[0]) - alpha * eps * H - (1.0 - eps) * P_star @ H
