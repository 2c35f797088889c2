"""One PES meta-gradient step on a real learned optimizer lowers the meta-loss.

Set-up: an untrained STAR (``init_meta_params``) meta-trained on ``nqm`` (dim 8) with horizon
``T = 20``. One PES estimate ``g`` (``P = 64`` pairs, ``K = 10``, ``sigma = 0.01``, through
``make_estimator`` as in meta-training) at theta, then one gradient step
``theta' = theta - LEARNING_RATE * g``.

The meta-loss ``L(theta; T) = 1/T sum_t normalizer(l_t)`` is estimated on ``NUM_RUNS`` inner runs
(init keys and noise batches) that every theta shares (common random numbers). Two checks:

1. The step lowers the meta-loss. With the per-run differences ``d_i = L_i(theta) - L_i(theta')``:
   ``mean(d) > Z * SE``, ``SE = std(d, ddof=1) / sqrt(NUM_RUNS)``, ``Z = 5``: a one-sided z-test
   whose false-pass probability, were the step useless (mean 0), is below 3e-7.
2. The step is a descent direction, not just any move: common random numbers make the differences
   so consistent across runs that a random direction passes check 1 about half the time (it is a
   descent direction with probability 1/2). So the improvement must also beat that of
   ``NUM_DIRECTIONS`` random directions of the same length by ``Z_RANDOM`` of their standard
   deviations (a z-score against the distribution of a random step's improvement).

Measured when this test was written, with 64 pairs over estimator keys 2..11: check 1 z = 17.1 for
every key; check 2 z = 5.1-7.1 (improvements 9e-4 to 1.9e-3 on a meta-loss of 1.709). With 8 pairs
check 2 gave only 1.3-3.4 (keys 2..6), with 32 pairs 3.9-6.1, with 128 pairs 7.5-9.5: the margin
grows with the estimator's pairs, as the estimate's alignment with the true gradient does.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from star_core import optimizers, tasks
from star_core.estimators import EstimatorConfig, make_estimator, make_inner_problem

pytestmark = pytest.mark.slow  # every test compiles and runs JAX code for seconds

Z = 5.0  # standard errors the improvement must exceed (check 1)
Z_RANDOM = 3.0  # random-step standard deviations the improvement must exceed (check 2)
NUM_DIRECTIONS = 32  # random directions of check 2
NUM_PAIRS = 64
NUM_RUNS = 64  # inner runs (common to theta and theta') per meta-loss estimate
HORIZON = 20
LEARNING_RATE = 0.3  # plain gradient step on theta: |LEARNING_RATE * g| is about 0.05 here
EVAL_SEED_OFFSET = 10_000  # evaluation noise streams, apart from the estimator's data seeds


def _batches(task, seeds):
    """``HORIZON`` noise batches of every run, stacked to ``[HORIZON, NUM_RUNS, ...]``."""
    streams = [task.batches(EVAL_SEED_OFFSET + s) for s in seeds]
    steps = [
        jax.tree.map(lambda *xs: np.stack(xs), *[next(s) for s in streams]) for _ in range(HORIZON)
    ]
    return jax.tree.map(lambda *xs: np.stack(xs), *steps)


def _meta_loss_fn(task, lopt):
    """Jitted ``(theta, keys [R], batches [T, R, ...]) -> [R]`` per-run meta-losses."""
    problem = make_inner_problem(task, lopt)

    def one(theta, key, batches):
        def body(inner, batch):
            return problem.step(theta, inner, batch, key)

        _, losses = jax.lax.scan(body, problem.init(theta, key), batches)
        return jnp.mean(losses)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 1)))


def _random_steps(theta, length: float, count: int, seed: int):
    """``count`` copies of theta, each moved by ``length`` in a uniformly random direction."""
    flat, unravel = ravel_pytree(theta)
    directions = np.random.default_rng(seed).standard_normal((count, flat.size))
    directions *= length / np.linalg.norm(directions, axis=1, keepdims=True)
    return jax.vmap(unravel)(flat[None] - jnp.asarray(directions, flat.dtype))


def test_one_pes_step_on_star_lowers_the_meta_loss():
    task, lopt = tasks.get("nqm", dim=8), optimizers.get("star")
    theta = lopt.init_meta_params(jax.random.key(0))
    config = EstimatorConfig(
        kind="pes", sigma=0.01, truncation_length=10, horizon=HORIZON, num_pairs=NUM_PAIRS
    )
    estimator = make_estimator(task, lopt, config)
    state = estimator.init_state(theta, jax.random.key(1))
    grad, _, _ = estimator.estimate(theta, jax.random.key(2), state)
    stepped = jax.tree.map(lambda t, g: t - LEARNING_RATE * g, theta, grad)

    meta_losses = _meta_loss_fn(task, lopt)
    keys = jax.random.split(jax.random.key(123), NUM_RUNS)
    batches = _batches(task, range(NUM_RUNS))
    before = np.asarray(meta_losses(theta, keys, batches), np.float64)
    after = np.asarray(meta_losses(stepped, keys, batches), np.float64)
    assert np.all(np.isfinite(before)) and np.all(np.isfinite(after))
    diff = before - after
    z = diff.mean() / (diff.std(ddof=1) / np.sqrt(NUM_RUNS))
    assert z > Z, f"improvement {diff.mean():.3g} is only {z:.2f} standard errors"

    length = LEARNING_RATE * float(np.linalg.norm(ravel_pytree(grad)[0]))
    randoms = _random_steps(theta, length, NUM_DIRECTIONS, seed=0)
    over_runs = jax.jit(jax.vmap(meta_losses, in_axes=(0, None, None)))
    random_gain = (before - np.asarray(over_runs(randoms, keys, batches), np.float64)).mean(axis=1)
    z_random = (diff.mean() - random_gain.mean()) / random_gain.std(ddof=1)
    assert z_random > Z_RANDOM, (diff.mean(), random_gain.mean(), random_gain.std(ddof=1))


def test_meta_loss_fn_matches_a_plain_loop_for_one_run():
    """The evaluation itself: the scan equals T explicit inner steps of ``make_inner_problem``."""
    task, lopt = tasks.get("nqm", dim=8), optimizers.get("star")
    theta = lopt.init_meta_params(jax.random.key(0))
    key = jax.random.key(7)
    problem = make_inner_problem(task, lopt)
    step = jax.jit(problem.step)
    inner, losses = problem.init(theta, key), []
    for batch in itertools.islice(task.batches(EVAL_SEED_OFFSET + 3), HORIZON):
        inner, loss = step(theta, inner, batch, key)
        losses.append(float(loss))
    batches = _batches(task, [3])
    got = _meta_loss_fn(task, lopt)(theta, key[None], batches)
    np.testing.assert_allclose(float(got[0]), np.mean(losses), rtol=1e-5)
