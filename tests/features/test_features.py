"""The 39 features (docs/algorithm.md, Features) against values computed by hand (numpy, float64)
on tiny tensors, and the learned decays."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core.features import (
    FEATURE_NAMES,
    NUM_FEATURES,
    TIME_SCALES,
    build_features,
    decays_from_offsets,
    factored_dims,
    init_accumulators,
    init_decay_offsets,
    update_accumulators,
)

B_M = np.array([0.9, 0.99, 0.999])
B_V = 0.999
B_F = np.array([0.9, 0.99, 0.999])


def normalized(x, shape):
    """Tile x to shape, divide by its RMS over the tensor."""
    x = np.broadcast_to(x, shape)
    return x / np.sqrt(1e-5 + np.mean(x**2))


def hand_features(g, p, step, factored_axes):
    """The 39 features after one update from zero accumulators with the base decays."""
    g2 = g**2 + 1e-30
    m = [(1 - b) * g for b in B_M]
    v = (1 - B_V) * g**2
    if factored_axes is None:
        row = col = [(1 - b) * g2 for b in B_F]
        pre = [1 / np.sqrt(r + 1e-9) for r in row]
        mom_pre = [1 / np.sqrt(r + 1e-6) for r in row]
    else:
        d0, d1 = factored_axes
        row = [(1 - b) * g2.mean(axis=d0, keepdims=True) for b in B_F]
        col = [(1 - b) * g2.mean(axis=d1, keepdims=True) for b in B_F]
        pre = [
            1
            / np.sqrt(np.maximum(r / (r.mean(axis=d1, keepdims=True) + 1e-9), 1e-9))
            / np.sqrt(np.maximum(c, 1e-9))
            for r, c in zip(row, col, strict=True)
        ]
        mom_pre = pre
    channels = (
        [g, p, *m, v]
        + [mi / np.sqrt(v + 1e-6) for mi in m]
        + [1 / np.sqrt(v + 1e-6)]
        + [g * q for q in pre]
        + row
        + col
        + [1 / np.sqrt(r + 1e-8) for r in row]
        + [1 / np.sqrt(c + 1e-8) for c in col]
        + [mi * q for mi, q in zip(m, mom_pre, strict=True)]
    )
    columns = [normalized(c, g.shape) for c in channels]
    columns += [np.full(g.shape, math.tanh(step / tau - 1)) for tau in TIME_SCALES]
    return np.stack(columns, axis=-1)


def features_after_one_update(g, p, step):
    acc = init_accumulators(jnp.asarray(p))
    acc = update_accumulators(acc, jnp.asarray(g), decays_from_offsets(init_decay_offsets()))
    return np.asarray(build_features(jnp.asarray(g), jnp.asarray(p), acc, jnp.asarray(step)))


def test_there_are_39_named_features():
    assert NUM_FEATURES == len(FEATURE_NAMES) == 39
    assert FEATURE_NAMES[:3] == ("grad", "param", "momentum_0")
    assert FEATURE_NAMES[-1] == "time_100000"


@pytest.mark.slow
def test_unfactored_vector_matches_hand_computation():
    g = np.array([1.0, -2.0, 0.5, 3.0])
    p = np.array([0.1, 0.2, -0.3, 0.0])
    got = features_after_one_update(g.astype(np.float32), p.astype(np.float32), 5)
    np.testing.assert_allclose(got, hand_features(g, p, 5, None), rtol=2e-5, atol=1e-6)
    # Spot checks written out: the normalized gradient, and the first time feature tanh(5 - 1).
    np.testing.assert_allclose(got[:, 0], g / math.sqrt(1e-5 + 14.25 / 4), rtol=1e-6)
    np.testing.assert_allclose(got[:, 28], math.tanh(4.0), rtol=1e-6)


@pytest.mark.slow
def test_factored_matrix_matches_hand_computation():
    g = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])
    p = np.array([[0.1, 0.2, -0.3], [0.0, 1.0, 2.0]])
    assert factored_dims(g.shape) == (1, 0)  # d0 = largest (3), d1 = second largest (2)
    got = features_after_one_update(g.astype(np.float32), p.astype(np.float32), 0)
    np.testing.assert_allclose(got, hand_features(g, p, 0, (1, 0)), rtol=2e-5, atol=1e-6)
    # Row statistic of decay 0.9 on row 0: 0.1 * mean(1, 4, 0.25), normalized over the tiled tensor.
    row0 = 0.1 * np.mean([1.0, 4.0, 0.25])
    row1 = 0.1 * np.mean([0.0625, 9.0, 1.0])
    want = row0 / math.sqrt(1e-5 + (row0**2 + row1**2) / 2)
    np.testing.assert_allclose(got[0, 0, 13], want, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 3, 2, 4)])
def test_rank3_and_rank4_tensors_match_hand_computation(shape):
    rng = np.random.default_rng(len(shape))
    g, p = rng.normal(size=shape), rng.normal(size=shape)
    dims = factored_dims(shape)
    assert dims == {3: (2, 1), 4: (3, 1)}[len(shape)]  # ties: the later axis is the larger
    got = features_after_one_update(g.astype(np.float32), p.astype(np.float32), 7)
    assert got.shape == shape + (39,)
    np.testing.assert_allclose(got, hand_features(g, p, 7, dims), rtol=2e-5, atol=1e-6)


def test_scalar_is_treated_as_shape_one():
    got = features_after_one_update(np.float32(2.0), np.float32(-1.0), 1)
    want = hand_features(np.array([2.0]), np.array([-1.0]), 1, None)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "dims"),
    [((3,), None), ((4, 4), (1, 0)), ((3, 3, 8, 16), (3, 2)), ((10, 2, 5), (0, 2))],
)
def test_factored_dims(shape, dims):
    assert factored_dims(shape) == dims


def test_decay_offsets_map_to_rates():
    offsets = init_decay_offsets()
    offsets["rms"] = jnp.full((1,), math.log(2.0) / 10.0)  # doubles 1 - beta
    decays = decays_from_offsets(offsets)
    np.testing.assert_allclose(decays.momentum, B_M, rtol=1e-6)
    np.testing.assert_allclose(decays.rms, [1 - 2 * (1 - B_V)], rtol=1e-6)
    np.testing.assert_allclose(decays.adafactor, B_F, rtol=1e-6)


def test_decays_are_clipped_to_the_unit_interval():
    offsets = {name: jnp.full_like(x, 0.25) for name, x in init_decay_offsets().items()}
    decays = decays_from_offsets(offsets)
    # 1 - 0.1 e^2.5 = -0.218 is clipped to 0; 1 - 0.01 e^2.5 = 0.878 is kept.
    np.testing.assert_allclose(decays.momentum, [0.0, 1 - 0.01 * math.exp(2.5), 0.9878], atol=1e-4)
    assert float(decays.adafactor[0]) == 0.0
    low = decays_from_offsets({name: jnp.full_like(x, -1.0) for name, x in offsets.items()})
    for rates in low:
        assert bool(jnp.all((rates >= 0.0) & (rates <= 1.0)))


def _features_after(grads, param, offsets, steps_done):
    decays = decays_from_offsets(offsets)
    acc = init_accumulators(param)
    for g in grads:
        acc = update_accumulators(acc, g, decays)
    return acc, build_features(grads[-1], param, acc, jnp.asarray(steps_done))


# Gradient scales of consecutive steps: a large gradient then a tiny one is what drives an
# unclipped (negative) decay's statistics negative.
GRADIENT_SCALES = (10.0, 0.01, 1.0, 0.0)
NUM_OFFSET_DRAWS = 64


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(), (5,), (4, 3), (2, 3, 4), (2, 3, 2, 3)])
def test_random_decay_offsets_keep_every_update_finite(shape):
    key_offsets, key_grads, key_param = jax.random.split(jax.random.key(len(shape)), 3)
    template = init_decay_offsets()
    keys = jax.random.split(key_offsets, len(template))
    offsets = {  # NUM_OFFSET_DRAWS independent draws of all seven offsets, uniform in [-1, 1]
        name: jax.random.uniform(k, (NUM_OFFSET_DRAWS,) + x.shape, minval=-1.0, maxval=1.0)
        for k, (name, x) in zip(keys, template.items(), strict=True)
    }
    noise = jax.random.normal(key_grads, (len(GRADIENT_SCALES),) + shape)
    grads = [scale * noise[i] for i, scale in enumerate(GRADIENT_SCALES)]
    param = jax.random.normal(key_param, shape)
    for steps in range(1, len(grads) + 1):
        run = jax.vmap(lambda o, n=steps: _features_after(grads[:n], param, o, n - 1))
        acc, features = run(offsets)
        for leaf in jax.tree.leaves(acc):
            assert bool(jnp.all(jnp.isfinite(leaf))), (shape, steps)
        assert bool(jnp.all(jnp.isfinite(features))), (shape, steps)


@pytest.mark.slow
def test_issue_example_adafactor_offset_025_stays_finite():
    # Adafactor offset 0.25 made the 0.9 decay -0.218 before clipping: after gradients 10 and
    # 0.01 the row statistic was negative and the preconditioner NaN.
    offsets = {**init_decay_offsets(), "adafactor": jnp.full((3,), 0.25)}
    grads = [jnp.full((4, 4), 10.0), jnp.full((4, 4), 0.01)]
    acc, features = _features_after(grads, jnp.ones((4, 4)), offsets, 1)
    assert bool(jnp.all(acc.row >= 0.0)) and bool(jnp.all(acc.col >= 0.0))
    assert bool(jnp.all(jnp.isfinite(features)))
    # Decay 0 keeps only the newest gradient: row statistic 0 of (0.01)^2 exactly.
    np.testing.assert_allclose(acc.row[0], np.full((4, 1), 1e-4), rtol=1e-5)


def test_accumulators_follow_the_ema_over_two_steps():
    g1, g2 = jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([[-1.0, 0.0], [2.0, 1.0]])
    decays = decays_from_offsets(init_decay_offsets())
    acc = init_accumulators(g1)
    acc = update_accumulators(update_accumulators(acc, g1, decays), g2, decays)
    # The decays are float32: 1 - 0.999 carries a relative rounding error of ~1.3e-5.
    for i, b in enumerate(B_M):
        np.testing.assert_allclose(acc.momentum[i], b * (1 - b) * g1 + (1 - b) * g2, rtol=1e-4)
    want_v = B_V * (1 - B_V) * g1**2 + (1 - B_V) * g2**2
    np.testing.assert_allclose(acc.second_moment, want_v, rtol=1e-4)
    # Ties: d0 = axis 1, so the row statistic averages over axis 1.
    row = B_F[0] * (1 - B_F[0]) * np.mean(g1**2, 1) + (1 - B_F[0]) * np.mean(g2**2, 1)
    np.testing.assert_allclose(acc.row[0, :, 0], row, rtol=1e-4)
    assert jax.tree.map(jnp.shape, acc.col) == (3, 1, 2)


def test_time_scales_are_the_spec_values_and_the_last_channel_uses_1e5():
    assert TIME_SCALES == (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
    g = np.array([1.0, -2.0], np.float32)
    p = np.array([0.5, 0.25], np.float32)
    for t in (1, 50_000, 150_000):
        got = features_after_one_update(g, p, t)
        np.testing.assert_allclose(got[:, 38], math.tanh(t / 100_000 - 1), rtol=1e-6, atol=1e-7)
