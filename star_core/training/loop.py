"""``meta_train``: single-process meta-training that stops and resumes exactly (docs/algorithm.md).

``meta_train`` is one learner (``learner.py``: theta, the outer optimizer, checkpoints) and one
worker (``worker.py``: the ES/PES estimators and their PES particles) in one process: the same
code the service runs with one learner actor and many worker actors. Each outer step ``s``
(0-based), worker 0 estimates ``g_s = dL/dtheta`` on the task and with the key of
``(seed, s, 0)`` (``keys.py``), and the learner applies the outer step (Adam on the clipped,
weight-decayed ``g_s``) unless ``g_s`` has a non-finite element: then theta and the Adam state
are left unchanged and the estimate is counted in ``dropped_estimates``.

Because every step's randomness comes from ``(seed, s)`` and the checkpoint holds everything
else (theta, the Adam state, every estimator state, the drop counter), a run resumed from its
latest checkpoint produces the same theta, bit for bit, as one that never stopped. A run can be
asked to stop between two outer steps (``should_stop``): it writes a checkpoint first. A run can
start from another run's checkpoint (``warm_start``: theta only, fresh outer state).

Output folder layout::

    config.json                                  the MetaTrainConfig (JSON)
    metrics.jsonl                                one record per outer step
    checkpoints/step_000100.safetensors          theta + outer state + metadata
    checkpoints/step_000100.estimator.safetensors   estimator states (resuming only)

The main checkpoint file is written after its estimator file, so a checkpoint exists only once
both are complete. Estimator files of older checkpoints are deleted (``KEEP_ESTIMATOR_STATES``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax

from star_core.training import checkpoint as ckpt
from star_core.training.config import MetaTrainConfig
from star_core.training.learner import Learner, LearnerState
from star_core.training.worker import EstimationWorker

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


class MetaTrainResult(NamedTuple):
    """theta after ``step`` outer steps, the per-step metrics history and the drop count."""

    theta: Any
    history: list[dict[str, Any]]
    step: int
    dropped_estimates: int
    stopped: bool = False  # should_stop ended the run before config.outer_steps


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / ckpt.CHECKPOINT_DIR / f"step_{step:06d}.safetensors"


def estimator_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / ckpt.CHECKPOINT_DIR / f"step_{step:06d}.estimator.safetensors"


def _save(learner: Learner, worker: EstimationWorker, state: LearnerState, out_dir: Path) -> None:
    tensors = {}
    states = worker.states or ()  # set by init_states or load_states before any step
    for name, est_state in zip(learner.config.tasks, states, strict=True):
        tensors.update(ckpt.named_leaves(est_state, f"{ESTIMATOR_PREFIX}/{name}"))
    ckpt.save_tree(estimator_path(out_dir, state.step), tensors, {"step": state.step})
    learner.save(
        state,
        checkpoint_path(out_dir, state.step),
        estimator_state_file=estimator_path(out_dir, state.step).name,
    )
    old = sorted((Path(out_dir) / ckpt.CHECKPOINT_DIR).glob("step_*.estimator.safetensors"))
    for path in old[:-KEEP_ESTIMATOR_STATES]:
        path.unlink(missing_ok=True)


def _latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint whose estimator state is also present."""
    mains = ckpt.list_checkpoints(Path(out_dir) / ckpt.CHECKPOINT_DIR)
    complete = [p for p in mains if p.with_name(p.stem + ".estimator.safetensors").exists()]
    return complete[-1] if complete else None


def _restore(learner: Learner, worker: EstimationWorker, path: Path) -> LearnerState:
    """The learner state of a checkpoint; the worker's estimator states from its companion file,
    every tensor checked against a fresh template."""
    state = learner.restore(path)
    templates = worker.init_states(state.theta)
    est_path = path.with_name(path.stem + ".estimator.safetensors")
    tensors, _ = ckpt.read_tensors(est_path)
    states = tuple(
        ckpt.fill_tree(tmpl, tensors, f"{ESTIMATOR_PREFIX}/{name}", source=str(est_path))
        for name, tmpl in zip(learner.config.tasks, templates, strict=True)
    )
    worker.load_states(jax.tree.map(jax.numpy.asarray, states))
    return state


def _outer_step(
    learner: Learner, worker: EstimationWorker, state: LearnerState
) -> tuple[LearnerState, dict[str, Any]]:
    start = time.perf_counter()
    grad, metrics = worker.estimate(state.theta, state.step)
    state, info = learner.apply(state, [grad])
    if not info.applied:
        logger.warning("outer step %d: non-finite meta-gradient dropped", state.step)
    metrics = {k: v for k, v in metrics.items() if k not in ("worker", "estimate_seconds")}
    record = {
        "step": state.step,
        **metrics,
        "grad_norm": info.grad_norm,
        "applied": info.applied,
        "dropped_estimates": state.dropped,
        "seconds": time.perf_counter() - start,
    }
    return state, record


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
    config: MetaTrainConfig,
    out_dir: str | Path,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    warm_start: str | Path | None = None,
) -> MetaTrainResult:
    """Meta-train ``config`` into ``out_dir``, resuming from its latest checkpoint if any.

    ``progress(step, record)`` is called after every outer step with the metrics record that is
    also appended to ``metrics.jsonl``. A checkpoint is written every ``checkpoint_interval``
    steps and after the last one. ``should_stop()`` is asked before every outer step; when it
    says True the run writes a checkpoint and returns (``stopped=True``). ``warm_start`` (a
    checkpoint file or run folder) gives the initial theta of a run that has no checkpoint yet.
    """
    out_dir = Path(out_dir)
    _check_run_folder(config, out_dir)
    learner, worker = Learner(config), EstimationWorker(config, index=0)
    latest = _latest_checkpoint(out_dir)
    if latest is not None:
        state = _restore(learner, worker, latest)
        logger.info("resuming %s from step %d", out_dir, state.step)
    else:
        source = None if warm_start is None else ckpt.resolve_checkpoint_path(warm_start)
        state = learner.init(source)
        worker.init_states(state.theta)
    history = _read_history(out_dir, state.step)
    ckpt.write_text_atomically(out_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2))
    ckpt.write_text_atomically(
        out_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history)
    )
    saved_step = None if latest is None else state.step
    with open(out_dir / METRICS_FILE, "a") as metrics_file:
        while state.step < config.outer_steps:
            if should_stop is not None and should_stop():
                if saved_step != state.step:
                    _save(learner, worker, state, out_dir)
                return MetaTrainResult(state.theta, history, state.step, state.dropped, True)
            state, record = _outer_step(learner, worker, state)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            history.append(record)
            if progress is not None:
                progress(state.step, record)
            if state.step % config.checkpoint_interval == 0 or state.step == config.outer_steps:
                _save(learner, worker, state, out_dir)
                saved_step = state.step
    return MetaTrainResult(state.theta, history, state.step, state.dropped)
