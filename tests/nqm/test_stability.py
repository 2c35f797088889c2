"""Theorem 1, Lemmas 2 and 3 (sufficient conditions) and the cancellation example of eqs. 18-19."""

import jax
import numpy as np
import pytest

from star_core.nqm import (
    cancellation_dynamics,
    dynamics_matrix,
    lemma2_holds,
    lemma3_holds,
    spectral_radius,
    theorem1_holds,
)

NUM_DRAWS = 300
NUM_NONSYMMETRIC_DRAWS = 2000
# rho(A) <= 1 + this for every draw that satisfies a sufficient condition (float64 round-off).
RADIUS_SLACK = 1e-6


def _spd(rng, n):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    h = np.exp(rng.uniform(np.log(0.05), np.log(5.0), size=n))
    H = (q * h) @ q.T
    return 0.5 * (H + H.T)


def _symmetric_with_spectrum(rng, eigvals):
    n = len(eigvals)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    P = (q * eigvals) @ q.T
    return 0.5 * (P + P.T)


def _radius(alpha, P, H, preconditioned=False):
    with jax.enable_x64(True):
        return spectral_radius(dynamics_matrix(alpha, P, H, preconditioned))


def _draw_within(rng, n, low, high):
    """Eigenvalues in [low, high] with both ends attained up to 1e-9 (round-off of P's build)."""
    pad = 1e-9 * (high - low)
    low, high = low + pad, high - pad
    inner = rng.uniform(low, high, size=n - 2)
    return np.concatenate([[low, high], inner])


@pytest.mark.slow
@pytest.mark.parametrize("preconditioned", [False, True])
def test_conditions_imply_stability(preconditioned):
    rng = np.random.default_rng(0)
    holds = lemma2_holds if preconditioned else theorem1_holds
    checked = 0
    for _ in range(NUM_DRAWS):
        n = int(rng.integers(2, 7))
        H = _spd(rng, n)
        lambda_max = np.linalg.eigvalsh(H)[-1]
        top = 2.0 / (np.sqrt(lambda_max) if preconditioned else lambda_max)
        alpha = rng.uniform(0.0, top)
        P = _symmetric_with_spectrum(rng, _draw_within(rng, n, -alpha, top - alpha))
        assert holds(alpha, P, H)
        assert _radius(alpha, P, H, preconditioned) <= 1.0 + RADIUS_SLACK
        checked += 1
    assert checked == NUM_DRAWS


def test_lemma3_conditions_imply_robust_stability():
    rng = np.random.default_rng(1)
    for draw in range(NUM_DRAWS):
        n = int(rng.integers(2, 7))
        H = _spd(rng, n)
        top = 2.0 / np.linalg.eigvalsh(H)[-1]
        alpha = rng.uniform(0.01, 0.99) * top
        d_bar = rng.uniform(0.2, 3.0, size=n)
        d_max = d_bar.max()
        spectrum = _draw_within(rng, n, -alpha / d_max, (top - alpha) / d_max)
        if draw % 2 == 0:
            # P~ diagonal: commutes with every diagonal Delta.
            P_tilde, d = np.diag(spectrum), rng.uniform(0.0, 1.0, size=n) * d_bar
        else:
            # P~ dense symmetric: simultaneously diagonalizable with Delta = c I only.
            P_tilde = _symmetric_with_spectrum(rng, spectrum)
            d = np.full(n, rng.uniform(0.0, 1.0) * d_bar.min())
        d = np.maximum(d, 1e-3)
        assert lemma3_holds(alpha, P_tilde, H, d_bar)
        assert _radius(alpha, np.diag(d) @ P_tilde, H) <= 1.0 + RADIUS_SLACK
        # The worst case d = d_bar (when it is admissible) is stable too.
        if draw % 2 == 0:
            assert _radius(alpha, np.diag(d_bar) @ P_tilde, H) <= 1.0 + RADIUS_SLACK


