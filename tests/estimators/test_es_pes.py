"""ES and PES kernels: unbiasedness on known meta-losses, truncation bias, PES bookkeeping.

Statistical tolerances: every estimate is a mean over N independent samples (replicas with one
pair each, made independent by separate keys); a check passes if the mean is within
``Z_TOLERANCE`` standard errors (sample std / sqrt(N)) of its target, coordinate by coordinate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core.estimators import ESState, PESState, es_grad, pes_grad
from star_core.estimators.unroll import tile_signs
from tests.estimators import estimator_toys as toys

pytestmark = pytest.mark.slow  # every test compiles and runs JAX code for seconds

Z_TOLERANCE = 5.0  # standard errors allowed between a sample mean and its target
NUM_SAMPLES = 4000  # independent single-pair replicas per statistical test

A_MATRIX = jnp.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
THETA_W = jnp.array([1.0, -2.0, 0.5])

SGD_H = np.array([0.5, 1.0, 2.0, 4.0])
SGD_GROUPS = np.array([0, 0, 1, 1])
SGD_THETA = {"log_lr": jnp.log(jnp.array([0.1, 0.05]))}
SGD_HORIZON = 11  # T + 1 = 12 iterations = 3 truncations of length 4
SGD_TRUNCATION = 4
SIGMA = 0.01


def _standard_error(samples: np.ndarray) -> np.ndarray:
    return samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])


def _assert_close_statistically(samples, target, label):
    mean, se = samples.mean(axis=0), _standard_error(samples)
    err = np.abs(mean - np.asarray(target))
    assert np.all(err <= Z_TOLERANCE * se), f"{label}: mean {mean}, target {target}, se {se}"


def _replica_inputs(key, num_steps, sigma, dim):
    """Per-replica eps [R, 1, D], step keys [R, K, 1], reset keys [R, 1]."""
    eps_key, steps_key, reset_key = jax.random.split(key, 3)
    eps = sigma * jax.random.normal(eps_key, (NUM_SAMPLES, 1, dim))
    keys = jax.vmap(lambda k: toys.step_keys(k, num_steps, 1))(
        jax.random.split(steps_key, NUM_SAMPLES)
    )
    reset_keys = jax.random.split(reset_key, NUM_SAMPLES)[:, None]
    return eps, keys, reset_keys


def _run(kernel, problem, horizon, sigma, theta, states, num_steps, num_truncations, key):
    """Sum of per-truncation estimates per replica: ``[R, D]`` (flattened theta order)."""
    dim = jax.flatten_util.ravel_pytree(theta)[0].size
    fn = jax.jit(
        jax.vmap(
            lambda s, e, b, k, r: kernel(problem, horizon, sigma, theta, s, e, b, k, r),
            in_axes=(0, 0, None, 0, 0),
        )
    )
    batches = toys.zero_batches(num_steps, 1)
    total = np.zeros((NUM_SAMPLES, dim))
    for key_i in jax.random.split(key, num_truncations):
        eps, keys, reset_keys = _replica_inputs(key_i, num_steps, sigma, dim)
        grads, states, _ = fn(states, eps, batches, keys, reset_keys)
        total += np.asarray(jax.vmap(lambda g: jax.flatten_util.ravel_pytree(g)[0])(grads))
    return total


def _fresh_states(problem, theta, kind, key):
    inner = jax.vmap(lambda k: jax.vmap(problem.init, (None, 0))(theta, k[None]))(
        jax.random.split(key, NUM_SAMPLES)
    )
    steps = jnp.zeros((NUM_SAMPLES, 1), jnp.int32)
    if kind == "es":
        return ESState(inner=inner, steps=steps)
    dim = jax.flatten_util.ravel_pytree(theta)[0].size
    return PESState(
        inner=jax.vmap(tile_signs)(inner), steps=steps, accumulator=jnp.zeros((NUM_SAMPLES, 1, dim))
    )


@pytest.mark.parametrize("kernel,kind", [(es_grad, "es"), (pes_grad, "pes")])
def test_quadratic_meta_loss_smoothed_gradient_is_a_theta(kernel, kind):
    """No episode end: every truncation's estimate is unbiased for A theta (PES: uncorrelated)."""
    problem, theta = toys.quadratic_meta_loss(A_MATRIX), {"w": THETA_W}
    states = _fresh_states(problem, theta, kind, jax.random.key(0))
    samples = []
    for i in range(3):  # PES: the accumulator grows over truncations; still unbiased
        samples.append(_run(kernel, problem, 100, 0.1, theta, states, 2, 1, jax.random.key(10 + i)))
        if kind == "es":
            break
    _assert_close_statistically(np.concatenate(samples), A_MATRIX @ THETA_W, kind)


