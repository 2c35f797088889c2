"""Files written before MetaTrainConfig took the JobSpec's nesting keep working.

``fixtures/legacy_run`` is a ``star train`` run folder written by that code (fixtures/README.md):
its ``config.json`` and its checkpoint's ``meta_train_config`` are in the flat layout. Today's
code reads the config, loads the optimizer, resumes the run and warm-starts from it.
"""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import star_core
from services.cli.main import main
from star_core.training import checkpoint as ckpt
from star_core.training.config import MetaTrainConfig, OptimizerConfig, OuterConfig
from star_core.training.learner import Learner
from star_core.training.loop import meta_train

LEGACY_RUN = Path(__file__).parent / "fixtures" / "legacy_run"
LEGACY_CHECKPOINT = LEGACY_RUN / "checkpoints" / "step_000002.safetensors"


def _expected() -> MetaTrainConfig:
    return MetaTrainConfig.from_dict(
        {
            "tasks": ["nqm"],
            "task_args": {"nqm": {"dim": 4}},
            "optimizer": {
                "kind": "star",
                "constants": {"beta3": 1e-5},
                "nominal_direction": "adam",
            },
            "estimator": {
                "kind": "pes",
                "sigma": 0.01,
                "truncation_length": 2,
                "horizon": 8,
                "num_pairs": 2,
            },
            "outer": {"learning_rate": 0.003, "weight_decay": 0.5},
            "outer_steps": 2,
            "seed": 3,
            "checkpoint_interval": 1,
        }
    )


def test_the_flat_config_file_and_checkpoint_metadata_read_as_the_nested_config():
    stored = json.loads((LEGACY_RUN / "config.json").read_text())
    assert stored["optimizer"] == "star" and "outer_learning_rate" in stored  # the old layout
    config = MetaTrainConfig.from_file(LEGACY_RUN / "config.json")
    assert config == _expected()
    assert config.optimizer == OptimizerConfig("star", {"beta3": 1e-5}, "adam", True, True)
    assert config.outer == OuterConfig(learning_rate=0.003, clip=3.0, weight_decay=0.5)
    metadata = ckpt.load_checkpoint(LEGACY_CHECKPOINT).metadata
    assert MetaTrainConfig.from_dict(metadata["meta_train_config"]) == config


@pytest.mark.slow
def test_load_optimizer_reads_the_legacy_checkpoint():
    lopt, theta, metadata = ckpt.load_learned_optimizer(LEGACY_CHECKPOINT)
    assert lopt == _expected().make_optimizer() and metadata["step"] == 2
    tx = star_core.load_optimizer(LEGACY_RUN)
    params = {"w": jax.numpy.ones(3)}
    updates, _ = tx.update({"w": jax.numpy.full(3, 0.5)}, tx.init(params), params)
    assert np.all(np.isfinite(updates["w"])) and np.any(updates["w"] != 0)
    assert Learner(_expected()).restore(LEGACY_CHECKPOINT).step == 2


@pytest.fixture(scope="module")
def fresh_three_steps(tmp_path_factory):
    """Three outer steps of the same config by today's code, from scratch."""
    config = MetaTrainConfig.from_dict({**_expected().to_dict(), "outer_steps": 3})
    return meta_train(config, tmp_path_factory.mktemp("fresh"))


@pytest.mark.slow
def test_star_train_resumes_the_legacy_run(tmp_path, fresh_three_steps):
    run = tmp_path / "run"
    shutil.copytree(LEGACY_RUN, run)
    assert main(["train", "--out", str(run), "--outer-steps", "3"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    rewritten = json.loads((run / "config.json").read_text())
    assert rewritten["optimizer"]["kind"] == "star" and rewritten["outer_steps"] == 3
    resumed = ckpt.load_checkpoint(run / "checkpoints" / "step_000003.safetensors")
    fresh = jax.tree.map(np.asarray, fresh_three_steps.theta)
    for got, want in zip(jax.tree.leaves(resumed.theta), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
    assert records[-1]["meta_loss"] == pytest.approx(
        fresh_three_steps.history[-1]["meta_loss"], rel=1e-5
    )


@pytest.mark.slow
def test_star_train_warm_starts_from_the_legacy_checkpoint(tmp_path):
    out = tmp_path / "warm"
    args = ["train", "--out", str(out), "--task", "nqm", "--task-arg", "dim=4"]
    args += ["--horizon", "8", "--truncation", "2", "--pairs", "2", "--outer-steps", "1"]
    assert main([*args, "--warm-start", str(LEGACY_CHECKPOINT)]) == 0
    source = ckpt.load_checkpoint(LEGACY_CHECKPOINT).theta
    started = ckpt.load_checkpoint(out / "checkpoints" / "step_000001.safetensors").theta
    for a, b in zip(jax.tree.leaves(source), jax.tree.leaves(started), strict=True):
        assert a.shape == b.shape and np.max(np.abs(a - b)) < 0.05  # one outer step apart
