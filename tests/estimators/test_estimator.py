"""Estimator objects: config validation, staggered init, end-to-end unbiasedness, and the
contract on real (task, learned optimizer) pairs (finite, structured, deterministic, compiled once).
"""

from __future__ import annotations

import contextlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from star_core import optimizers, tasks
from star_core.estimators import (
    Estimator,
    EstimatorConfig,
    make_estimator,
)
from tests.estimators import estimator_toys as toys

Z_TOLERANCE = 5.0  # standard errors allowed between an estimate and its target
NO_RESET_HORIZON = 10**6  # episodes so long that no pair ends one during a test (prob ~1e-5)


@pytest.mark.parametrize(
    "field,value",
    [
        ("kind", "sgd"),
        ("sigma", 0.0),
        ("sigma", float("inf")),
        ("sigma", float("nan")),
        ("sigma", True),
        ("truncation_length", 0),
        ("horizon", 2.5),
        ("num_pairs", -1),
        ("truncation_length", 20),  # > horizon below
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    fields = {"horizon": 10, field: value}
    with pytest.raises(ValueError, match=f"EstimatorConfig.{field}"):
        EstimatorConfig(**fields)


def _zero_source(seed, num_pairs, num_steps):
    return np.zeros((num_steps, num_pairs), np.float32)


@pytest.mark.slow
def test_init_state_staggers_steps_and_pairs_start_equal():
    problem = toys.sgd_on_quadratic(np.array([1.0, 2.0]), np.array([0, 0]))
    config = EstimatorConfig(kind="pes", truncation_length=5, horizon=40, num_pairs=200)
    state = Estimator(problem, _zero_source, config).init_state(
        {"log_lr": jnp.zeros(1)}, jax.random.key(0)
    )
    steps = np.asarray(state.steps)
    assert steps.min() >= 0 and steps.max() < config.horizon
    assert len(np.unique(steps)) > config.horizon // 2  # 200 uniform draws cover most of [0, 40)
    np.testing.assert_array_equal(state.inner[:200], state.inner[200:])  # + and - start equal
    assert not np.array_equal(state.inner[0], state.inner[1])  # each pair its own init
    np.testing.assert_array_equal(state.accumulator, 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["es", "pes"])
def test_estimator_on_quadratic_meta_loss_matches_a_theta(kind):
    """One call with P pairs. Per pair, g_j = (theta^T A eps) eps / sigma^2 whose coordinate
    variance is |A theta|^2 + (A theta)_i^2 (Gaussian fourth moments): SE = sqrt(that / P)."""
    a_matrix = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    theta = {"w": jnp.array([1.0, -1.5])}
    config = EstimatorConfig(kind, 0.05, 2, NO_RESET_HORIZON, num_pairs=4000)
    estimator = Estimator(toys.quadratic_meta_loss(a_matrix), _zero_source, config)
    state = estimator.init_state(theta, jax.random.key(0))
    grad, _, metrics = estimator.estimate(theta, jax.random.key(1), state)
    target = np.asarray(a_matrix @ theta["w"])
    se = np.sqrt((np.sum(target**2) + target**2) / config.num_pairs)
    assert np.all(np.abs(np.asarray(grad["w"]) - target) <= Z_TOLERANCE * se), (grad, target)
    # meta_loss averages +/- runs: 1/2 theta^T A theta + 1/2 sigma^2 tr(A) in expectation; the
    # sampling std of the eps term over 4000 pairs is ~sigma^2 |A|_F / sqrt(4000) < 1e-4.
    w = theta["w"]
    expected_loss = 0.5 * w @ a_matrix @ w + 0.5 * config.sigma**2 * jnp.trace(a_matrix)
    assert abs(metrics["meta_loss"] - float(expected_loss)) < 1e-3
    assert metrics["inner_steps"] == 2 * 4000 * 2 and metrics["episodes_ended"] == 0


@contextlib.contextmanager
def _count_compilations():
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _direct_meta_loss(task, lopt, theta, inner, batches, num_pairs):
    """Mean normalized loss of each pair trained by lopt.transform(theta), written out by hand."""

    @jax.jit
    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(task.loss)(params, jax.random.key(0), batch)
        updates, opt_state = lopt.transform(theta).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, task.normalizer(loss)

    losses = []
    for j in range(num_pairs):
        params = jax.tree.map(lambda x, j=j: x[j], inner.params)
        opt_state = jax.tree.map(lambda x, j=j: x[j], inner.opt_state)
        for t in range(batches["label"].shape[0]):
            batch = {name: value[t, j] for name, value in batches.items()}
            params, opt_state, loss = train_step(params, opt_state, batch)
            losses.append(float(loss))
    return float(np.mean(losses))


@pytest.mark.slow
@pytest.mark.parametrize("kind,optimizer", [("pes", "star"), ("es", "hyperparam")])
def test_estimator_on_digits_mlp(kind, optimizer):
    task, lopt = tasks.get("digits_mlp"), optimizers.get(optimizer)
    config = EstimatorConfig(kind, 0.01, 3, NO_RESET_HORIZON, num_pairs=2)
    estimator = make_estimator(task, lopt, config)
    seen, source = [], estimator.batch_source  # observe the batches the estimator draws
    estimator.batch_source = lambda *args: seen.append(source(*args)) or seen[-1]
    theta = lopt.init_meta_params(jax.random.key(0))
    state = estimator.init_state(theta, jax.random.key(1))
    start = _copy(state)

    grad, state_a, metrics = estimator.estimate(theta, jax.random.key(2), _copy(start))
    with _count_compilations() as compiles:
        grad_b, state_b, metrics_b = estimator.estimate(theta, jax.random.key(2), _copy(start))
        estimator.estimate(theta, jax.random.key(3), _copy(state_b))  # a returned state
    assert compiles == []  # later calls reuse every compiled function

    assert jax.tree.structure(grad) == jax.tree.structure(theta)
    assert all(
        g.shape == t.shape
        for g, t in zip(jax.tree.leaves(grad), jax.tree.leaves(theta), strict=True)
    )
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
    for x, y in zip(
        jax.tree.leaves((grad, state_a, metrics)),
        jax.tree.leaves((grad_b, state_b, metrics_b)),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)  # deterministic given (theta, key, state)
    # The kernel's meta-loss (mean of +/- runs, sigma-perturbed) equals plain training on the
    # same batches to O(sigma^2); the first K batches of each copy came from task.batches.
    direct = _direct_meta_loss(task, lopt, theta, start.inner, seen[0], config.num_pairs)
    assert metrics["meta_loss"] == pytest.approx(direct, rel=1e-3)
    first = next(itertools.islice(task.batches(0, copies=2), 1))
    assert seen[0]["image"].shape == (3,) + first["image"].shape
