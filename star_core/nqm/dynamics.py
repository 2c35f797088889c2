"""Linear update dynamics of a learned optimizer on the noisy quadratic model (paper Section 4).

Harrison, Metz, Sohl-Dickstein, "A Closer Look at Learned Optimization: Stability, Robustness,
and Inductive Biases", NeurIPS 2022, eqs. 4-6 and 12.

The inner loss at step t is ``l_t(phi) = 1/2 (phi - xi_t)^T H (phi - xi_t)`` with
``xi_t ~ N(0, Sigma_xi)``, so ``grad_t = H (phi_t - xi_t)``. A linear learned optimizer with a
nominal gradient term of size ``alpha`` updates

    phi_{t+1} = phi_t - K (alpha I + P) grad_t = A phi_t + (I - A) xi_t,
    A = I - K (alpha I + P) H,

with ``K = I`` (eq. 6) or, for the preconditioned variant, ``K = H^{-1/2}`` (eq. 12). The system is
stable iff the spectral radius ``rho(A) = max_i |lambda_i(A)|`` is below one.

Every function here accepts JAX or NumPy arrays and keeps their dtype; they are pure and
differentiable in ``P`` (except the NumPy eigen-analysis helpers, which work in float64).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from numpy.typing import ArrayLike as NumpyArrayLike


def inverse_sqrt_spd(H: ArrayLike) -> jax.Array:
    """``H^{-1/2}`` of a symmetric positive definite matrix, through its eigendecomposition."""
    eigvals, eigvecs = jnp.linalg.eigh(H)
    return (eigvecs * (1.0 / jnp.sqrt(eigvals))) @ eigvecs.T


def step_matrix(
    alpha: ArrayLike, P: ArrayLike, H: ArrayLike, preconditioned: bool = False
) -> jax.Array:
    """The matrix ``K (alpha I + P)`` that multiplies the gradient in one update."""
    P = jnp.asarray(P)
    learned = jnp.eye(P.shape[0], dtype=P.dtype) * alpha + P
    if preconditioned:
        return inverse_sqrt_spd(jnp.asarray(H, dtype=P.dtype)) @ learned
    return learned


def dynamics_matrix(
    alpha: ArrayLike, P: ArrayLike, H: ArrayLike, preconditioned: bool = False
) -> jax.Array:
    """The dynamics matrix ``A = I - K (alpha I + P) H``: eq. 6 (K = I) or eq. 12 (K = H^{-1/2}).

    Args:
      alpha: the nominal step size (a scalar).
      P: the learned preconditioner, an ``N x N`` matrix.
      H: the Hessian of the quadratic, ``N x N`` symmetric positive definite.
      preconditioned: apply ``H^{-1/2}`` to the optimizer's output (eq. 12).

    Returns:
      ``A`` as a JAX array with ``P``'s dtype.
    """
    P = jnp.asarray(P)
    H = jnp.asarray(H, dtype=P.dtype)
    return jnp.eye(P.shape[0], dtype=P.dtype) - step_matrix(alpha, P, H, preconditioned) @ H


def eigenvalues(A: NumpyArrayLike) -> np.ndarray:
    """Eigenvalues of ``A`` (any leading batch dimensions), computed in NumPy float64."""
    return np.linalg.eigvals(np.asarray(A, dtype=np.float64))


def spectral_radius(A: NumpyArrayLike) -> float:
    """``rho(A) = max_i |lambda_i(A)|``, computed in float64."""
    return float(np.max(np.abs(eigenvalues(A))))


def spectral_radii(A_batch: NumpyArrayLike) -> np.ndarray:
    """``rho`` of each matrix of a stack ``(..., N, N)``, in float64."""
    return np.max(np.abs(eigenvalues(A_batch)), axis=-1)
