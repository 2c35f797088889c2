"""A PES episode that ends strictly inside a truncation and continues in the next.

Two pairs on ``sgd_on_quadratic`` (losses depend on the persisted ``+``/``-`` states), horizon
``T = 8``, truncations of ``K = 5`` iterations, two truncations in a row:

- pair 0 starts at step 6: steps 6, 7, then the reset iteration (3rd, masked), then steps 0, 1 of
  the next episode; in truncation 2 that episode continues with steps 2..6 (no end);
- pair 1 starts at step 0: steps 0..4, then in truncation 2 steps 5, 6, 7, the reset (4th
  iteration, masked) and step 0.

The reference is a plain-Python loop over the definition of PES (numpy, float64): each training
step's loss difference ``l+ - l-`` is weighted by the sum of the perturbations the current
episode's trajectories have received so far; at a reset both trajectories take the fresh state and
that sum restarts at the current truncation's ``eps`` (the new episode's steps use it). Nothing of
the kernel's before/after split is reused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core.estimators import PESState, pes_grad
from star_core.estimators.unroll import tile_signs
from tests.estimators import estimator_toys as toys

pytestmark = pytest.mark.slow  # every test compiles and runs JAX code for seconds

HORIZON = 8
TRUNCATION = 5
SIGMA = 0.1
START_STEPS = (6, 0)
H = np.array([0.5, 1.0, 2.0, 4.0])
GROUPS = np.array([0, 0, 1, 1])
THETA = {"log_lr": jnp.log(jnp.array([0.1, 0.05]))}
NUM_PAIRS = len(START_STEPS)


def _inputs(seed: int):
    """eps [P, 2], step keys [K, P], reset keys [P] and the fresh reset states [P, 4]."""
    eps_key, steps_key, reset_key = jax.random.split(jax.random.key(seed), 3)
    eps = SIGMA * jax.random.normal(eps_key, (NUM_PAIRS, 2))
    keys = toys.step_keys(steps_key, TRUNCATION, NUM_PAIRS)
    reset_keys = jax.random.split(reset_key, NUM_PAIRS)
    problem = toys.sgd_on_quadratic(H, GROUPS)
    resets = np.stack([np.asarray(problem.init(THETA, k), np.float64) for k in reset_keys])
    return eps, keys, reset_keys, resets


def _reference_pair(x0, start, eps_list, resets_list):
    """Plain loop for one pair over the truncations: per truncation (grad, steps, acc, masks,
    (+ losses, - losses), (+ state, - state))."""
    theta = np.asarray(THETA["log_lr"], np.float64)
    plus, minus, steps = x0.copy(), x0.copy(), start
    episode_eps = np.zeros(2)
    out = []
    for eps, reset in zip(eps_list, resets_list, strict=True):
        episode_eps = episode_eps + eps
        grad, masks, losses = np.zeros(2), [], []
        for _ in range(TRUNCATION):
            if steps >= HORIZON:  # the reset iteration: no step, loss masked out
                plus, minus, steps, episode_eps = reset.copy(), reset.copy(), 0, eps.copy()
                masks.append(0.0)
                losses.append((0.0, 0.0))
                continue
            loss_plus, loss_minus = 0.5 * np.sum(H * plus**2), 0.5 * np.sum(H * minus**2)
            plus = plus - np.exp(theta + eps)[GROUPS] * H * plus
            minus = minus - np.exp(theta - eps)[GROUPS] * H * minus
            grad += (loss_plus - loss_minus) * episode_eps
            steps += 1
            masks.append(1.0)
            losses.append((loss_plus, loss_minus))
        grad /= 2 * SIGMA**2 * TRUNCATION
        out.append(
            (
                grad,
                steps,
                episode_eps.copy(),
                masks,
                np.array(losses).T,
                (plus.copy(), minus.copy()),
            )
        )
    return out


def test_episode_end_inside_a_truncation_then_continuation():
    problem = toys.sgd_on_quadratic(H, GROUPS)
    x0 = jax.vmap(problem.init, in_axes=(None, 0))(THETA, jax.random.split(jax.random.key(9), 2))
    state = PESState(
        inner=tile_signs(x0),
        steps=jnp.asarray(START_STEPS, jnp.int32),
        accumulator=jnp.zeros((NUM_PAIRS, 2)),
    )
    truncations = [_inputs(1), _inputs(2)]
    kernel = jax.jit(
        lambda s, e, k, r: pes_grad(
            problem, HORIZON, SIGMA, THETA, s, e, toys.zero_batches(TRUNCATION, NUM_PAIRS), k, r
        )
    )
    got = []
    for eps, keys, reset_keys, _ in truncations:
        grad, state, record = kernel(state, eps, keys, reset_keys)
        got.append((np.asarray(grad["log_lr"]), state, record))

    eps_np = [np.asarray(t[0], np.float64) for t in truncations]
    reference = [
        _reference_pair(
            np.asarray(x0[j], np.float64),
            START_STEPS[j],
            [e[j] for e in eps_np],
            [t[3][j] for t in truncations],
        )
        for j in range(NUM_PAIRS)
    ]

    # Step counters and masks, by hand (see the module docstring).
    assert [int(s) for s in got[0][1].steps] == [2, 5]
    assert [int(s) for s in got[1][1].steps] == [7, 1]
    np.testing.assert_array_equal(got[0][2].masks.T, [[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(got[1][2].masks.T, [[1, 1, 1, 1, 1], [1, 1, 1, 0, 1]])
    # Accumulators: reset to that truncation's eps after an end, then grown by the next eps.
    np.testing.assert_allclose(got[0][1].accumulator, eps_np[0], rtol=1e-6)
    np.testing.assert_allclose(got[1][1].accumulator[0], eps_np[0][0] + eps_np[1][0], rtol=1e-6)
    np.testing.assert_allclose(got[1][1].accumulator[1], eps_np[1][1], rtol=1e-6)

    for i, (grad, new_state, record) in enumerate(got):
        want = [reference[j][i] for j in range(NUM_PAIRS)]
        np.testing.assert_allclose(
            grad, np.mean([w[0] for w in want], axis=0), rtol=1e-4, atol=1e-6
        )
        assert [int(s) for s in new_state.steps] == [w[1] for w in want]
        np.testing.assert_allclose(new_state.accumulator, [w[2] for w in want], rtol=1e-6)
        np.testing.assert_array_equal(record.masks.T, [w[3] for w in want])
        # record.losses is [K, 2P]: + members, then - members; masked iterations hold 0.
        losses = np.asarray(record.losses, np.float64)
        for j in range(NUM_PAIRS):
            np.testing.assert_allclose(
                [losses[:, j], losses[:, NUM_PAIRS + j]], want[j][4], rtol=1e-5, atol=1e-7
            )
            np.testing.assert_allclose(new_state.inner[j], want[j][5][0], rtol=1e-5)
            np.testing.assert_allclose(new_state.inner[NUM_PAIRS + j], want[j][5][1], rtol=1e-5)
