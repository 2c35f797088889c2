"""The pure-JAX layers and sequence models: normalization statistics, causality, shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core.tasks.models import attention, layers, recurrent, vision

pytestmark = pytest.mark.slow  # every test compiles and runs JAX code for seconds


def test_layer_and_batch_norm_standardize():
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 16)) * 3.0 + 2.0
    y = layers.layer_norm(layers.init_norm(16), x)
    np.testing.assert_allclose(jnp.mean(y, -1), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(y, -1), 1.0, rtol=1e-3)
    z = layers.batch_norm(layers.init_norm(16), x)
    np.testing.assert_allclose(jnp.mean(z, 0), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(z, 0), 1.0, rtol=1e-3)


def test_lecun_normal_has_unit_fan_in_variance():
    # 200x500 = 100000 samples: the std estimate's relative error is ~0.2%; allow 2%.
    w = layers.lecun_normal(jax.random.PRNGKey(1), (200, 500), fan_in=200)
    assert float(jnp.std(w)) == pytest.approx(1 / np.sqrt(200), rel=0.02)
    assert float(jnp.max(jnp.abs(w))) <= 2.0 / (layers.TRUNCATED_STD * np.sqrt(200)) + 1e-6


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_language_models_are_causal(model):
    key = jax.random.PRNGKey(2)
    if model == "lstm":
        params = recurrent.init_lstm_lm(key, 257, 8, 16)
        apply = recurrent.lstm_lm
    else:
        params = attention.init_transformer_lm(key, 257, 16, 2, 12)
        apply = lambda p, t: attention.transformer_lm(p, t, num_heads=4)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 12), 1, 257)
    changed = tokens.at[:, 7:].set(5)  # Change the future from position 7 on.
    apply = jax.jit(apply)
    before, after = apply(params, tokens), apply(params, changed)
    assert before.shape == (2, 12, 257)
    np.testing.assert_allclose(before[:, :7], after[:, :7], atol=1e-5)
    assert not np.allclose(before[:, 7:], after[:, 7:])


def test_resnet_and_cnn_downsample_to_logits():
    images = jax.random.uniform(jax.random.PRNGKey(4), (3, 32, 32, 3))
    params = vision.init_resnet(jax.random.PRNGKey(5), (32, 32, 3), (4, 8), 7)
    resnet = jax.jit(vision.resnet, static_argnums=2)
    assert resnet(params, images, (1, 2)).shape == (3, 7)
    assert "project" not in params["stage_0"] and params["stage_1"]["project"]["w"].shape == (
        1, 1, 4, 8,
    )  # fmt: skip
    cnn = vision.init_cnn(jax.random.PRNGKey(6), (32, 32, 3), (4, 6), 5)
    assert jax.jit(vision.cnn, static_argnums=2)(cnn, images, (2, 1)).shape == (3, 5)