def test_boundaries_by_hand():
    H = np.diag([0.5, 1.0])  # lambda_max = 1: (10) is lambda_max(P) <= 2 - alpha
    alpha = 0.5
    assert theorem1_holds(alpha, np.diag([-0.5, 1.5]), H)
    assert not theorem1_holds(alpha, np.diag([-0.51, 1.0]), H)  # violates (9)
    assert not theorem1_holds(alpha, np.diag([0.0, 1.51]), H)  # violates (10)
    H4 = np.diag([1.0, 4.0])  # (13): lambda_max(P) <= 2 / sqrt(4) - alpha = 0.5
    assert lemma2_holds(alpha, np.diag([0.0, 0.5]), H4)
    assert not lemma2_holds(alpha, np.diag([0.0, 0.6]), H4)
    assert not theorem1_holds(alpha, np.diag([0.0, 0.5]), H4)  # (10) is 0.5 - 0.5 = 0 here
    d_bar = np.array([1.0, 2.0])  # (16): >= -0.25, (17): <= (2 - 0.5) / 2 = 0.75 with H
    assert lemma3_holds(alpha, np.diag([-0.25, 0.75]), H, d_bar)
    assert not lemma3_holds(alpha, np.diag([-0.26, 0.75]), H, d_bar)
    assert not lemma3_holds(alpha, np.diag([-0.25, 0.76]), H, d_bar)
    assert not lemma3_holds(0.0, np.diag([0.1, 0.2]), H, d_bar)  # needs alpha > 0


def test_violations_of_each_condition_can_be_unstable():
    rng = np.random.default_rng(2)
    unstable = {"(9)": 0, "(10)": 0}
    for _ in range(100):
        n = int(rng.integers(2, 6))
        H = _spd(rng, n)
        top = 2.0 / np.linalg.eigvalsh(H)[-1]
        alpha = rng.uniform(0.0, top)
        margin = rng.uniform(0.05, 1.0) * top
        too_low = _symmetric_with_spectrum(rng, _draw_within(rng, n, -alpha - margin, 0.0))
        too_high = _symmetric_with_spectrum(rng, _draw_within(rng, n, -alpha, top - alpha + margin))
        assert not theorem1_holds(alpha, too_low, H)
        assert not theorem1_holds(alpha, too_high, H)
        unstable["(9)"] += _radius(alpha, too_low, H) > 1.0 + 1e-3
        unstable["(10)"] += _radius(alpha, too_high, H) > 1.0 + 1e-3
    assert unstable["(9)"] > 0 and unstable["(10)"] > 0, unstable
    # A concrete case of each: gradient ascent along an eigenvector, and overshoot.
    H = np.eye(2)
    assert _radius(0.1, np.diag([-0.3, 0.0]), H) == pytest.approx(1.2)
    assert _radius(0.1, np.diag([0.0, 2.2]), H) == pytest.approx(1.3)


def test_cancellation_example_leaves_unit_circle():
    # Eqs. 18-19: P~ = P* - alpha I under Delta = (1 - eps) I. P* is a stable optimum-like
    # learned matrix that takes a small step along one direction (p* < alpha there).
    H = np.diag([1.0, 0.5, 0.2])
    alpha = 1.0
    P_star = np.diag([0.9, 1.5, 0.05])
    with jax.enable_x64(True):
        A_direct = np.asarray(dynamics_matrix(alpha, (1.0 - 0.3) * (P_star - alpha * np.eye(3)), H))
    np.testing.assert_allclose(cancellation_dynamics(alpha, P_star, H, 0.3), A_direct, atol=1e-12)
    expected = np.eye(3) - alpha * 0.3 * H - 0.7 * P_star @ H  # eq. 19's dynamics matrix
    np.testing.assert_allclose(cancellation_dynamics(alpha, P_star, H, 0.3), expected, atol=1e-12)

    assert spectral_radius(cancellation_dynamics(alpha, P_star, H, 0.0)) < 1.0
    eps_grid = np.linspace(-1.0, 1.0, 201)
    radii = np.array(
        [spectral_radius(cancellation_dynamics(alpha, P_star, H, eps)) for eps in eps_grid]
    )
    assert np.any(radii > 1.0), "the cancellation should be destabilized by some eps <= 1"
    worst = eps_grid[np.argmax(radii)]
    assert worst < 0  # Delta = (1 - eps) I > I amplifies P~'s negative eigenvalue p* - alpha
    # Without the cancellation (nominal term off, P = Delta P*) the same Delta stays stable.
    direct = spectral_radius(np.eye(3) - (1.0 - worst) * P_star @ H)
    assert direct < 1.0


