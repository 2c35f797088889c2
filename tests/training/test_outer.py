"""The outer optimizer: Adam on the clipped, weight-decayed meta-gradient (docs/algorithm.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from star_core.training.outer import guarded_step, outer_optimizer, weight_decay_mask

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


def _theta(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "mlp": {
            "w0": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
            "b0": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        },
        "decays": {"momentum": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
        "nominal_log_scale": jnp.asarray(rng.normal(), jnp.float32),
    }


def _reference_adam(theta, grads, lr, clip, lam, decay_all):
    """Numpy Adam (with bias correction) on clip(g + lam mask theta), step by step."""
    theta = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), theta)
    mask = weight_decay_mask(theta, decay_all)
    m = jax.tree_util.tree_map(np.zeros_like, theta)
    v = jax.tree_util.tree_map(np.zeros_like, theta)
    for t, grad in enumerate(grads, start=1):
        g = jax.tree_util.tree_map(
            lambda gi, th, mk: np.clip(np.asarray(gi, np.float64) + lam * mk * th, -clip, clip),
            grad,
            theta,
            mask,
        )
        m = jax.tree_util.tree_map(lambda mi, gi: ADAM_B1 * mi + (1 - ADAM_B1) * gi, m, g)
        v = jax.tree_util.tree_map(lambda vi, gi: ADAM_B2 * vi + (1 - ADAM_B2) * gi**2, v, g)
        theta = jax.tree_util.tree_map(
            lambda th, mi, vi, t=t: (
                th - lr * (mi / (1 - ADAM_B1**t)) / (np.sqrt(vi / (1 - ADAM_B2**t)) + ADAM_EPS)
            ),
            theta,
            m,
            v,
        )
    return theta


@pytest.mark.slow
@pytest.mark.parametrize("decay_all", [False, True])
def test_three_steps_match_hand_written_adam_on_clipped_decayed_gradient(decay_all):
    theta0 = _theta()
    rng = np.random.default_rng(1)
    grads = [
        jax.tree_util.tree_map(
            lambda x: jnp.asarray(rng.normal(scale=4.0, size=x.shape), jnp.float32), theta0
        )
        for _ in range(3)
    ]
    tx = outer_optimizer(learning_rate=1e-2, clip=3.0, weight_decay=0.7, decay_all=decay_all)
    theta, state = theta0, tx.init(theta0)
    for g in grads:
        updates, state = tx.update(g, state, theta)
        theta = optax.apply_updates(theta, updates)
    expected = _reference_adam(theta0, grads, 1e-2, 3.0, 0.7, decay_all)
    for got, want in zip(
        jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(expected), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("decay_all", [False, True])
def test_weight_decay_touches_only_the_mlp_unless_decay_all(decay_all):
    theta = _theta()
    zero = jax.tree_util.tree_map(jnp.zeros_like, theta)
    tx = outer_optimizer(learning_rate=1e-3, clip=3.0, weight_decay=0.5, decay_all=decay_all)
    updates, _ = tx.update(zero, tx.init(theta), theta)
    for group in ("mlp", "decays", "nominal_log_scale"):
        leaves = jax.tree_util.tree_leaves(updates[group])
        moved = [np.asarray(u) for u in leaves]
        if group == "mlp" or decay_all:
            # First Adam step on g = lam*theta (no clipping: |g| < 3 here) moves each element
            # by lr * sign(theta) toward zero.
            th = [np.asarray(x) for x in jax.tree_util.tree_leaves(theta[group])]
            for u, x in zip(moved, th, strict=True):
                np.testing.assert_allclose(u, -1e-3 * np.sign(x), rtol=1e-5)
        else:
            for u in moved:
                assert np.all(u == 0.0)


def test_decay_adds_lambda_theta_to_the_mlp_gradient_as_optax_does():
    # optax.add_decayed_weights convention (the reference's): g = g_hat + lambda * theta on the
    # MLP only; before it, the gradient was g_hat + 2 * lambda * theta. By hand with lambda = 0.5:
    # mlp: [0.3, 0.1] + 0.5 * [1.0, -2.0] = [0.8, -0.9]; decays: [0.2] (not decayed).
    theta = {"mlp": {"w0": jnp.asarray([1.0, -2.0])}, "decays": {"momentum": jnp.asarray([4.0])}}
    grad = {"mlp": {"w0": jnp.asarray([0.3, 0.1])}, "decays": {"momentum": jnp.asarray([0.2])}}
    tx = outer_optimizer(learning_rate=1e-3, clip=3.0, weight_decay=0.5)
    _, state = tx.update(grad, tx.init(theta), theta)
    adam_state = state[2][0]
    # First Adam step: mu = (1 - b1) * g, nu = (1 - b2) * g^2.
    np.testing.assert_allclose(adam_state.mu["mlp"]["w0"], [0.08, -0.09], rtol=1e-6)
    np.testing.assert_allclose(adam_state.nu["mlp"]["w0"], [0.00064, 0.00081], rtol=1e-5)
    np.testing.assert_allclose(adam_state.mu["decays"]["momentum"], [0.02], rtol=1e-6)
    # The same decayed gradient as optax's own transformation on the MLP.
    decayed, _ = optax.add_decayed_weights(0.5).update(grad["mlp"], None, theta["mlp"])
    np.testing.assert_allclose(decayed["w0"], [0.8, -0.9], rtol=1e-6)


def test_clipping_is_per_element_to_plus_minus_clip():
    theta = {"mlp": {"w0": jnp.zeros((4,))}}
    grad = {"mlp": {"w0": jnp.asarray([100.0, -50.0, 2.0, -0.5])}}
    tx = outer_optimizer(learning_rate=1e-3, clip=3.0, weight_decay=0.0)
    _, state = tx.update(grad, tx.init(theta), theta)
    adam_state = state[2][0]
    # mu = (1 - b1) * clip(g), nu = (1 - b2) * clip(g)^2
    np.testing.assert_allclose(
        adam_state.mu["mlp"]["w0"], 0.1 * np.array([3.0, -3.0, 2.0, -0.5]), rtol=1e-6
    )
    np.testing.assert_allclose(
        adam_state.nu["mlp"]["w0"], 1e-3 * np.array([9.0, 9.0, 4.0, 0.25]), rtol=1e-5
    )


def test_guarded_step_drops_non_finite_estimates_and_applies_finite_ones():
    theta = _theta()
    tx = outer_optimizer(learning_rate=1e-2, clip=3.0, weight_decay=0.1)
    state = tx.init(theta)
    step = jax.jit(lambda g, s, th: guarded_step(tx, g, s, th))
    good = jax.tree_util.tree_map(jnp.ones_like, theta)
    bad = {**good, "decays": {"momentum": jnp.asarray([1.0, jnp.nan, 1.0])}}

    theta_bad, state_bad, applied_bad = step(bad, state, theta)
    assert not bool(applied_bad)
    for a, b in zip(
        jax.tree_util.tree_leaves((theta_bad, state_bad)),
        jax.tree_util.tree_leaves((theta, state)),
        strict=True,
    ):
        assert np.array_equal(np.asarray(a), np.asarray(b))

    theta_good, state_good, applied_good = step(good, state, theta)
    updates, expected_state = tx.update(good, state, theta)
    expected_theta = optax.apply_updates(theta, updates)
    assert bool(applied_good)
    for a, b in zip(
        jax.tree_util.tree_leaves((theta_good, state_good)),
        jax.tree_util.tree_leaves((expected_theta, expected_state)),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_weight_decay_mask_rejects_non_dict_theta():
    with pytest.raises(ValueError, match="theta"):
        weight_decay_mask([jnp.zeros(2)], decay_all=False)
