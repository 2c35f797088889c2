"""The evaluation protocol as a Ray task: a checkpoint and baselines trained on one task.

:class:`EvaluationTask` runs ``star_core.training.evaluate`` (the learned optimizer of the
checkpoint, then each baseline: ``adam``, ``sgdm``, ``aggmo`` at their defaults, ``adam-tuned``
with the learning-rate sweep on tuning seeds) in one CPU Ray task, so the service process never
runs JAX work, and returns one summary per optimizer: the fields of the ``EvaluationSummary``
proto message (means over seeds, divergence counts, the mean training curve at <= 200 points).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np

from services.cluster.lifecycle import Outcome, StopReason, stopped_outcome
from services.domain import CHECKPOINT_LABEL, TUNED_ADAM, JobState

# Points of a summary's curve (evenly spaced steps, including 0 and the last one).
CURVE_POINTS = 200


def _finite_or_none(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def evaluation_summary(result: Any, label: str | None = None) -> dict[str, Any]:
    """The stored summary of a ``star_core.training.evaluate.EvalResult``.

    Means over seeds (None when not finite), the count of diverged runs, and the mean loss
    curve at up to CURVE_POINTS evenly spaced steps (a non-finite mean is None).
    """
    rows = result.per_seed()
    curves = np.asarray(result.curves, np.float64)
    steps = np.unique(
        np.linspace(0, result.steps, min(CURVE_POINTS, result.steps + 1)).round().astype(int)
    )
    mean_curve = curves.mean(axis=0)[steps]
    return {
        "label": label or result.label,
        "task": result.task,
        "steps": int(result.steps),
        "seeds": [int(s) for s in result.seeds],
        **{
            k: _finite_or_none(np.mean([r[k] for r in rows]))
            for k in ("initial_loss", "final_loss", "mean_loss")
        },
        "diverged": int(sum(bool(r["diverged"]) for r in rows)),
        "curve_steps": [int(s) for s in steps],
        "curve": [_finite_or_none(v) for v in mean_curve],
    }


def run_evaluation(
    checkpoint: bytes, task_name: str, steps: int, seeds: int, baselines: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The summaries of the checkpoint's optimizer and of ``baselines`` (runs in-process)."""
    from star_core import optimizers, tasks
    from star_core.training.checkpoint import load_learned_optimizer
    from star_core.training.evaluate import evaluate, tune_adam

    task = tasks.get(task_name)
    seed_list = list(range(seeds))
    lopt, theta, _ = load_learned_optimizer(checkpoint)
    results = [evaluate(task, lopt, theta, steps, seed_list, CHECKPOINT_LABEL)]
    for name in baselines:
        if name == TUNED_ADAM:
            results.append(tune_adam(task, steps, seed_list))
        else:
            results.append(evaluate(task, optimizers.get(name), {}, steps, seed_list, name))
    return [evaluation_summary(result) for result in results]


class EvaluationTask:
    """One run of :func:`run_evaluation` as a Ray task (one CPU, ``JAX_PLATFORMS=cpu``) that
    can be stopped before it starts or while it runs: :meth:`run` then returns None."""

    def __init__(self) -> None:
        self._ref: Any = None
        self._stopped = False

    async def run(
        self, checkpoint: bytes, task: str, steps: int, evaluation: Any
    ) -> list[dict[str, Any]] | None:
        """The summaries of the evaluation (``evaluation``: an EvaluationConfig), or None when
        :meth:`stop` came first."""
        if self._stopped:
            return None
        self._ref = await asyncio.to_thread(_submit, checkpoint, task, steps, evaluation)
        if self._stopped:  # stop() came while the task was being submitted
            await self.stop()
        try:
            return await self._ref
        except Exception:
            if self._stopped:  # the cancelled task's error
                return None
            raise

    async def stop(self) -> None:
        import ray

        self._stopped = True
        if self._ref is not None:
            await asyncio.to_thread(ray.cancel, self._ref, force=True)


def _submit(checkpoint: bytes, task: str, steps: int, evaluation: Any) -> Any:
    import ray

    remote = ray.remote(run_evaluation).options(
        num_cpus=1, runtime_env={"env_vars": {"JAX_PLATFORMS": "cpu"}}
    )
    return remote.remote(checkpoint, task, steps, evaluation.seeds, tuple(evaluation.baselines))


def checkpoint_task_and_horizon(data: bytes, evaluation: Any) -> tuple[str, int]:
    """The task and inner steps of evaluating checkpoint ``data``: the evaluation's own, else
    the checkpoint's first meta-training task and EVAL_HORIZON_MULTIPLE x its horizon."""
    from star_core.training.checkpoint import load_checkpoint

    config = load_checkpoint(data).metadata.get("meta_train_config") or {}
    task = evaluation.task or (config.get("tasks") or [""])[0]
    horizon = (config.get("estimator") or {}).get("horizon")
    if not task or (evaluation.steps is None and not horizon):
        raise ValueError("the checkpoint does not say its task and horizon: give task and steps")
    return task, evaluation.steps_for(horizon or 1)


class EvaluationRunner:
    """Runs one evaluation job (the Evaluate RPC) under ``lifecycle.run_job``: SUCCEEDED with
    the summaries stored on the job, CANCELLED / back to PENDING when stopped."""

    def __init__(self, store: Any, checkpoints: Any, job_id: str, spec: Any):
        self.store = store
        self.checkpoints = checkpoints
        self.job_id = job_id
        self.spec = spec  # an EvaluationJobSpec
        self.stop_reason: StopReason | None = None
        self._task = EvaluationTask()

    async def stop(self, reason: StopReason) -> None:
        self.stop_reason = reason
        await self._task.stop()

    async def execute(self) -> Outcome:
        record = await asyncio.to_thread(self.store.get_checkpoint, self.spec.checkpoint_id)
        data = await asyncio.to_thread(self.checkpoints.read_bytes, record)
        evaluation = self.spec.evaluation
        task, steps = await asyncio.to_thread(checkpoint_task_and_horizon, data, evaluation)
        message = f"evaluating checkpoint {record.checkpoint_id} on {task}"
        await asyncio.to_thread(self.store.log, self.job_id, "INFO", message)
        summaries = await self._task.run(data, task, steps, evaluation)
        if summaries is None or self.stop_reason is not None:
            return stopped_outcome(self.stop_reason, "the evaluation")
        await asyncio.to_thread(self.store.set_evaluation, self.job_id, summaries)
        return Outcome(JobState.SUCCEEDED, "evaluated")