def _eigenvalue_conditions_hold(alpha, P, H):
    """What the helpers computed before they refused non-symmetric P: (9) and (10) on the
    eigenvalues of P whenever those are real."""
    eigvals = np.linalg.eigvals(P)
    if np.max(np.abs(eigvals.imag)) > 1e-9 * max(1.0, np.max(np.abs(eigvals))):
        return False
    top = 2.0 / np.linalg.eigvalsh(H)[-1]
    return bool(-alpha <= eigvals.real.min() and eigvals.real.max() <= top - alpha)


def test_non_symmetric_P_is_refused_and_would_have_been_certified_wrongly():
    # P = S diag(p) S^{-1}: diagonalizable with real eigenvalues p inside (9)-(10), the paper's
    # stated hypothesis, yet not symmetric. The proof needs symmetry and the certificate fails.
    rng = np.random.default_rng(3)
    certified_but_unstable = 0
    for _ in range(NUM_NONSYMMETRIC_DRAWS):
        n = int(rng.integers(2, 6))
        H = _spd(rng, n)
        top = 2.0 / np.linalg.eigvalsh(H)[-1]
        alpha = rng.uniform(0.0, top)
        S = rng.normal(size=(n, n))
        P = S @ np.diag(rng.uniform(-alpha, top - alpha, size=n)) @ np.linalg.inv(S)
        radius = np.max(np.abs(np.linalg.eigvals(np.eye(n) - (alpha * np.eye(n) + P) @ H)))
        if _eigenvalue_conditions_hold(alpha, P, H) and radius > 1.0 + RADIUS_SLACK:
            certified_but_unstable += 1
        for check in (theorem1_holds, lemma2_holds):
            with pytest.raises(ValueError, match="not symmetric"):
                check(alpha, P, H)
        with pytest.raises(ValueError, match="not symmetric"):
            lemma3_holds(alpha, P, H, np.ones(n))
    # Measured: 450 of 2000 draws meet (9)-(10) on their real eigenvalues and have rho(A) > 1.
    assert certified_but_unstable > NUM_NONSYMMETRIC_DRAWS // 10, certified_but_unstable


def test_complex_spectrum_jordan_block_and_indefinite_H_are_refused():
    H = np.array([[0.75, -0.25], [-0.25, 0.75]])  # eigenvalues 0.5 and 1
    rotation = np.array([[0.1, -0.2], [0.2, 0.1]])  # eigenvalues 0.1 +- 0.2i
    jordan = np.array([[0.0, 3.0], [0.0, 0.0]])  # not diagonalizable; eigenvalue 0 meets (9)-(10)
    for P in (rotation, jordan):
        for check in (theorem1_holds, lemma2_holds):
            with pytest.raises(ValueError, match="not symmetric"):
                check(0.5, P, H)
    # The Jordan block is unstable all the same: rho(I - (0.5 I + J) H) = 1.0607 (numpy).
    A = np.eye(2) - (0.5 * np.eye(2) + jordan) @ H
    assert np.max(np.abs(np.linalg.eigvals(A))) == pytest.approx(1.0606601717798212, rel=1e-9)
    with pytest.raises(ValueError, match="positive definite"):
        theorem1_holds(0.5, np.eye(2), np.diag([1.0, -0.1]))
    with pytest.raises(ValueError, match="square"):
        lemma2_holds(0.5, np.ones((2, 3)), H)
    # Round-off asymmetry (float32) is accepted and evaluated on the symmetric part.
    P = np.diag([-0.5, 1.5]) + np.array([[0.0, 1e-8], [0.0, 0.0]])
    assert theorem1_holds(0.5, P.astype(np.float32), np.diag([0.5, 1.0]))