def test_pes_one_truncation_per_episode_on_quadratic():
    """T = K - 1: each truncation is a whole episode ending in its masked reset iteration."""
    problem, theta = toys.quadratic_meta_loss(A_MATRIX), {"w": THETA_W}
    num_steps = 4
    horizon = num_steps - 1
    states = _fresh_states(problem, theta, "pes", jax.random.key(1))
    samples = _run(pes_grad, problem, horizon, 0.1, theta, states, num_steps, 2, jax.random.key(2))
    # Two episodes summed; each carries T/K of the step losses (the reset iteration holds none).
    target = 2 * (horizon / num_steps) * (A_MATRIX @ THETA_W)
    _assert_close_statistically(samples, target, "pes T=K-1")


def _sgd_gradient(truncation=None):
    loss = lambda th: toys.sgd_expected_meta_loss(th, SGD_H, SGD_GROUPS, SGD_HORIZON, truncation)
    return np.asarray(jax.grad(loss)(SGD_THETA)["log_lr"])


def _sgd_episode_estimates(kernel, kind, num_steps, num_truncations, key):
    """One full episode per replica (from step 0), as an estimate of grad L(theta; T)."""
    problem = toys.sgd_on_quadratic(SGD_H, SGD_GROUPS)
    init_key, run_key = jax.random.split(key)
    states = _fresh_states(problem, SGD_THETA, kind, init_key)
    total = _run(
        kernel, problem, SGD_HORIZON, SIGMA, SGD_THETA, states, num_steps, num_truncations, run_key
    )
    return total * num_steps / SGD_HORIZON


def test_pes_agrees_with_full_horizon_es_and_closed_form():
    exact = _sgd_gradient()
    full_es = _sgd_episode_estimates(es_grad, "es", SGD_HORIZON, 1, jax.random.key(3))
    pes = _sgd_episode_estimates(pes_grad, "pes", SGD_TRUNCATION, 3, jax.random.key(4))
    _assert_close_statistically(full_es, exact, "full-horizon ES vs closed form")
    _assert_close_statistically(pes, exact, "PES vs closed form")
    diff = pes.mean(axis=0) - full_es.mean(axis=0)
    joint_se = np.sqrt(_standard_error(pes) ** 2 + _standard_error(full_es) ** 2)
    assert np.all(np.abs(diff) <= Z_TOLERANCE * joint_se), (diff, joint_se)


def test_truncated_es_shows_the_truncation_bias():
    exact, truncated = _sgd_gradient(), _sgd_gradient(truncation=SGD_TRUNCATION)
    es = _sgd_episode_estimates(es_grad, "es", SGD_TRUNCATION, 3, jax.random.key(5))
    _assert_close_statistically(es, truncated, "truncated ES vs truncated target")
    se = _standard_error(es)
    assert np.all(np.abs(es.mean(axis=0) - exact) > Z_TOLERANCE * se), (es.mean(0), exact, se)
    # Short truncations see less of the long-term benefit of a larger learning rate.
    assert np.all(np.abs(truncated) < np.abs(exact))


@pytest.mark.parametrize(
    "horizon,start,old_steps,new_steps,acc_after,steps_after",
    [
        (100, 0, 2, 0, "tilde", 2),  # no episode end: A <- A + eps
        (2, 2, 0, 1, "eps", 1),  # end at the first iteration: new episode saw eps only
        (2, 1, 1, 0, "zero", 0),  # end at the last iteration: nothing depends on eps yet
    ],
)
def test_pes_accumulator_and_loss_split_by_hand(
    horizon, start, old_steps, new_steps, acc_after, steps_after
):
    problem, theta, sigma, num_steps = toys.quadratic_meta_loss(A_MATRIX), {"w": THETA_W}, 0.1, 2
    eps = jnp.array([[0.05, -0.1, 0.2]])
    acc = jnp.array([[0.3, 0.0, -0.1]])
    state = PESState(inner=jnp.zeros(2), steps=jnp.array([start], jnp.int32), accumulator=acc)
    keys = toys.step_keys(jax.random.key(0), num_steps, 1)
    grad, new_state, record = pes_grad(
        problem,
        horizon,
        sigma,
        theta,
        state,
        eps,
        toys.zero_batches(num_steps, 1),
        keys,
        jax.random.split(jax.random.key(1), 1),
    )
    # Per training step, L(theta + e) - L(theta - e) = 2 theta^T A e for L = 1/2 w^T A w.
    per_step = float(2.0 * THETA_W @ A_MATRIX @ eps[0])
    tilde = acc[0] + eps[0]
    expected = (old_steps * per_step * tilde + new_steps * per_step * eps[0]) / num_steps
    np.testing.assert_allclose(grad["w"], expected / (2 * sigma**2), rtol=1e-5)
    expected_acc = {"tilde": tilde, "eps": eps[0], "zero": jnp.zeros(3)}[acc_after]
    np.testing.assert_allclose(new_state.accumulator[0], expected_acc, rtol=1e-6)
    assert int(new_state.steps[0]) == steps_after
    assert float(record.masks.sum()) == old_steps + new_steps
