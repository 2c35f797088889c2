"""Learner and worker: averaging and dropping estimates, warm starts, keys, stopping a run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core.errors import ConfigError
from star_core.training import checkpoint as ckpt
from star_core.training.config import MetaTrainConfig
from star_core.training.keys import estimate_key, run_keys, task_index
from star_core.training.learner import Learner
from star_core.training.loop import meta_train
from star_core.training.worker import EstimationWorker

ESTIMATOR = {"kind": "pes", "sigma": 0.01, "truncation_length": 3, "horizon": 9, "num_pairs": 2}
CONFIG = {
    "tasks": ["nqm"],
    "task_args": {"nqm": {"dim": 4}},
    "estimator": ESTIMATOR,
    "outer_steps": 6,
    "checkpoint_interval": 3,
    "outer": {"learning_rate": 1e-2},
    "seed": 5,
}


def _bytes(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _scaled(theta, factor):
    return jax.tree.map(lambda x: jnp.full_like(x, factor), theta)


@pytest.fixture(scope="module")
def learner():
    return Learner(MetaTrainConfig.from_dict(CONFIG))


@pytest.mark.slow
def test_apply_averages_the_finite_estimates_and_drops_the_others_one_by_one(learner):
    state = learner.init()
    g1, g2 = _scaled(state.theta, 0.5), _scaled(state.theta, -0.1)
    bad = jax.tree.map(lambda x: x.at[...].set(jnp.nan), g1)
    mixed, info = learner.apply(state, [g1, bad, g2, bad])
    averaged, _ = learner.apply(state, [_scaled(state.theta, 0.2)])
    assert info.applied and info.used == 2 and info.dropped == 2
    assert mixed.step == 1 and mixed.dropped == 2
    assert _bytes(mixed.theta) == _bytes(averaged.theta)
    expected_norm = 0.2 * np.sqrt(sum(x.size for x in jax.tree.leaves(state.theta)))
    assert info.grad_norm == pytest.approx(expected_norm, rel=1e-6)


def test_apply_drops_each_estimate_with_one_non_finite_element_among_many(learner):
    state = learner.init()
    estimates = [_scaled(state.theta, 0.1 * (i % 3)) for i in range(12)]
    # One bad element in a different leaf of three estimates; the nine others average to 0.1.
    for i, position in ((0, 0), (4, -1), (8, 3)):
        leaves, treedef = jax.tree.flatten(estimates[i])
        leaves[position] = (
            leaves[position].reshape(-1).at[0].set(jnp.inf).reshape(leaves[position].shape)
        )
        estimates[i] = jax.tree.unflatten(treedef, leaves)
    mixed, info = learner.apply(state, estimates)
    averaged, _ = learner.apply(state, [_scaled(state.theta, 0.1)])
    assert info.used == 9 and info.dropped == 3 and mixed.dropped == 3
    np.testing.assert_allclose(
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(mixed.theta)]),
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(averaged.theta)]),
        rtol=1e-6,
    )


def test_apply_with_no_finite_estimate_only_counts(learner):
    state = learner.init()
    bad = jax.tree.map(lambda x: jnp.full_like(x, jnp.inf), state.theta)
    new, info = learner.apply(state, [bad, bad, bad])
    assert not info.applied and info.dropped == 3 and np.isnan(info.grad_norm)
    assert new.step == 1 and new.dropped == 3
    assert _bytes(new.theta) == _bytes(state.theta)


def test_warm_start_takes_theta_only_and_refuses_bad_checkpoints(learner, tmp_path):
    trained, _ = learner.apply(learner.init(), [_scaled(learner.init().theta, 1.0)])
    path = tmp_path / "other.safetensors"
    learner.save(trained, path)
    warm = learner.init(path)
    assert warm.step == 0 and warm.dropped == 0
    assert _bytes(warm.theta) == _bytes(trained.theta)
    assert _bytes(warm.outer_state) == _bytes(learner.init().outer_state)

    blackbox = Learner(MetaTrainConfig.from_dict({**CONFIG, "optimizer": {"kind": "blackbox"}}))
    with pytest.raises(ConfigError, match="'star' optimizer") as err:
        blackbox.init(path)
    assert err.value.field == "warm_start"
    nan_theta = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), trained.theta)
    learner.save(trained._replace(theta=nan_theta), tmp_path / "nan.safetensors")
    with pytest.raises(ConfigError, match="not finite"):
        learner.init(tmp_path / "nan.safetensors")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        learner.init(b"definitely not safetensors")


def test_restore_from_bytes_equals_the_saved_state(learner):
    state, _ = learner.apply(learner.init(), [_scaled(learner.init().theta, 0.3)])
    restored = learner.restore(learner.checkpoint_bytes(state))
    assert restored.step == 1
    assert _bytes(restored.theta) == _bytes(state.theta)
    assert _bytes(restored.outer_state) == _bytes(state.outer_state)


def test_keys_differ_across_steps_and_workers():
    keys = run_keys(3)
    drawn = {
        (s, w): np.asarray(jax.random.key_data(estimate_key(keys, s, w))).tobytes()
        for s in range(20)
        for w in range(8)
    }
    assert len(set(drawn.values())) == len(drawn)
    same = estimate_key(run_keys(3), 4, 2)
    assert drawn[(4, 2)] == np.asarray(jax.random.key_data(same)).tobytes()
    tasks = [task_index(keys, s, w, 3) for s in range(50) for w in range(4)]
    assert set(tasks) == {0, 1, 2}
    assert tasks == [task_index(run_keys(3), s, w, 3) for s in range(50) for w in range(4)]


@pytest.mark.slow
def test_two_workers_draw_different_estimates(learner):
    config = learner.config
    theta = learner.init().theta
    g0, _ = EstimationWorker(config, 0).estimate(theta, 0)
    g1, _ = EstimationWorker(config, 1).estimate(theta, 0)
    again, _ = EstimationWorker(config, 1).estimate(theta, 0)
    assert _bytes(g0) != _bytes(g1)
    assert _bytes(g1) == _bytes(again)


@pytest.mark.slow
def test_a_stopped_run_checkpoints_and_resumes_exactly(tmp_path):
    config = MetaTrainConfig.from_dict(CONFIG)
    straight = meta_train(config, tmp_path / "a")
    calls = iter(range(100))
    stopped = meta_train(config, tmp_path / "b", should_stop=lambda: next(calls) == 4)
    assert stopped.stopped and stopped.step == 4
    latest = ckpt.list_checkpoints(tmp_path / "b" / "checkpoints")[-1]
    assert latest.name == "step_000004.safetensors"
    resumed = meta_train(config, tmp_path / "b")
    assert not resumed.stopped and resumed.step == 6
    assert _bytes(resumed.theta) == _bytes(straight.theta)


@pytest.mark.slow
def test_meta_train_warm_start(tmp_path):
    config = MetaTrainConfig.from_dict(CONFIG)
    first = meta_train(config, tmp_path / "a")
    warm = meta_train(
        MetaTrainConfig.from_dict({**CONFIG, "outer_steps": 1}),
        tmp_path / "b",
        warm_start=tmp_path / "a",
    )
    cold = meta_train(MetaTrainConfig.from_dict({**CONFIG, "outer_steps": 1}), tmp_path / "c")
    first_step = ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "step_000001.safetensors")
    assert first_step.metadata["step"] == 1
    # One step from the first run's theta lands nearer to it than one step from scratch.
    dist = lambda t: sum(
        float(jnp.sum((a - b) ** 2))
        for a, b in zip(jax.tree.leaves(t), jax.tree.leaves(first.theta), strict=True)  # noqa: E731
    )
    assert dist(warm.theta) < dist(cold.theta)
