"""Blackbox, STAR and Hyperparam update rules (eqs. 20-22), parameter counts, config errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core import optimizers
from star_core.errors import ConfigError
from star_core.features import (
    as_rank1,
    build_features,
    decays_from_offsets,
    feature_groups,
    init_accumulators,
    init_decay_offsets,
    update_accumulators,
)
from star_core.optimizers.mlp import mlp_apply, mlp_apply_groups

ALPHA0 = 1e-3  # default alpha0 / beta constants
GRAD = jnp.array([[0.5, -1.0, 2.0], [0.1, 0.0, -3.0]])
PARAM = jnp.array([[1.0, 2.0, -1.0], [0.5, 0.25, 0.0]])
MOMENTUM_DECAYS = np.array([0.9, 0.99, 0.999], np.float32)


@functools.partial(jax.jit, static_argnums=0)
def first_update(opt, theta):
    """The first update on (GRAD, PARAM); compiled once per optimizer config, theta traced."""
    tx = opt.transform(theta)
    return tx.update(GRAD, tx.init(PARAM), PARAM)[0]


def reference_outputs(theta):
    """MLP outputs from the materialized 39 features (the plain definition) after one update."""
    acc = update_accumulators(
        init_accumulators(PARAM), GRAD, decays_from_offsets(init_decay_offsets())
    )
    return mlp_apply(theta["mlp"], build_features(GRAD, PARAM, acc, jnp.asarray(0)))


def first_step_moments(grad=GRAD):
    """m_i and v after one update from zero: (1 - b_i) g and (1 - 0.999) g^2 (float32 decays)."""
    one_minus = 1 - decays_from_offsets(init_decay_offsets()).momentum
    return [c * grad for c in one_minus], (1 - jnp.float32(0.999)) * grad**2


def zero_heads(theta, columns):
    mlp = dict(theta["mlp"])
    mlp["w2"] = mlp["w2"].at[:, columns].set(0.0)
    mlp["b2"] = mlp["b2"].at[jnp.asarray(columns)].set(0.0)
    return {**theta, "mlp": mlp}


def nominal_head_only(star_theta):
    """Hyperparam's theta sharing STAR's weights: the last layer keeps only the m_g column."""
    mlp = {
        **star_theta["mlp"],
        "w2": star_theta["mlp"]["w2"][:, 2:],
        "b2": star_theta["mlp"]["b2"][2:],
    }
    return {**star_theta, "mlp": mlp}


@pytest.fixture(scope="module")
def star_theta():
    return optimizers.get("star").init_meta_params(jax.random.key(0))


@pytest.mark.slow
def test_blackbox_follows_eq_20_on_the_reference_features():
    opt = optimizers.get("blackbox")
    theta = opt.init_meta_params(jax.random.key(1))
    out = reference_outputs(theta)
    want = -1e-3 * out[..., 0] * jnp.exp(1e-3 * out[..., 1])
    np.testing.assert_allclose(first_update(opt, theta), want, rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_star_follows_eqs_21_22_on_the_reference_features(star_theta):
    out = reference_outputs(star_theta)
    momenta, v = first_step_moments()
    g_nom = sum(momenta) / 3 * jax.lax.rsqrt(v + 1e-6)
    f_g = ALPHA0 * jnp.exp(1e-3 * out[..., 2]) * g_nom
    f_b = 1e-3 * out[..., 0] / jnp.sqrt(v + 1e-6) * jnp.exp(1e-3 * out[..., 1])
    got = first_update(optimizers.get("star", beta3=1e-3), star_theta)
    np.testing.assert_allclose(got, -(f_b + f_g), rtol=1e-5, atol=1e-9)


GRAD2 = jnp.array([[-0.25, 1.5, 0.75], [2.0, -0.5, 1.0]])  # the second step's gradient


@functools.partial(jax.jit, static_argnums=0)
def two_updates(opt, theta):
    """Updates u1 (on GRAD at PARAM) and u2 (on GRAD2 at PARAM + u1) from a fresh state."""
    tx = opt.transform(theta)
    u1, state = tx.update(GRAD, tx.init(PARAM), PARAM)
    params1 = PARAM + u1
    u2, _ = tx.update(GRAD2, state, params1)
    return u1, u2, params1


@pytest.mark.slow
def test_star_second_update_follows_eqs_21_22_by_hand(star_theta):
    opt = optimizers.get("star", beta3=1e-3)
    _, u2, params1 = two_updates(opt, star_theta)
    decays = decays_from_offsets(init_decay_offsets())
    # Accumulator recursion from zero, written out: m_i = b_i m_i + (1 - b_i) g, same for v (g^2).
    momenta = [jnp.zeros_like(GRAD) for _ in range(3)]
    v = jnp.zeros_like(GRAD)
    for g in (GRAD, GRAD2):
        momenta = [b * m + (1 - b) * g for b, m in zip(decays.momentum, momenta, strict=True)]
        v = decays.rms[0] * v + (1 - decays.rms[0]) * g**2
    # MLP outputs on the 39 reference features after two updates, time features at t = 1.
    acc = init_accumulators(PARAM)
    for g in (GRAD, GRAD2):
        acc = update_accumulators(acc, g, decays)
    out = mlp_apply(star_theta["mlp"], build_features(GRAD2, params1, acc, jnp.asarray(1)))
    g_nom = (momenta[0] + momenta[1] + momenta[2]) / 3 / jnp.sqrt(v + 1e-6)
    f_g = ALPHA0 * jnp.exp(1e-3 * out[..., 2]) * g_nom  # eq. 21, beta1 = alpha0 (log scale 0)
    f_b = 1e-3 * out[..., 0] / jnp.sqrt(v + 1e-6) * jnp.exp(1e-3 * out[..., 1])  # eq. 22
    np.testing.assert_allclose(u2, -(f_b + f_g), rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_star_with_zero_blackbox_weights_equals_its_nominal_term(star_theta):
    theta = zero_heads(star_theta, [0, 1])
    star = first_update(optimizers.get("star"), theta)
    hyper = first_update(optimizers.get("hyperparam"), nominal_head_only(theta))
    np.testing.assert_array_equal(star, hyper)
    # With the m_g head zeroed too, the step is -alpha0 * g_nom, by hand.
    momenta, v = first_step_moments()
    want = -ALPHA0 * sum(momenta) / 3 / jnp.sqrt(v + 1e-6)
    got = first_update(optimizers.get("star"), zero_heads(star_theta, [0, 1, 2]))
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.slow
def test_hyperparam_follows_eq_21_on_the_reference_features():
    opt = optimizers.get("hyperparam")
    theta = opt.init_meta_params(jax.random.key(2))
    out = reference_outputs(theta)  # one head: m_g
    assert out.shape == GRAD.shape + (1,)
    momenta, v = first_step_moments()
    g_nom = sum(momenta) / 3 * jax.lax.rsqrt(v + 1e-6)
    want = -ALPHA0 * jnp.exp(1e-3 * out[..., 0]) * g_nom
    np.testing.assert_allclose(first_update(opt, theta), want, rtol=1e-5, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4), (3, 3, 2, 4)])  # rank 2: tests above
def test_fused_first_layer_equals_the_plain_definition(star_theta, shape):
    # The optimizers fold normalization and time features into the first layer and broadcast the
    # row/column statistics (mlp_apply_groups); the plain definition materializes S + (39,).
    k_grad, k_param = jax.random.split(jax.random.key(len(shape)))
    decays = decays_from_offsets(init_decay_offsets())
    param = jax.random.normal(k_param, shape)
    acc = init_accumulators(param)
    for scale in (1.0, 0.3):  # two updates, so that every accumulator differs from g
        grad = scale * jax.random.normal(jax.random.fold_in(k_grad, int(10 * scale)), shape)
        acc = update_accumulators(acc, grad, decays)
    step = jnp.asarray(1)
    plain = mlp_apply(star_theta["mlp"], build_features(grad, param, acc, step))
    fused = jnp.stack(
        mlp_apply_groups(
            star_theta["mlp"], feature_groups(as_rank1(grad), as_rank1(param), acc), step
        ),
        axis=-1,
    )
    assert fused.shape == (shape or (1,)) + (3,)
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["star", "blackbox"])
def test_adafactor_offset_beyond_the_decay_root_keeps_the_update_finite(name):
    # Offset 0.25 > ln(10) / 10: unclipped, the 0.9 Adafactor decay would be -0.218 and a large
    # then a tiny gradient would give a negative row statistic, a NaN rsqrt and a NaN step.
    opt = optimizers.get(name)
    theta = opt.init_meta_params(jax.random.key(5))
    theta = {**theta, "decays": {**theta["decays"], "adafactor": jnp.full((3,), 0.25)}}
    tx = opt.transform(theta)
    params = jnp.zeros((4, 4))
    state = tx.init(params)
    for scale in (10.0, 0.01):
        grad = scale * jax.random.normal(jax.random.key(int(scale * 100)), (4, 4))
        updates, state = tx.update(grad, state, params)
        assert bool(jnp.all(jnp.isfinite(updates))), scale


@pytest.mark.parametrize("c", [0.25, 3.0])
def test_nominal_log_scale_scales_the_nominal_term(star_theta, c):
    scaled = {**star_theta, "nominal_log_scale": jnp.asarray(math.log(c), jnp.float32)}
    hyper = optimizers.get("hyperparam")
    nominal = first_update(hyper, nominal_head_only(star_theta))
    np.testing.assert_allclose(
        first_update(hyper, nominal_head_only(scaled)), c * nominal, rtol=1e-5
    )
    star = optimizers.get("star")
    delta = first_update(star, scaled) - first_update(star, star_theta)
    np.testing.assert_allclose(delta, (c - 1) * nominal, rtol=1e-4, atol=1e-9)


@pytest.mark.slow
def test_blackbox_preconditioning_divides_by_sqrt_v(star_theta):
    _, v = first_step_moments()
    plain = first_update(
        optimizers.get("star", nominal=False, precondition_blackbox=False), star_theta
    )
    precond = first_update(optimizers.get("star", nominal=False), star_theta)
    np.testing.assert_allclose(precond, plain / jnp.sqrt(v + 1e-6), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["adam", "aggmo", "sgd", "adamaggmo"])
def test_nominal_directions(star_theta, direction):
    theta = nominal_head_only(zero_heads(star_theta, [0, 1, 2]))
    momenta, v = first_step_moments()
    rsqrt_v = jax.lax.rsqrt(v + 1e-6)
    want = {
        "adam": momenta[2] * rsqrt_v,
        "aggmo": sum(momenta) / 3,
        "sgd": GRAD,
        "adamaggmo": sum(momenta) / 3 * rsqrt_v,
    }[direction]
    got = first_update(optimizers.get("hyperparam", nominal_direction=direction), theta)
    np.testing.assert_allclose(got, -ALPHA0 * want, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "count"),
    [("blackbox", 197), ("star", 203), ("hyperparam", 193), ("adam", 0), ("sgdm", 0), ("aggmo", 0)],
)
def test_parameter_counts(name, count):
    assert optimizers.get(name).num_meta_params == count


def test_theta_layout():
    shapes = jax.tree.map(jnp.shape, optimizers.get("star").init_meta_params(jax.random.key(3)))
    assert shapes == {
        "mlp": {"w0": (39, 4), "b0": (4,), "w1": (4, 4), "b1": (4,), "w2": (4, 3), "b2": (3,)},
        "decays": {"momentum": (3,), "rms": (1,), "adafactor": (3,)},
        "nominal_log_scale": (),
    }
    for name, heads in (("blackbox", 2), ("hyperparam", 1)):
        mlp = optimizers.get(name).init_meta_params(jax.random.key(3))["mlp"]
        assert (mlp["w2"].shape, mlp["b2"].shape) == ((4, heads), (heads,))
    assert optimizers.get("adam").init_meta_params(jax.random.key(3)) == {}


def test_init_weights_are_truncated_at_two_std():
    w0 = optimizers.get("star").init_meta_params(jax.random.key(4))["mlp"]["w0"]
    assert float(jnp.max(jnp.abs(w0))) <= 2 / math.sqrt(39) + 1e-7
    # Std of a standard normal truncated at +/-2 is 0.880; 156 samples give a ~6% standard error.
    assert abs(float(jnp.std(w0)) * math.sqrt(39) - 0.880) < 0.2


def test_aggmo_by_hand():
    opt = optimizers.get("aggmo", learning_rate=0.1, betas=(0.0, 0.5))
    tx = opt.transform({})
    params = jnp.zeros(2)
    state = tx.init(params)
    u1, state = tx.update(jnp.ones(2), state, params)
    u2, _ = tx.update(jnp.ones(2), state, params)
    np.testing.assert_allclose(u1, [-0.1, -0.1], rtol=1e-6)  # velocities (1, 1)
    np.testing.assert_allclose(u2, [-0.125, -0.125], rtol=1e-6)  # velocities (1, 1.5)


def test_optimizers_are_hashable_values():
    assert optimizers.get("star", beta3=0.01) == optimizers.get("star", beta3=0.01)
    assert hash(optimizers.get("star")) == hash(optimizers.get("star"))
    assert optimizers.get("star") != optimizers.get("star", nominal=False)
    assert optimizers.get("star").name == "star" and optimizers.get("sgdm").name == "sgdm"


@pytest.mark.parametrize(
    ("name", "config", "field", "mentions"),
    [
        ("nope", {}, "", ["nope", "blackbox", "star", "hyperparam", "adam", "sgdm", "aggmo"]),
        ("star", {"beta3": -1.0}, "beta3", ["beta3"]),
        ("blackbox", {"beta1": -0.1}, "beta1", ["beta1"]),
        (
            "star",
            {"nominal_direction": "rmsprop"},
            "nominal_direction",
            ["nominal_direction", "adamaggmo", "sgd"],
        ),
        ("hyperparam", {"nominal_direction": "x"}, "nominal_direction", ["aggmo"]),
        (
            "star",
            {"learning_rate": 1.0},
            "learning_rate",
            ["learning_rate", "alpha0", "precondition_blackbox"],
        ),
        ("adam", {"learning_rate": 0.0}, "learning_rate", ["learning_rate"]),
        ("aggmo", {"betas": (0.9, 1.0)}, "betas", ["betas"]),
    ],
)
def test_invalid_config_raises_config_error_naming_the_field(name, config, field, mentions):
    with pytest.raises(ConfigError) as err:
        optimizers.get(name, **config)
    assert err.value.field == field
    for word in mentions:
        assert word in str(err.value)
