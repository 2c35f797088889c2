"""meta_train: exact stop/resume, non-finite estimates dropped and counted, files written."""

import dataclasses
import json
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_core import tasks
from star_core.tasks.quadratic import NoisyQuadratic
from star_core.training import checkpoint as ckpt
from star_core.training.config import MetaTrainConfig
from star_core.training.loop import meta_train

pytestmark = pytest.mark.slow  # every test compiles and runs JAX code for seconds

ESTIMATOR = {"kind": "pes", "sigma": 0.01, "truncation_length": 3, "horizon": 9, "num_pairs": 2}


class _Interrupt(Exception):
    pass


def _stop_after(step):
    def progress(done, record):
        if done == step:
            raise _Interrupt

    return progress


def _leaves_bytes(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _trajectory(history):
    return [(r["step"], r["task"], r["meta_loss"], r["grad_norm"]) for r in history]


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "nqm_tiny", NoisyQuadratic(name="nqm_tiny", dim=3))
    data = {
        "tasks": ["nqm", "nqm_tiny"],
        "task_args": {"nqm": {"dim": 4}},
        "estimator": ESTIMATOR,
        "outer_steps": 6,
        "checkpoint_interval": 2,
        "outer": {"learning_rate": 1e-2},
        "seed": 3,
    }
    config = MetaTrainConfig.from_dict(data)
    straight = meta_train(config, tmp_path / "a")

    with pytest.raises(_Interrupt):  # stops after step 3; the last checkpoint is step 2
        meta_train(config, tmp_path / "b", progress=_stop_after(3))
    shorter = MetaTrainConfig.from_dict({**data, "outer_steps": 4})
    assert meta_train(shorter, tmp_path / "b").step == 4
    resumed = meta_train(config, tmp_path / "b")

    assert {r["task"] for r in straight.history} == {"nqm", "nqm_tiny"}
    assert resumed.step == straight.step == 6
    assert _leaves_bytes(resumed.theta) == _leaves_bytes(straight.theta)
    assert _trajectory(resumed.history) == _trajectory(straight.history)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    last = ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "step_000006.safetensors")
    assert last.metadata["meta_train_config"] == config.to_dict()
    assert last.metadata["optimizer"] == "star" and last.metadata["step"] == 6
    assert _leaves_bytes(last.theta) == _leaves_bytes(jax.tree.map(np.asarray, straight.theta))
    # Only the newest estimator states are kept.
    kept = sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("*.estimator.*"))
    assert kept == ["step_000004.estimator.safetensors", "step_000006.estimator.safetensors"]

    other = MetaTrainConfig.from_dict({**data, "seed": 4})
    with pytest.raises(ValueError, match=r"different config \(fields \['seed'\] differ\)"):
        meta_train(other, tmp_path / "b")


@dataclasses.dataclass(frozen=True)
class PoisonedQuadratic:
    """A quadratic whose loss is NaN on "poisoned" batches, with a normalizer that lets NaN
    through, so that the meta-gradient itself becomes non-finite."""

    name: str = "poisoned"
    poison_rate: float = 0.3
    dim: int = 3

    @property
    def max_loss(self) -> float:
        return 10.0

    def init(self, key):
        return {"phi": jax.random.normal(key, (self.dim,))}

    def loss(self, params, key, batch):
        del key
        return 0.5 * jnp.sum(params["phi"] ** 2) * jnp.where(batch["poison"], jnp.nan, 1.0)

    def normalizer(self, loss):
        return loss

    def batches(self, seed, split="train", copies=None) -> Iterator[dict]:
        rng = np.random.default_rng([seed, 0 if copies is None else copies])
        shape = () if copies is None else (copies,)
        while True:
            yield {"poison": rng.random(shape) < self.poison_rate}


@pytest.mark.parametrize("poison_rate", [0.05, 1.0])
def test_non_finite_estimates_are_dropped_and_counted(tmp_path, monkeypatch, poison_rate):
    monkeypatch.setitem(tasks.TASKS, "poisoned", PoisonedQuadratic())
    config = MetaTrainConfig.from_dict(
        {
            "tasks": ["poisoned"],
            "task_args": {"poisoned": {"poison_rate": poison_rate}},
            "estimator": {**ESTIMATOR, "truncation_length": 2, "horizon": 4},
            "outer_steps": 8,
            "checkpoint_interval": 8,
            "seed": 1,
        }
    )
    result = meta_train(config, tmp_path)
    initial = config.make_optimizer().init_meta_params(jax.random.split(jax.random.key(1), 4)[0])

    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(result.theta))
    dropped = [r["step"] for r in result.history if not r["applied"]]
    assert result.dropped_estimates == len(dropped) == result.history[-1]["dropped_estimates"]
    assert all(not np.isfinite(r["grad_norm"]) for r in result.history if not r["applied"])
    assert all(np.isfinite(r["grad_norm"]) for r in result.history if r["applied"])
    if poison_rate == 1.0:
        assert len(dropped) == 8  # every estimate is NaN: theta never moves
        assert _leaves_bytes(result.theta) == _leaves_bytes(initial)
    else:
        assert 0 < len(dropped) < 8
        assert _leaves_bytes(result.theta) != _leaves_bytes(initial)
