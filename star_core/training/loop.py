"""``meta_train``: single-process meta-training that stops and resumes exactly (spec §3).

Each outer step ``s`` (0-based):

1. picks the task ``tasks[i_s]``: ``i_s`` is drawn from ``fold_in(schedule_key, s)`` (always 0
   with one task), so the schedule is a function of ``(seed, s)`` only;
2. estimates ``g_s = dL/dtheta`` with that task's ES/PES estimator, from the key
   ``fold_in(step_key, s)`` and the task's persistent estimator state (PES particles);
3. applies the outer step of ``outer.py`` (Adam on the clipped, weight-decayed ``g_s``) unless
   ``g_s`` has a non-finite element: then theta and the Adam state are left unchanged and the
   estimate is counted in ``dropped_estimates``.

``schedule_key``, ``step_key`` and the keys that initialize theta and the estimator states are
four independent splits of ``key(seed)``. Because every step's randomness comes from
``(seed, s)`` and the checkpoint holds everything else (theta, the Adam state, every estimator
state, the drop counter), a run resumed from its latest checkpoint produces the same theta,
bit for bit, as one that never stopped.

Output folder layout::

    config.json                                  the MetaTrainConfig (JSON)
    metrics.jsonl                                one record per outer step
    checkpoints/step_000100.safetensors          theta + outer state + metadata
    checkpoints/step_000100.estimator.safetensors   estimator states (resuming only)

The main checkpoint file is written after its estimator file, so a checkpoint exists only once
both are complete. Estimator files of older checkpoints are deleted (``KEEP_ESTIMATOR_STATES``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from star_core.estimators import make_estimator
from star_core.training import checkpoint as ckpt
from star_core.training.config import MetaTrainConfig
from star_core.training.outer import guarded_step, outer_optimizer

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# Estimator states are large (2P inner models); only the newest few are kept for resuming.
KEEP_ESTIMATOR_STATES = 2
# Config fields that may change when a run is resumed (they do not change its trajectory).
RESUMABLE_CHANGES = ("outer_steps", "checkpoint_interval")
# Name prefix of each task's estimator state in the estimator file.
ESTIMATOR_PREFIX = "estimator"

Progress = Callable[[int, dict[str, Any]], None]


class TrainState(NamedTuple):
    """Everything that evolves across outer steps (and is checkpointed)."""

    step: int  # outer steps completed
    theta: Any
    outer_state: Any
    estimator_states: tuple  # one per task, in config.tasks order
    dropped: int  # non-finite estimates dropped so far


class MetaTrainResult(NamedTuple):
    """theta after ``step`` outer steps, the per-step metrics history and the drop count."""

    theta: Any
    history: list[dict[str, Any]]
    step: int
    dropped_estimates: int


class _Run(NamedTuple):
    config: MetaTrainConfig
    lopt: Any
    estimators: tuple
    outer_tx: Any
    outer_step: Callable
    keys: dict[str, jax.Array]


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / ckpt.CHECKPOINT_DIR / f"step_{step:06d}.safetensors"


def estimator_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / ckpt.CHECKPOINT_DIR / f"step_{step:06d}.estimator.safetensors"


def _build_run(config: MetaTrainConfig) -> _Run:
    lopt = config.make_optimizer()
    estimators = tuple(
        make_estimator(config.make_task(name), lopt, config.estimator) for name in config.tasks
    )
    tx = outer_optimizer(
        config.outer_learning_rate, config.clip, config.outer_weight_decay, config.decay_all
    )
    theta_key, estimator_key, step_key, schedule_key = jax.random.split(
        jax.random.key(config.seed), 4
    )
    keys = {"theta": theta_key, "estimator": estimator_key, "step": step_key,
            "schedule": schedule_key}
    outer_step = jax.jit(lambda grad, state, theta: guarded_step(tx, grad, state, theta))
    return _Run(config, lopt, estimators, tx, outer_step, keys)


def _fresh_state(run: _Run) -> TrainState:
    theta = run.lopt.init_meta_params(run.keys["theta"])
    states = tuple(
        est.init_state(theta, jax.random.fold_in(run.keys["estimator"], i))
        for i, est in enumerate(run.estimators)
    )
    return TrainState(0, theta, run.outer_tx.init(theta), states, 0)


def task_index(schedule_key: jax.Array, step: int, num_tasks: int) -> int:
    """The task of outer step ``step``: uniform over the tasks, a function of (key, step)."""
    if num_tasks == 1:
        return 0
    draw = jax.random.randint(jax.random.fold_in(schedule_key, step), (), 0, num_tasks)
    return int(draw)


def _outer_step(run: _Run, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
    start = time.perf_counter()
    index = task_index(run.keys["schedule"], state.step, len(run.estimators))
    key = jax.random.fold_in(run.keys["step"], state.step)
    grad, est_state, metrics = run.estimators[index].estimate(
        state.theta, key, state.estimator_states[index]
    )
    theta, outer_state, applied = run.outer_step(grad, state.outer_state, state.theta)
    applied = bool(applied)
    dropped = state.dropped + (0 if applied else 1)
    if not applied:
        logger.warning("outer step %d: non-finite meta-gradient dropped", state.step + 1)
    states = state.estimator_states[:index] + (est_state,) + state.estimator_states[index + 1 :]
    grad_norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grad))))
    record = {
        "step": state.step + 1,
        "task": run.config.tasks[index],
        **metrics,
        "grad_norm": grad_norm,
        "applied": applied,
        "dropped_estimates": dropped,
        "seconds": time.perf_counter() - start,
    }
    return TrainState(state.step + 1, theta, outer_state, states, dropped), record


def _save(run: _Run, state: TrainState, out_dir: Path) -> None:
    tensors = {}
    for name, est_state in zip(run.config.tasks, state.estimator_states, strict=True):
        tensors.update(ckpt.named_leaves(est_state, f"{ESTIMATOR_PREFIX}/{name}"))
    ckpt.save_tree(estimator_path(out_dir, state.step), tensors, {"step": state.step})
    metadata = {
        "optimizer": run.config.optimizer,
        "optimizer_config": _config_dict(run.lopt.config),
        "step": state.step,
        "meta_train_config": run.config.to_dict(),
        "dropped_estimates": state.dropped,
        "estimator_state_file": estimator_path(out_dir, state.step).name,
    }
    ckpt.save_checkpoint(checkpoint_path(out_dir, state.step), state.theta, state.outer_state,
                         metadata)
    old = sorted((Path(out_dir) / ckpt.CHECKPOINT_DIR).glob("step_*.estimator.safetensors"))
    for path in old[:-KEEP_ESTIMATOR_STATES]:
        path.unlink(missing_ok=True)


def _config_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint whose estimator state is also present."""
    mains = ckpt.list_checkpoints(Path(out_dir) / ckpt.CHECKPOINT_DIR)
    complete = [p for p in mains if p.with_name(p.stem + ".estimator.safetensors").exists()]
    return complete[-1] if complete else None


