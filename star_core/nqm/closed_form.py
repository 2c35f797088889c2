"""Closed-form and sampled meta-loss of the noisy quadratic model (paper eqs. 4, 7 and 8).

Under ``phi_{t+1} = A phi_t + (I - A) xi_t`` (see :mod:`star_core.nqm.dynamics`) the parameter after
t updates is Gaussian, ``phi_t ~ N(A^t phi_0, Sigma_t)`` with (eq. 7)

    Sigma_t = sum_{k=0}^{t-1} A^{t-k-1} (I - A) Sigma_xi ((I - A))^T (A^{t-k-1})^T,

which this module computes with the equivalent recursion ``Sigma_{t+1} = A Sigma_t A^T +
(I - A) Sigma_xi (I - A)^T``, ``Sigma_0 = 0``. The loss at step t is evaluated on the fresh sample
``xi_t`` (the one whose gradient drives the next update), independent of ``phi_t``, so

    E[l_t(phi_t)] = 1/2 (A^t phi_0)^T H (A^t phi_0) + 1/2 tr(H (Sigma_t + Sigma_xi)),

and the meta-loss is the average over ``t = 1..T`` (eq. 8, with eq. 4's factor 1/2 kept).
``sample_meta_loss`` simulates one trajectory of exactly this quantity, so its expectation equals
``expected_meta_loss``; both are differentiable in ``P`` with ``jax.grad``.

Optionally the initial point is itself random, ``phi_0 ~ N(phi0, phi0_cov)`` (a distribution of
tasks rather than one start): the closed form then starts the recursion from ``Sigma_0 = phi0_cov``
and the sampler draws ``phi_0``; with ``phi0_cov=None`` the start is the fixed ``phi0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from star_core.nqm.dynamics import dynamics_matrix


def _as_problem(
    P: ArrayLike,
    H: ArrayLike,
    phi0: ArrayLike,
    sigma_xi: ArrayLike,
    phi0_cov: ArrayLike | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    P = jnp.asarray(P)
    dtype = P.dtype
    phi0_cov = jnp.zeros_like(P) if phi0_cov is None else jnp.asarray(phi0_cov, dtype)
    return (
        P,
        jnp.asarray(H, dtype),
        jnp.asarray(phi0, dtype),
        jnp.asarray(sigma_xi, dtype),
        phi0_cov,
    )


def expected_step_losses(
    alpha: ArrayLike,
    P: ArrayLike,
    H: ArrayLike,
    phi0: ArrayLike,
    sigma_xi: ArrayLike,
    T: int,
    preconditioned: bool = False,
    phi0_cov: ArrayLike | None = None,
) -> jax.Array:
    """``E[l_t(phi_t)]`` for ``t = 1..T`` as a length-T array (closed form of eqs. 7-8)."""
    P, H, phi0, sigma_xi, phi0_cov = _as_problem(P, H, phi0, sigma_xi, phi0_cov)
    A = dynamics_matrix(alpha, P, H, preconditioned)
    B = jnp.eye(P.shape[0], dtype=P.dtype) - A
    injected = B @ sigma_xi @ B.T
    noise_floor = 0.5 * jnp.trace(H @ sigma_xi)

    def step(
        carry: tuple[jax.Array, jax.Array], _: None
    ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        mean, cov = carry
        mean = A @ mean
        cov = A @ cov @ A.T + injected
        loss = 0.5 * mean @ H @ mean + 0.5 * jnp.sum(H * cov) + noise_floor
        return (mean, cov), loss

    init = (phi0, phi0_cov)
    _, losses = jax.lax.scan(step, init, None, length=int(T))
    return losses


def expected_meta_loss(
    alpha: ArrayLike,
    P: ArrayLike,
    H: ArrayLike,
    phi0: ArrayLike,
    sigma_xi: ArrayLike,
    T: int,
    preconditioned: bool = False,
    phi0_cov: ArrayLike | None = None,
) -> jax.Array:
    """Expected meta-loss ``L(theta; T) = 1/T sum_{t=1}^T E[l_t(phi_t)]`` (eq. 8).

    Args:
      alpha: nominal step size.
      P: learned ``N x N`` preconditioner (differentiate with respect to it with ``jax.grad``).
      H: ``N x N`` symmetric positive definite Hessian.
      phi0: initial parameters, length N.
      sigma_xi: ``N x N`` covariance of the minimum's noise ``xi_t``.
      T: horizon (a Python int).
      preconditioned: use the ``H^{-1/2}`` dynamics of eq. 12.
      phi0_cov: optional ``N x N`` covariance of a random start ``phi_0 ~ N(phi0, phi0_cov)``.

    Returns:
      A scalar JAX array.
    """
    return jnp.mean(expected_step_losses(alpha, P, H, phi0, sigma_xi, T, preconditioned, phi0_cov))


def _noise_factor(sigma_xi: jax.Array) -> jax.Array:
    """A square root ``L`` with ``L L^T = Sigma_xi``; works for any symmetric PSD matrix."""
    eigvals, eigvecs = jnp.linalg.eigh(sigma_xi)
    return eigvecs * jnp.sqrt(jnp.clip(eigvals, 0.0, None))


def sample_step_losses(
    key: jax.Array,
    alpha: ArrayLike,
    P: ArrayLike,
    H: ArrayLike,
    phi0: ArrayLike,
    sigma_xi: ArrayLike,
    T: int,
    preconditioned: bool = False,
    phi0_cov: ArrayLike | None = None,
) -> jax.Array:
    """``l_t(phi_t) = 1/2 (phi_t - xi_t)^T H (phi_t - xi_t)`` for ``t = 1..T`` on one trajectory.

    Splits ``key`` into one key for ``phi_0`` (used only with ``phi0_cov``) and one for
    ``xi_0..xi_T`` (T + 1 samples): ``xi_t`` drives the update from ``phi_t`` and is also the
    sample on which the loss at ``phi_t`` is measured.
    """
    P, H, phi0, sigma_xi, phi0_cov = _as_problem(P, H, phi0, sigma_xi, phi0_cov)
    n = P.shape[0]
    A = dynamics_matrix(alpha, P, H, preconditioned)
    B = jnp.eye(n, dtype=P.dtype) - A
    key_init, key_noise = jax.random.split(key)
    phi0 = phi0 + _noise_factor(phi0_cov) @ jax.random.normal(key_init, (n,), dtype=P.dtype)
    noise = jax.random.normal(key_noise, (int(T) + 1, n), dtype=P.dtype)
    noise = noise @ _noise_factor(sigma_xi).T

    def step(phi: jax.Array, xis: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        xi_now, xi_next = xis
        phi = A @ phi + B @ xi_now
        residual = phi - xi_next
        return phi, 0.5 * residual @ H @ residual

    _, losses = jax.lax.scan(step, phi0, (noise[:-1], noise[1:]))
    return losses


def sample_meta_loss(
    key: jax.Array,
    alpha: ArrayLike,
    P: ArrayLike,
    H: ArrayLike,
    phi0: ArrayLike,
    sigma_xi: ArrayLike,
    T: int,
    preconditioned: bool = False,
    phi0_cov: ArrayLike | None = None,
) -> jax.Array:
    """One simulated trajectory's meta-loss ``1/T sum_{t=1}^T l_t(phi_t)``; unbiased for eq. 8.

    Same arguments as :func:`expected_meta_loss`, plus a JAX PRNG ``key`` (consumed here).
    ``jax.grad`` with respect to ``P`` gives the single-trajectory meta-gradient (Figure 2a).
    """
    return jnp.mean(
        sample_step_losses(key, alpha, P, H, phi0, sigma_xi, T, preconditioned, phi0_cov)
    )
