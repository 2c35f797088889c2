"""The evaluation protocol as a Ray task: a checkpoint and baselines trained on one task.

``evaluate_checkpoint`` runs ``star_core.training.evaluate`` (the learned optimizer of the
checkpoint, then each baseline: ``adam``, ``sgdm``, ``aggmo`` at their defaults, ``adam-tuned``
with the learning-rate sweep on tuning seeds) in one CPU Ray task, so the service process never
runs JAX work, and returns one summary per optimizer: the fields of the ``EvaluationSummary``
proto message (means over seeds, divergence counts, the mean training curve at <= 200 points).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Points of a summary's curve (evenly spaced steps, including 0 and the last one).
CURVE_POINTS = 200
# The label of the checkpoint's own summary.
CHECKPOINT_LABEL = "checkpoint"


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
        if name == "adam-tuned":
            results.append(tune_adam(task, steps, seed_list))
        else:
            results.append(evaluate(task, optimizers.get(name), {}, steps, seed_list, name))
    return [evaluation_summary(result) for result in results]


async def evaluate_checkpoint(
    checkpoint: bytes, evaluation: Any, default_task: str, horizon: int
) -> list[dict[str, Any]]:
    """:func:`run_evaluation` as a Ray task (one CPU, ``JAX_PLATFORMS=cpu``).

    ``evaluation`` is an ``EvaluationConfig``: its task ("" = ``default_task``), steps (None =
    its multiple of ``horizon``), seeds and baselines.
    """
    task = evaluation.task or default_task
    return await evaluation_task(checkpoint, task, evaluation.steps_for(horizon), evaluation)


def evaluation_task(checkpoint: bytes, task: str, steps: int, evaluation: Any) -> Any:
    """The Ray task (one CPU, ``JAX_PLATFORMS=cpu``) of :func:`run_evaluation`: its ref."""
    import ray

    remote = ray.remote(run_evaluation).options(
        num_cpus=1, runtime_env={"env_vars": {"JAX_PLATFORMS": "cpu"}}
    )
    return remote.remote(checkpoint, task, steps, evaluation.seeds, tuple(evaluation.baselines))


class EvaluationRunner:
    """Runs one evaluation job (the Evaluate RPC): PENDING -> RUNNING -> SUCCEEDED with the
    summaries stored on the job, CANCELLED when stopped, FAILED with the reason."""

    def __init__(self, store: Any, checkpoints: Any, job_id: str, spec: Any):
        self.store = store
        self.checkpoints = checkpoints
        self.job_id = job_id
        self.spec = spec  # an EvaluationJobSpec
        self.stop_reason: Any = None
        self._ref: Any = None

    async def stop(self, reason: Any) -> None:
        import ray

        self.stop_reason = reason
        if self._ref is not None:
            ray.cancel(self._ref, force=True)

    async def run(self) -> Any:
        import asyncio

        from services.cluster.runner import StopReason, start_job
        from services.domain import JobState

        if not await start_job(self.store, self.job_id):
            return (await asyncio.to_thread(self.store.get_job, self.job_id)).state
        try:
            summaries = await self._evaluate()
        except Exception as err:
            if self.stop_reason is StopReason.SHUTDOWN:
                return await self._end(JobState.PENDING, "service stopping: runs again later")
            if self.stop_reason is StopReason.CANCEL:
                return await self._end(JobState.CANCELLED, "cancelled")
            return await self._end(JobState.FAILED, f"{type(err).__name__}: {err}")
        await asyncio.to_thread(self.store.set_evaluation, self.job_id, summaries)
        return await self._end(JobState.SUCCEEDED, "evaluated")

    async def _end(self, state: Any, reason: str) -> Any:
        import asyncio

        job = await asyncio.to_thread(self.store.get_job, self.job_id)
        if job.state.is_terminal():
            return job.state
        await asyncio.to_thread(self.store.transition, self.job_id, state, reason)
        return state

    async def _evaluate(self) -> list[dict[str, Any]]:
        import asyncio

        from star_core.training.checkpoint import load_checkpoint

        record = await asyncio.to_thread(self.store.get_checkpoint, self.spec.checkpoint_id)
        data = await asyncio.to_thread(self.checkpoints.read_bytes, record)
        config = load_checkpoint(data).metadata.get("meta_train_config") or {}
        evaluation = self.spec.evaluation
        task = evaluation.task or (config.get("tasks") or [""])[0]
        horizon = (config.get("estimator") or {}).get("horizon")
        if not task or (evaluation.steps is None and not horizon):
            raise ValueError(
                "the checkpoint does not say its task and horizon: give task and steps"
            )
        await asyncio.to_thread(
            self.store.log,
            self.job_id,
            "INFO",
            f"evaluating checkpoint {record.checkpoint_id} on {task}",
        )
        self._ref = evaluation_task(data, task, evaluation.steps_for(horizon or 1), evaluation)
        return await self._ref
