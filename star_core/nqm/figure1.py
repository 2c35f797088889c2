"""Data of the paper's Figure 1: eigenvalues of the NQM dynamics matrix before/after interventions.

Harrison, Metz, Sohl-Dickstein, NeurIPS 2022, Figure 1 and Section 4. A linear learned optimizer
``P`` (here a random, non-symmetric matrix, so A has complex eigenvalues) drives
``A = I - P H``. Each panel applies one intervention with strength ``s`` from 0 (before) to 1
(after) and records the eigenvalues of A along the way:

- (a) nominal term: ``A(s) = I - (s alpha I + P) H``;
- (b) weight decay shrinking P toward 0: ``A(s) = I - w(s) P H``, ``w(s) = 1 - s (1 - c)``;
- (c) preconditioning: ``A(s) = I - H^{-s/2} P H`` (``s = 1`` is eq. 12);
- (d) all three: ``A(s) = I - H^{-s/2} (s alpha I + w(s) P) H``.

Everything is NumPy float64.
"""

from __future__ import annotations

import jax
import numpy as np

# Scale of the random learned matrix: P = P_SCALE * G / sqrt(N), G standard Gaussian. Chosen so
# that the learned optimizer alone is unstable (some eigenvalues of A have real part > 1).
P_SCALE = 1.5
# Nominal step size added in panels (a) and (d) (lambda_max(H) = 1, so 2 / lambda_max(H) = 2).
NOMINAL_ALPHA = 0.8
# Weight decay's shrink factor c on P in panels (b) and (d).
DECAY_FACTOR = 0.25
# Intermediate intervention strengths drawn as a trail between "before" and "after".
PATH_POINTS = 24

PANELS = {
    "a": "nominal term",
    "b": "weight decay",
    "c": "preconditioning",
    "d": "all three",
}


def random_learned_matrix(key, n: int) -> np.ndarray:
    """The non-symmetric learned matrix P of Figure 1."""
    gaussian = np.asarray(jax.random.normal(key, (n, n)), dtype=np.float64)
    return P_SCALE * gaussian / np.sqrt(n)


def _hessian_power(H: np.ndarray, power: float) -> np.ndarray:
    eigvals, eigvecs = np.linalg.eigh(H)
    return (eigvecs * eigvals**power) @ eigvecs.T


def panel_dynamics(panel: str, strength: float, P: np.ndarray, H: np.ndarray) -> np.ndarray:
    """``A(s)`` of one panel at intervention strength ``s`` in [0, 1]."""
    if panel not in PANELS:
        raise ValueError(f"panel must be one of {tuple(PANELS)}, got {panel!r}")
    n = P.shape[0]
    alpha = strength * NOMINAL_ALPHA if panel in ("a", "d") else 0.0
    weight = 1.0 - strength * (1.0 - DECAY_FACTOR) if panel in ("b", "d") else 1.0
    precondition = _hessian_power(H, -strength / 2) if panel in ("c", "d") else np.eye(n)
    return np.eye(n) - precondition @ (alpha * np.eye(n) + weight * P) @ H


def _complex_list(values: np.ndarray) -> list[list[float]]:
    return [[float(v.real), float(v.imag)] for v in values]


def figure1_data(P: np.ndarray, H: np.ndarray) -> dict:
    """Eigenvalues before, after and along each intervention, with the spectral radii."""
    panels = {}
    for panel, title in PANELS.items():
        strengths = np.linspace(0.0, 1.0, PATH_POINTS + 2)
        spectra = [np.linalg.eigvals(panel_dynamics(panel, s, P, H)) for s in strengths]
        panels[panel] = {
            "title": title,
            "before": _complex_list(spectra[0]),
            "after": _complex_list(spectra[-1]),
            "path": [_complex_list(spectrum) for spectrum in spectra[1:-1]],
            "spectral_radius_before": float(np.max(np.abs(spectra[0]))),
            "spectral_radius_after": float(np.max(np.abs(spectra[-1]))),
        }
    return {
        "interventions": {
            "nominal_alpha": NOMINAL_ALPHA,
            "weight_decay_shrink_factor": DECAY_FACTOR,
            "preconditioner": "H^{-1/2} applied to the optimizer output (eq. 12)",
            "P": f"{P_SCALE} * G / sqrt(N), G i.i.d. standard normal (non-symmetric)",
        },
        "panels": panels,
    }
