"""Figure 2a's claim, the variance estimator, and meta-training with Adam (Figures 2b, 2c)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core.nqm import NQMMetaTrainConfig, expected_meta_loss, make_problem, meta_train
from star_core.nqm.figure2 import (
    _log10_trace_variance,
    gradient_variance,
    random_symmetric_start,
)
from star_core.nqm.stability import theorem1_holds


@pytest.fixture(scope="module")
def setup():
    with jax.enable_x64(True):
        problem = make_problem(jax.random.key(0), dimension=6)
        P0 = random_symmetric_start(jax.random.key(1), 6)
    return problem, P0


def test_log10_trace_variance_by_hand():
    grads = np.array([[[1.0, 0.0]], [[3.0, 2.0]], [[5.0, 4.0]]])  # per-entry variances 4 and 4
    assert _log10_trace_variance(grads) == pytest.approx(np.log10(8.0), abs=1e-12)
    assert _log10_trace_variance(1e200 * grads) == pytest.approx(400 + np.log10(8.0), abs=1e-9)


@pytest.mark.slow
def test_figure2a_variance_lower_inside_bounds_at_T100(setup):
    problem, P0 = setup
    eig = np.linalg.eigvalsh(P0)
    inside = 0.5 * (-eig[0] + (2.0 - eig[-1]))  # midpoint of Theorem 1's alpha interval
    assert theorem1_holds(inside, P0, problem.H)
    assert not theorem1_holds(0.0, P0, problem.H)
    with jax.enable_x64(True):
        log_var = gradient_variance(problem, P0, [0.0, inside], 100, 64, jax.random.key(2))
    # Statistical margin: 64 samples give log10 variance estimates good to well under 1 decade;
    # the claim is a gap of many decades.
    assert log_var[1] + 3.0 < log_var[0], log_var


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["closed_form", "sample"])
def test_meta_train_reaches_lower_meta_loss(setup, estimator):
    problem, P0 = setup
    config = NQMMetaTrainConfig(
        horizon=20, num_iterations=300, learning_rate=1e-2, estimator=estimator
    )
    alpha = 0.2
    with jax.enable_x64(True):
        result = meta_train(
            alpha,
            P0,
            problem.H,
            problem.phi0,
            problem.sigma_xi,
            config,
            key=jax.random.key(3),
            phi0_cov=problem.phi0_cov,
        )
        start = expected_meta_loss(
            alpha, P0, problem.H, problem.phi0, problem.sigma_xi, 20, phi0_cov=problem.phi0_cov
        )
        end = expected_meta_loss(
            alpha,
            result.P,
            problem.H,
            problem.phi0,
            problem.sigma_xi,
            20,
            phi0_cov=problem.phi0_cov,
        )
    losses = np.asarray(result.meta_loss)
    assert losses.shape == (300,) and result.spectral_radius.shape == (300,)
    assert losses[0] == pytest.approx(float(start), rel=1e-10)  # trace starts at P0's exact loss
    assert float(end) < 0.7 * float(start)
    A0 = np.eye(6) - (alpha * np.eye(6) + P0) @ problem.H
    assert float(result.spectral_radius[0]) == pytest.approx(
        np.max(np.abs(np.linalg.eigvals(A0))), rel=1e-8
    )


def test_meta_train_drops_non_finite_gradients():
    # An exploding start overflows the float32 gradient: the step must leave P unchanged.
    config = NQMMetaTrainConfig(horizon=200, num_iterations=3)
    P0 = jnp.asarray([[-5.0]], dtype=jnp.float32)
    result = meta_train(0.0, P0, [[1.0]], [1.0], [[1.0]], config)
    assert not np.isfinite(float(result.meta_loss[0]))
    np.testing.assert_array_equal(np.asarray(result.P), np.asarray(P0))


def test_config_validation():
    with pytest.raises(ValueError, match="estimator"):
        NQMMetaTrainConfig(estimator="es")
    with pytest.raises(ValueError, match="horizon"):
        NQMMetaTrainConfig(horizon=0)
    for field, value in (("horizon", 1.5), ("num_iterations", True), ("num_samples", "2")):
        with pytest.raises(ValueError, match=f"{field} must be an integer >= 1"):
            NQMMetaTrainConfig(**{field: value})
    with pytest.raises(ValueError, match="key"):
        meta_train(
            0.1,
            np.zeros((1, 1)),
            [[1.0]],
            [1.0],
            [[1.0]],
            NQMMetaTrainConfig(estimator="sample", num_iterations=1),
        )