def _restore(run: _Run, path: Path) -> TrainState:
    """Rebuild the TrainState of a checkpoint, checking every tensor against a fresh template."""
    template = _fresh_state(run)
    loaded = ckpt.load_checkpoint(path)
    theta = ckpt.fill_tree(template.theta, ckpt.named_leaves(loaded.theta), source=str(path))
    outer_state = ckpt.fill_tree(
        template.outer_state, loaded.outer_state, ckpt.OUTER_STATE_PREFIX, source=str(path)
    )
    est_path = path.with_name(path.stem + ".estimator.safetensors")
    tensors, _ = ckpt.read_tensors(est_path)
    states = tuple(
        ckpt.fill_tree(tmpl, tensors, f"{ESTIMATOR_PREFIX}/{name}", source=str(est_path))
        for name, tmpl in zip(run.config.tasks, template.estimator_states, strict=True)
    )
    step, dropped = int(loaded.metadata["step"]), int(loaded.metadata.get("dropped_estimates", 0))
    return TrainState(step, _as_jax(theta), _as_jax(outer_state), _as_jax(states), dropped)


def _as_jax(tree: Any) -> Any:
    """Every leaf of ``tree`` as a jax array."""
    return jax.tree.map(jax.numpy.asarray, tree)


def _check_run_folder(config: MetaTrainConfig, out_dir: Path) -> None:
    """A resumed run must have the same config, except the fields in RESUMABLE_CHANGES."""
    stored_path = out_dir / CONFIG_FILE
    if not stored_path.exists():
        return
    stored = MetaTrainConfig.from_file(stored_path).to_dict()
    current = config.to_dict()
    differing = [k for k in current if k not in RESUMABLE_CHANGES and current[k] != stored.get(k)]
    if differing and _latest_checkpoint(out_dir) is not None:
        raise ValueError(
            f"{out_dir} holds a run with a different config (fields {differing} differ);"
            " use another output folder or the same config"
        )


def _read_history(out_dir: Path, up_to_step: int) -> list[dict[str, Any]]:
    path = out_dir / METRICS_FILE
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= up_to_step]


def meta_train(
    config: MetaTrainConfig, out_dir: str | Path, progress: Progress | None = None
) -> MetaTrainResult:
    """Meta-train ``config`` into ``out_dir``, resuming from its latest checkpoint if any.

    ``progress(step, record)`` is called after every outer step with the metrics record that is
    also appended to ``metrics.jsonl``. A checkpoint is written every ``checkpoint_interval``
    steps and after the last one.
    """
    out_dir = Path(out_dir)
    _check_run_folder(config, out_dir)
    run = _build_run(config)
    latest = _latest_checkpoint(out_dir)
    state = _restore(run, latest) if latest is not None else _fresh_state(run)
    if latest is not None:
        logger.info("resuming %s from step %d", out_dir, state.step)
    history = _read_history(out_dir, state.step)
    ckpt.write_text_atomically(out_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2))
    ckpt.write_text_atomically(
        out_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history)
    )
    with open(out_dir / METRICS_FILE, "a") as metrics_file:
        while state.step < config.outer_steps:
            state, record = _outer_step(run, state)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            history.append(record)
            if progress is not None:
                progress(state.step, record)
            if state.step % config.checkpoint_interval == 0 or state.step == config.outer_steps:
                _save(run, state, out_dir)
    return MetaTrainResult(state.theta, history, state.step, state.dropped)
