"""Checkpoints: exact safetensors round trips, atomic writes, clear errors for bad files."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from star_core.training import checkpoint as ckpt
from star_core.training.outer import outer_optimizer


def _theta(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "mlp": {
            "w0": jnp.asarray(rng.normal(size=(39, 4)), jnp.float32),
            "b0": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        },
        "decays": {
            "momentum": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
            "rms": jnp.asarray(rng.normal(size=(1,)), jnp.float32),
        },
        "nominal_log_scale": jnp.asarray(rng.normal(), jnp.float32),
    }


def _trained_outer_state(theta):
    tx = outer_optimizer(1e-3, 3.0, 0.1)
    state = tx.init(theta)
    for i in range(3):
        grad = jax.tree_util.tree_map(lambda x, i=i: jnp.sin(x * (i + 1.0)), theta)
        updates, state = tx.update(grad, state, theta)
        theta = optax.apply_updates(theta, updates)
    return theta, state, tx


def _bitwise_equal(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


METADATA = {
    "optimizer": "star",
    "optimizer_config": {"beta_3": 0.001, "nominal": "adam"},
    "step": 12,
    "meta_train_config": {"tasks": ["digits_mlp"], "seed": 3},
    "dropped_estimates": 1,
}


@pytest.mark.slow
def test_round_trip_is_bitwise_exact_with_metadata(tmp_path):
    theta, state, tx = _trained_outer_state(_theta())
    path = tmp_path / "step_000012.safetensors"
    ckpt.save_checkpoint(path, theta, state, METADATA)
    loaded = ckpt.load_checkpoint(path)

    _bitwise_equal(loaded.theta, jax.tree_util.tree_map(np.asarray, theta))
    restored_state = ckpt.fill_tree(
        tx.init(theta),
        loaded.outer_state,
        ckpt.OUTER_STATE_PREFIX,
        naming=ckpt.outer_state_naming(loaded.metadata),
    )
    _bitwise_equal(restored_state, jax.tree_util.tree_map(np.asarray, state))
    assert loaded.metadata == {
        "format": ckpt.FORMAT_NAME,
        "format_version": ckpt.FORMAT_VERSION,
        **METADATA,
    }
    # theta leaves are named by path, the outer state is prefixed.
    names = set(ckpt.read_tensors(path)[0])
    assert {"mlp/w0", "decays/momentum", "nominal_log_scale"} <= names
    assert "outer_state/scale_by_adam_state/mu/mlp/w0" in names
    # Atomic write: nothing but the checkpoint is left in the folder.
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


class _Particles(NamedTuple):
    params: dict
    step: jax.Array
    key: jax.Array


def test_tree_round_trip_keeps_ints_and_typed_keys(tmp_path):
    tree = _Particles(
        params={"w": jnp.arange(6.0).reshape(2, 3)},
        step=jnp.asarray([3, 17], jnp.int32),
        key=jax.random.split(jax.random.key(5), 2),
    )
    path = tmp_path / "state.safetensors"
    ckpt.save_tree(path, ckpt.named_leaves(tree, "est"), {"step": 4})
    tensors, metadata = ckpt.read_tensors(path)
    restored = ckpt.fill_tree(tree, tensors, "est")
    assert metadata == {"step": 4}
    assert np.array_equal(jax.random.key_data(restored.key), jax.random.key_data(tree.key))
    assert np.array_equal(restored.step, tree.step) and restored.step.dtype == np.int32
    assert np.array_equal(restored.params["w"], tree.params["w"])


def test_fill_tree_names_the_mismatched_tensor(tmp_path):
    theta = _theta()
    named = ckpt.named_leaves(theta)
    named["mlp/w0"] = named["mlp/w0"][:3]
    with pytest.raises(ValueError, match="mlp/w0"):
        ckpt.fill_tree(theta, named)
    del named["mlp/w0"]
    with pytest.raises(ValueError, match="missing tensor 'mlp/w0'"):
        ckpt.fill_tree(theta, named)


def test_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "nope.safetensors")
    path = tmp_path / "good.safetensors"
    ckpt.save_checkpoint(path, _theta(), None, METADATA)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(garbage)
    other = tmp_path / "other.safetensors"
    ckpt.save_tree(other, {"x": np.zeros(2, np.float32)}, {"step": 1})
    with pytest.raises(ValueError, match="not a STAR checkpoint"):
        ckpt.load_checkpoint(other)


def test_save_rejects_incomplete_metadata_and_reserved_names(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        ckpt.save_checkpoint(tmp_path / "a.safetensors", _theta(), None, {"step": 1})
    with pytest.raises(ValueError, match="reserved"):
        ckpt.save_checkpoint(
            tmp_path / "b.safetensors", {"outer_state": {"x": jnp.zeros(1)}}, None, METADATA
        )
    assert list(tmp_path.iterdir()) == []


def test_resolve_checkpoint_path_picks_the_latest_in_a_run_folder(tmp_path):
    for step in (2, 10, 4):
        ckpt.save_checkpoint(
            tmp_path / "checkpoints" / f"step_{step:06d}.safetensors",
            _theta(),
            None,
            {**METADATA, "step": step},
        )
    ckpt.save_tree(
        tmp_path / "checkpoints" / "step_000010.estimator.safetensors",
        {"x": np.zeros(1, np.float32)},
        {},
    )
    assert ckpt.resolve_checkpoint_path(tmp_path).name == "step_000010.safetensors"
    with pytest.raises(FileNotFoundError):
        ckpt.resolve_checkpoint_path(tmp_path / "empty_dir_missing")


def test_list_checkpoints_sorts_by_step_number_and_skips_estimator_files(tmp_path):
    # 1000000 sorts before 999999 by name; the listing must order by the step number.
    for name in (
        "step_1000000.safetensors",
        "step_999999.safetensors",
        "step_000002.safetensors",
        "step_000002.estimator.safetensors",
        "step_final.safetensors",
        "other.safetensors",
    ):
        (tmp_path / name).write_bytes(b"")
    listed = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert listed == [
        "step_000002.safetensors",
        "step_999999.safetensors",
        "step_1000000.safetensors",
    ]
    assert ckpt.list_checkpoints(tmp_path / "missing") == []


@pytest.mark.slow
def test_load_optimizer_trains_a_model_with_the_saved_theta(tmp_path):
    import star_core
    from star_core import optimizers, tasks

    lopt = optimizers.get("star", alpha0=0.05)
    theta = jax.tree.map(lambda x: x + 0.01, lopt.init_meta_params(jax.random.key(4)))
    path = tmp_path / "checkpoints" / "step_000007.safetensors"
    ckpt.save_checkpoint(
        path, theta, None, {"optimizer": "star", "optimizer_config": {"alpha0": 0.05}, "step": 7}
    )
    tx = star_core.load_optimizer(tmp_path)  # a run folder resolves to its latest checkpoint
    _, loaded_theta, metadata = ckpt.load_learned_optimizer(path)
    _bitwise_equal(loaded_theta, theta)
    assert metadata["step"] == 7

    task = tasks.get("nqm", dim=6, noise_scale=0.0)
    params = task.init(jax.random.key(0))
    batch = next(task.batches(0))

    def train(tx, params):
        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(task.loss)(params, None, batch)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        return jax.lax.scan(step, (params, tx.init(params)), length=200)[1]

    losses = np.asarray(jax.jit(lambda p: train(tx, p))(params))
    reference = np.asarray(jax.jit(lambda p: train(lopt.transform(theta), p))(params))
    np.testing.assert_allclose(losses, reference, rtol=1e-6)
    assert losses[-1] < 0.5 * losses[0]


def test_load_learned_optimizer_rejects_a_theta_of_another_optimizer(tmp_path):
    path = tmp_path / "star.safetensors"
    from star_core import optimizers

    theta = optimizers.get("star").init_meta_params(jax.random.key(0))
    ckpt.save_checkpoint(
        path, theta, None, {"optimizer": "blackbox", "optimizer_config": {}, "step": 1}
    )
    with pytest.raises(ValueError, match=r"tensors \['nominal_log_scale'\] are not meta-param"):
        ckpt.load_learned_optimizer(path)
    blackbox_theta = optimizers.get("blackbox").init_meta_params(jax.random.key(0))
    ckpt.save_checkpoint(
        path, blackbox_theta, None, {"optimizer": "star", "optimizer_config": {}, "step": 1}
    )
    with pytest.raises(ValueError, match="star.safetensors: tensor 'mlp/"):
        ckpt.load_learned_optimizer(path)


def test_outer_state_names_do_not_depend_on_the_position_in_the_chain(tmp_path):
    theta, state, _ = _trained_outer_state(_theta())
    other_chain = optax.chain(optax.clip(3.0), optax.adam(1e-3))  # adam moves from 2 to 1
    path = tmp_path / "c.safetensors"
    ckpt.save_checkpoint(path, theta, state, METADATA)
    loaded = ckpt.load_checkpoint(path)
    restored = ckpt.fill_tree(
        other_chain.init(theta),
        loaded.outer_state,
        ckpt.OUTER_STATE_PREFIX,
        naming=ckpt.stable_named_leaves,
    )
    _bitwise_equal(restored[1][0], jax.tree_util.tree_map(np.asarray, state[2][0]))


def test_version_1_files_are_still_read(tmp_path):
    theta, state, tx = _trained_outer_state(_theta())
    tensors = {**ckpt.named_leaves(theta), **ckpt.named_leaves(state, ckpt.OUTER_STATE_PREFIX)}
    path = tmp_path / "v1.safetensors"
    ckpt.save_tree(path, tensors, {"format": ckpt.FORMAT_NAME, "format_version": 1, **METADATA})
    assert "outer_state/2/0/mu/mlp/w0" in ckpt.read_tensors(path)[0]
    loaded = ckpt.load_checkpoint(path)
    restored = ckpt.fill_tree(
        tx.init(theta),
        loaded.outer_state,
        ckpt.OUTER_STATE_PREFIX,
        naming=ckpt.outer_state_naming(loaded.metadata),
    )
    _bitwise_equal(restored, jax.tree_util.tree_map(np.asarray, state))


def test_checkpoint_bytes_read_back_like_the_file(tmp_path):
    theta, state, _ = _trained_outer_state(_theta())
    data = ckpt.checkpoint_bytes(theta, state, METADATA)
    path = tmp_path / "d.safetensors"
    ckpt.save_checkpoint(path, theta, state, METADATA)
    from_bytes, from_file = ckpt.load_checkpoint(data), ckpt.load_checkpoint(path)
    assert from_bytes.metadata == from_file.metadata
    _bitwise_equal(from_bytes.theta, from_file.theta)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(data[: len(data) // 2])
