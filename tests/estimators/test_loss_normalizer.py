"""The estimator reports the task's *normalized* per-step loss (``inner.py``; docs/algorithm.md,
Loss normalization).

A tiny task whose loss is read off the batch (independent of the parameters, so the learned
optimizer cannot change it) makes every step's loss known in advance: some steps exceed
``max_loss``, some are negative, NaN or infinite. The estimator's ``meta_loss`` must then be the
mean of the capped losses, computed here by hand, and differ from what an identity normalizer
would give.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core import optimizers
from star_core.estimators import EstimatorConfig, make_estimator
from star_core.tasks.base import normalize_loss

pytestmark = pytest.mark.slow  # every test compiles and runs JAX code for seconds

MAX_LOSS = 2.0  # cap of the toy task's normalized loss
NUM_PAIRS = 2
TRUNCATION = 4
NO_RESET_HORIZON = 10**6  # no pair ends an episode within 4 steps (prob ~1e-5)
# Raw loss of step t (rows) for copy j (columns): above the cap, negative, NaN, +inf, in range.
RAW_LOSSES = np.array([[0.5, 7.0], [np.nan, 1.25], [-3.0, np.inf], [2.5, 0.75]], np.float32)


@dataclasses.dataclass(frozen=True)
class LossFromBatchTask:
    """Loss = the batch's ``loss`` entry plus ``0 * w``; the parameters never change the value."""

    name: str = "loss_from_batch"
    identity_normalizer: bool = False

    @property
    def max_loss(self) -> float:
        return MAX_LOSS

    def init(self, key):
        return {"w": jax.random.normal(key, (3,))}

    def loss(self, params, key, batch):
        return batch["loss"] + 0.0 * jnp.sum(params["w"])

    def batches(self, seed, split="train", copies=None):
        for row in RAW_LOSSES:  # the same table whatever the seed: the answer stays hand-made
            yield {"loss": row[:copies]}

    def normalizer(self, loss):
        return loss if self.identity_normalizer else normalize_loss(loss, self.max_loss)


def hand_capped(raw: np.ndarray) -> np.ndarray:
    """NaN/inf -> max_loss, otherwise clip to [0, max_loss]."""
    return np.where(np.isfinite(raw), np.clip(raw, 0.0, MAX_LOSS), MAX_LOSS)


def meta_loss(task, kind):
    lopt = optimizers.get("star")
    config = EstimatorConfig(kind, 0.01, TRUNCATION, NO_RESET_HORIZON, num_pairs=NUM_PAIRS)
    estimator = make_estimator(task, lopt, config)
    theta = lopt.init_meta_params(jax.random.key(0))
    state = estimator.init_state(theta, jax.random.key(1))
    _, _, metrics = estimator.estimate(theta, jax.random.key(2), state)
    assert metrics["episodes_ended"] == 0
    return metrics["meta_loss"]


@pytest.mark.parametrize("kind", ["pes", "es"])
def test_meta_loss_is_the_mean_of_the_capped_step_losses(kind):
    # Capped table: [[0.5, 2], [2, 1.25], [0, 2], [2, 0.75]], mean 10.5 / 8.
    expected = float(np.mean(hand_capped(RAW_LOSSES.astype(np.float64))))
    assert expected == pytest.approx(10.5 / 8)
    assert meta_loss(LossFromBatchTask(), kind) == pytest.approx(expected, rel=1e-6)


def test_identity_normalizer_would_change_the_meta_loss():
    capped = meta_loss(LossFromBatchTask(), "es")
    raw = meta_loss(LossFromBatchTask(identity_normalizer=True), "es")
    assert not np.isfinite(raw)  # the NaN and inf steps reach the meta-loss uncapped
    assert np.isfinite(capped)
