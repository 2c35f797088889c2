"""Closed-form meta-loss (eqs. 7-8) against Monte Carlo and against a literal loop over eq. 7."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core.nqm import (
    dynamics_matrix,
    expected_meta_loss,
    expected_step_losses,
    inverse_sqrt_spd,
    sample_meta_loss,
)

# Monte-Carlo agreement bound, in standard errors of the sample mean.
NUM_STANDARD_ERRORS = 5.0
NUM_TRAJECTORIES = 4000


def _problem(n, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    H = (q * np.geomspace(0.2, 1.0, n)) @ q.T
    P = 0.3 * rng.normal(size=(n, n))  # non-symmetric on purpose
    phi0 = rng.normal(size=n) * 2.0
    L = rng.normal(size=(n, n)) * 0.5
    sigma_xi = L @ L.T + 0.1 * np.eye(n)  # a general covariance, not the identity
    return 0.5 * (H + H.T), P, phi0, sigma_xi


def _literal_eq7_losses(alpha, P, H, phi0, sigma_xi, T, preconditioned, phi0_cov):
    """E[l_t] for t = 1..T from eq. 7 summed term by term with matrix powers (NumPy)."""
    n = len(phi0)
    eigvals, eigvecs = np.linalg.eigh(H)
    K = (eigvecs / np.sqrt(eigvals)) @ eigvecs.T if preconditioned else np.eye(n)
    A = np.eye(n) - K @ (alpha * np.eye(n) + P) @ H
    B = np.eye(n) - A
    losses = []
    for t in range(1, T + 1):
        At = np.linalg.matrix_power(A, t)
        sigma_t = At @ phi0_cov @ At.T
        for k in range(t):
            G = np.linalg.matrix_power(A, t - k - 1) @ B
            sigma_t += G @ sigma_xi @ G.T
        mean = At @ phi0
        losses.append(0.5 * mean @ H @ mean + 0.5 * np.trace(H @ (sigma_t + sigma_xi)))
    return np.array(losses)


@pytest.mark.parametrize("preconditioned", [False, True])
@pytest.mark.parametrize("random_start", [False, True])
def test_closed_form_matches_literal_eq7(preconditioned, random_start):
    H, P, phi0, sigma_xi = _problem(4, seed=1)
    phi0_cov = 0.7 * np.eye(4) if random_start else np.zeros((4, 4))
    T, alpha = 6, 0.4
    expected = _literal_eq7_losses(alpha, P, H, phi0, sigma_xi, T, preconditioned, phi0_cov)
    with jax.enable_x64(True):
        steps = expected_step_losses(
            alpha,
            P,
            H,
            phi0,
            sigma_xi,
            T,
            preconditioned,
            phi0_cov if random_start else None,
        )
        mean = expected_meta_loss(
            alpha, P, H, phi0, sigma_xi, T, preconditioned, phi0_cov if random_start else None
        )
    np.testing.assert_allclose(np.asarray(steps), expected, rtol=1e-10)
    np.testing.assert_allclose(float(mean), expected.mean(), rtol=1e-10)


def test_one_step_by_hand():
    # N = 1, T = 1: phi_1 = a phi0 + (1 - a) xi_0 with a = 1 - (alpha + p) h;
    # E l_1 = 1/2 h (a^2 phi0^2 + (1 - a)^2 s + s).
    h, p, alpha, phi0, s = 2.0, 0.1, 0.2, 3.0, 0.5
    a = 1.0 - (alpha + p) * h
    by_hand = 0.5 * h * (a**2 * phi0**2 + (1 - a) ** 2 * s + s)
    with jax.enable_x64(True):
        value = expected_meta_loss(alpha, [[p]], [[h]], [phi0], [[s]], 1)
    assert float(value) == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("alpha", "preconditioned", "random_start"),
    [(0.3, False, False), (0.5, True, False), (0.3, False, True)],
)
def test_monte_carlo_mean_matches_closed_form(alpha, preconditioned, random_start):
    H, P, phi0, sigma_xi = _problem(5, seed=2)
    P = 0.2 * P
    phi0_cov = 0.5 * np.eye(5) if random_start else None
    T = 12
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(3), NUM_TRAJECTORIES)
        samples = jax.vmap(
            lambda k: sample_meta_loss(k, alpha, P, H, phi0, sigma_xi, T, preconditioned, phi0_cov)
        )(keys)
        exact = float(expected_meta_loss(alpha, P, H, phi0, sigma_xi, T, preconditioned, phi0_cov))
    samples = np.asarray(samples)
    standard_error = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(samples.mean() - exact) < NUM_STANDARD_ERRORS * standard_error
    # The bound is informative: dropping the noise floor 1/2 tr(H Sigma_xi) would fail it.
    assert 0.5 * np.trace(H @ sigma_xi) > 10 * NUM_STANDARD_ERRORS * standard_error


@pytest.mark.slow
def test_monte_carlo_meta_gradient_matches_closed_form_gradient():
    H, P, phi0, sigma_xi = _problem(3, seed=4)
    P, alpha, T = 0.2 * P, 0.4, 8
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(5), NUM_TRAJECTORIES)
        grads = jax.vmap(
            lambda k: jax.grad(lambda p: sample_meta_loss(k, alpha, p, H, phi0, sigma_xi, T))(
                jnp.asarray(P)
            )
        )(keys)
        exact = jax.grad(lambda p: expected_meta_loss(alpha, p, H, phi0, sigma_xi, T))(
            jnp.asarray(P)
        )
    grads = np.asarray(grads)
    standard_error = grads.std(axis=0, ddof=1) / np.sqrt(len(grads))
    error = np.abs(grads.mean(axis=0) - np.asarray(exact))
    assert np.all(error < NUM_STANDARD_ERRORS * standard_error)


def test_dynamics_matrix_eq6_and_eq12():
    H, P, _, _ = _problem(4, seed=6)
    alpha = 0.3
    with jax.enable_x64(True):
        A = np.asarray(dynamics_matrix(alpha, P, H))
        A_pre = np.asarray(dynamics_matrix(alpha, P, H, preconditioned=True))
        h_inv_sqrt = np.asarray(inverse_sqrt_spd(H))
    np.testing.assert_allclose(A, np.eye(4) - (alpha * np.eye(4) + P) @ H, atol=1e-12)
    np.testing.assert_allclose(h_inv_sqrt @ H @ h_inv_sqrt, np.eye(4), atol=1e-10)
    expected = np.eye(4) - h_inv_sqrt @ (alpha * np.eye(4) + P) @ H
    np.testing.assert_allclose(A_pre, expected, atol=1e-10)
