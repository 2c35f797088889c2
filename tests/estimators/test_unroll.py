"""The truncated unroll: resets exactly at the horizon, masked reset steps, shared batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core.estimators import unroll
from star_core.estimators.unroll import tile_signs
from tests.estimators import estimator_toys as toys

HORIZON = 3
NUM_STEPS = 8
RESET = -1.0  # marks a masked (reset) iteration in the hand-written tables below


def test_resets_exactly_at_horizon_and_reset_step_is_masked():
    offsets = jnp.array([0.5, 0.25, -0.5, -0.25])  # theta +- eps for pairs 0 and 1
    inner = jnp.array([0.0, 5.0, 0.0, 7.0])  # + members, then - members
    steps = jnp.array([0, 2], jnp.int32)
    batches = jnp.arange(NUM_STEPS)[:, None] * 10.0 + jnp.array([0.0, 1000.0])
    keys = toys.step_keys(jax.random.key(0), NUM_STEPS, 2)
    reset = jnp.full((2,), toys.COUNTER_START)

    inner_out, steps_out, record = jax.jit(unroll, static_argnums=(0, 1))(
        toys.counter(), HORIZON, {"offset": offsets}, inner, steps, batches, keys, reset
    )

    # Count before each iteration; RESET where steps == T (no training step, loss masked).
    counts_pair0 = [0, 1, 2, RESET, 100, 101, 102, RESET]
    counts_pair1_pos = [5, RESET, 100, 101, 102, RESET, 100, 101]
    counts_pair1_neg = [7, RESET, 100, 101, 102, RESET, 100, 101]
    expected_masks = np.array(
        [[c != RESET for c in counts_pair0], [c != RESET for c in counts_pair1_pos]], float
    ).T
    np.testing.assert_array_equal(record.masks, expected_masks)

    batch = np.asarray(batches)
    columns = [
        (counts_pair0, 0.5, 0),
        (counts_pair1_pos, 0.25, 1),
        (counts_pair0, -0.5, 0),
        (counts_pair1_neg, -0.25, 1),
    ]
    for column, (counts, offset, pair) in enumerate(columns):
        expected = [
            0.0 if c == RESET else c + offset + batch[t, pair] for t, c in enumerate(counts)
        ]
        np.testing.assert_allclose(record.losses[:, column], expected, err_msg=f"col {column}")
    np.testing.assert_array_equal(inner_out, [100.0, 102.0, 100.0, 102.0])
    np.testing.assert_array_equal(steps_out, [0, 2])


@pytest.mark.slow
def test_unroll_matches_a_python_loop_over_trajectories():
    h, groups = np.array([0.5, 1.0, 2.0]), np.array([0, 0, 1])
    problem = toys.sgd_on_quadratic(h, groups)
    num_pairs, horizon, num_steps = 3, 4, 5
    key_init, key_theta, key_steps, key_reset = jax.random.split(jax.random.key(1), 4)
    thetas = {"log_lr": jnp.log(0.3) + 0.1 * jax.random.normal(key_theta, (2 * num_pairs, 2))}
    inner = jax.random.normal(key_init, (2 * num_pairs, 3))
    steps = jnp.array([0, 2, 4], jnp.int32)
    keys = toys.step_keys(key_steps, num_steps, num_pairs)
    reset = jax.random.normal(key_reset, (num_pairs, 3))
    batches = toys.zero_batches(num_steps, num_pairs)

    got_inner, got_steps, record = unroll(
        problem, horizon, thetas, inner, steps, batches, keys, reset
    )

    reset_both, steps_both = tile_signs(reset), np.asarray(tile_signs(steps))
    for n in range(2 * num_pairs):
        theta = {"log_lr": thetas["log_lr"][n]}
        x, count = inner[n], int(steps_both[n])
        for t in range(num_steps):
            if count >= horizon:
                x, count, loss = reset_both[n], 0, 0.0
            else:
                x, loss = problem.step(theta, x, batches[t, n % num_pairs], keys[t, n % num_pairs])
                count += 1
            np.testing.assert_allclose(record.losses[t, n], loss, rtol=1e-6)
        np.testing.assert_allclose(got_inner[n], x, rtol=1e-6)
        assert int(got_steps[n % num_pairs]) == count
