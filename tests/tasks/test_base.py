"""The loss normalizer, the loss functions and the registry's config validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core import tasks
from star_core.tasks import base


def test_normalizer_caps_nan_inf_and_clips():
    cap = base.classifier_max_loss(10)
    assert cap == pytest.approx(1.5 * math.log(10))
    losses = jnp.array([jnp.nan, jnp.inf, -jnp.inf, -0.5, 0.7, 99.0])
    got = np.asarray(base.normalize_loss(losses, cap))
    np.testing.assert_allclose(got, [cap, cap, cap, 0.0, 0.7, cap], rtol=1e-6)


def test_normalizer_is_traceable_inside_jit_and_scan():
    task = tasks.get("digits_mlp")

    def body(total, loss):
        return total + task.normalizer(loss), None

    losses = jnp.array([1.0, jnp.nan, 2.0, jnp.inf])
    total, _ = jax.jit(lambda xs: jax.lax.scan(body, 0.0, xs))(losses)
    assert float(total) == pytest.approx(3.0 + 2 * task.max_loss, rel=1e-6)


def test_cross_entropy_matches_hand_computation():
    logits = jnp.array([[0.0, math.log(3.0)], [0.0, 0.0]])
    labels = jnp.array([1, 0])
    # Row 0: p(label) = 3/4; row 1: p = 1/2.
    expected = -(math.log(0.75) + math.log(0.5)) / 2
    assert float(base.softmax_cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_masked_token_cross_entropy_ignores_masked_positions():
    logits = jnp.array([[[0.0, 0.0], [100.0, -100.0]]])
    targets = jnp.array([[0, 1]])
    # Only position 0 counts: ln 2. Position 1 (loss 200) is masked out.
    got = base.masked_token_cross_entropy(logits, targets, jnp.array([[1.0, 0.0]]))
    assert float(got) == pytest.approx(math.log(2.0), rel=1e-6)


def test_get_rejects_unknown_tasks_fields_and_values():
    with pytest.raises(ValueError, match="unknown task .mnist_mlp.; allowed: "):
        tasks.get("mnist_mlp")
    with pytest.raises(ValueError, match="no field 'lr'.*allowed fields"):
        tasks.get("digits_mlp", lr=0.1)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tasks.get("digits_mlp", batch_size=0)
    with pytest.raises(ValueError, match="architecture must be one of"):
        tasks.get("text_lstm", architecture="gru")
    with pytest.raises(ValueError, match="dataset must match"):
        tasks.get("text_lstm", dataset="Not A Name")


def test_get_replaces_fields_and_registry_names_match():
    task = tasks.get("digits_mlp", batch_size=32)
    assert task.batch_size == 32 and tasks.TASKS["digits_mlp"].batch_size == 128
    assert all(task.name == name for name, task in tasks.TASKS.items())
    assert all(isinstance(task, tasks.Task) for task in tasks.TASKS.values())
