"""Evaluation protocol (spec §4): curves and per-seed numbers against closed forms."""

import logging

import jax
import numpy as np
import pytest

from star_core import optimizers, tasks
from star_core.training import evaluate as ev

STEPS = 12


def _sgd(lr):
    return optimizers.get("sgdm", learning_rate=lr, momentum=0.0)


def _closed_form_curve(task, seed, lr, steps):
    """Noise-free quadratic, plain SGD: phi_t = (1 - lr h)^t phi_0, l_t = 1/2 sum h phi_t^2."""
    phi0 = np.asarray(task.init(ev.run_keys(seed)[0])["phi"], np.float64)
    h = task.curvatures.astype(np.float64)
    t = np.arange(steps + 1)[:, None]
    return 0.5 * np.sum(h * ((1 - lr * h) ** (2 * t)) * phi0**2, axis=1)


@pytest.fixture(scope="module")
def quadratic():
    return tasks.get("nqm", dim=4, noise_scale=0.0)


def test_per_seed_numbers_match_the_closed_form(quadratic):
    result = ev.evaluate(quadratic, _sgd(0.5), {}, STEPS, seeds=[0, 3])
    for row, curve in zip(result.per_seed(), result.curves, strict=True):
        want = _closed_form_curve(quadratic, row["seed"], 0.5, STEPS)
        np.testing.assert_allclose(curve, want, rtol=1e-5)
        assert row["initial_loss"] == pytest.approx(want[0], rel=1e-5)
        assert row["final_loss"] == pytest.approx(want[-1], rel=1e-5)
        assert row["mean_loss"] == pytest.approx(want[:-1].mean(), rel=1e-5)
        assert row["diverged"] is False
    # Noise-free: the held-out loss at a step is the training loss at that step.
    assert result.heldout_steps == (0, 3, 6, 9, 12)
    np.testing.assert_allclose(result.heldout, result.curves[:, list(result.heldout_steps)],
                               rtol=1e-6)


def test_divergence_flag(quadratic):
    # lr * h_max = 2.5 > 2: the top eigen-direction grows by 1.5 per step.
    grows = ev.evaluate(quadratic, _sgd(2.5), {}, STEPS, seeds=[0])
    want = _closed_form_curve(quadratic, 0, 2.5, STEPS)
    np.testing.assert_allclose(grows.curves[0], want, rtol=1e-4)
    assert grows.per_seed()[0]["diverged"] is True
    # A step size that overflows to inf/NaN: diverged, and JSON gets null for the mean.
    blown = ev.evaluate(quadratic, _sgd(1e30), {}, STEPS, seeds=[0])
    assert blown.per_seed()[0]["diverged"] is True
    assert not np.all(np.isfinite(blown.curves))
    assert blown.to_dict()["aggregate"]["mean_loss"] is None


def test_runs_do_not_depend_on_their_batch_mates_or_on_chunking(quadratic, monkeypatch):
    noisy = tasks.get("nqm", dim=4)
    together = ev.evaluate(noisy, optimizers.get("adam", learning_rate=0.05), {}, STEPS, [0, 1])
    monkeypatch.setattr(ev, "MAX_CHUNK", 2)
    alone = ev.evaluate(noisy, optimizers.get("adam", learning_rate=0.05), {}, STEPS, [1])
    np.testing.assert_allclose(alone.curves[0], together.curves[1], rtol=1e-6)


def test_tuned_adam_keeps_the_best_rate_and_matches_plain_adam():
    noisy = tasks.get("nqm", dim=4)
    rates = (1e-3, 3e-2, 0.3)
    tuned = ev.tune_adam(noisy, STEPS, [0, 1], learning_rates=rates)
    scores = [row["mean_loss"] for row in tuned.extra["sweep"]]
    assert tuned.extra["learning_rate"] == rates[int(np.argmin(scores))]
    plain = ev.evaluate(noisy, optimizers.get("adam", learning_rate=tuned.extra["learning_rate"]),
                        {}, STEPS, [0, 1])
    np.testing.assert_allclose(tuned.curves, plain.curves, rtol=1e-5)
    assert min(scores) == pytest.approx(np.mean([r["mean_loss"] for r in plain.per_seed()]),
                                        rel=1e-5)


def test_bad_budgets_are_rejected(quadratic):
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        ev.evaluate(quadratic, _sgd(0.1), {}, 0, [0])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        ev.evaluate(quadratic, _sgd(0.1), {}, 3, [1, 1])


def test_learned_optimizer_theta_is_shared_by_all_seeds(quadratic):
    lopt = optimizers.get("star")
    theta = lopt.init_meta_params(jax.random.key(0))
    result = ev.evaluate(quadratic, lopt, theta, STEPS, [0, 1])
    single = ev.evaluate(quadratic, lopt, theta, STEPS, [1])
    np.testing.assert_allclose(single.curves[0], result.curves[1], rtol=1e-5)
    assert result.label == "star"


def test_missing_test_split_is_reported_and_skipped_with_a_warning(caplog):
    # imagenet32 ships train and validation only; nothing is read to find that out.
    imagenet = tasks.get("imagenet32_resnet")
    want = "dataset 'imagenet32' has splits ['train', 'validation'], no 'test' split"
    assert ev.missing_heldout_reason(imagenet) == want
    with caplog.at_level(logging.WARNING, logger=ev.__name__):
        assert ev._heldout_batches(imagenet) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"held-out evaluation of task 'imagenet32_resnet' skipped: {want}"
    ]
    for name in ("nqm", "digits_mlp", "text_lstm", "lm1b_lstm"):
        assert ev.missing_heldout_reason(tasks.get(name)) is None
