"""The training runner: one meta-training job's work, from the service process.

``lifecycle.run_job`` moves the job to RUNNING, calls :meth:`TrainingRunner.execute` and
stores how it ended. ``execute``:

1. decides where the workers run (:mod:`services.cluster.placement`): GPU workers when the
   cluster has GPUs, else CPU workers (a job that asked for GPUs on a CPU-only cluster falls
   back, and its log says so; Ray itself would wait forever), and where the learner goes;
2. starts the job's learner actor ``star-<job>-learner``, which starts the worker actors, from
   the job's latest checkpoint if it has one (a job resumed after a restart), else from the
   warm-start checkpoint, else fresh;
3. records every event the learner streams (:mod:`services.cluster.events`): metrics (the step
   never goes back), checkpoints (written atomically by the CheckpointStore, then indexed; the
   job keeps its latest ``keep_checkpoints``, older files are deleted), log lines, where the
   workers run;
4. runs the evaluation protocol on the final checkpoint when the spec asks for one.

A learner lost to a transient fault (its node died, a Ray RPC failed) is started again from the
latest checkpoint, up to ``LEARNER_RETRIES`` times: the job is first requeued to that
checkpoint's step (``lifecycle.requeue``: RUNNING -> PENDING -> RUNNING, as a restart does), so
its step never moves backwards in the new learner's hands. A passing error never fails a job.
``stop()`` (cancel, shutdown) reaches the learner, or the evaluation when it is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from services.cluster import events, placement, runtime
from services.cluster.evaluation import EvaluationTask
from services.cluster.learner import LearnerActor, learner_name
from services.cluster.lifecycle import Outcome, StopReason, requeue, stopped_outcome
from services.domain import JobState
from services.domain.spec import EvaluationConfig, TrainingSpec

logger = logging.getLogger(__name__)

# Times a job's learner is started again after a transient failure before the job fails.
LEARNER_RETRIES = 3
# Counters kept across the learner's restarts: the StepRecord increment -> the job's total.
COUNTERS = {"stale_now": "stale_dropped", "restarts_now": "worker_restarts"}


class TrainingRunner:
    """Runs one training job; see the module docstring. ``stop()`` may be called any time."""

    def __init__(
        self,
        store: Any,
        checkpoints: Any,
        job_id: str,
        spec: TrainingSpec,
        worker_class: type | None = None,
    ):
        self.store = store
        self.checkpoints = checkpoints
        self.job_id = job_id
        self.spec = spec
        self.worker_class = worker_class  # None: services.cluster.worker.WorkerActor
        self.stop_reason: StopReason | None = None
        self._learner: Any = None
        self._evaluation = EvaluationTask()

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking call (the store's SQLite writes fsync; Ray's control plane may stall)
        off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _log(self, level: str, message: str) -> None:
        await self._call(self.store.log, self.job_id, level, message)

    async def stop(self, reason: StopReason) -> None:
        """Ask the learner to checkpoint and stop after its current outer step, or stop the
        final evaluation."""
        self.stop_reason = reason
        await self._evaluation.stop()
        if self._learner is not None:
            try:
                await self._learner.stop.remote()
            except Exception as err:  # the learner is gone already; execute() ends on its own
                logger.info("job %s: stop: %s", self.job_id, err)

    async def execute(self) -> Outcome:
        """Train, then evaluate if asked; the outcome (``lifecycle.run_job`` stores it)."""
        if not await self._train():
            return stopped_outcome(self.stop_reason, "the learner")
        if self.spec.evaluation is not None and self.stop_reason is None:
            await self._evaluate(self.spec.evaluation)
        if self.stop_reason is not None:  # a stop request during the evaluation
            return stopped_outcome(self.stop_reason)
        return Outcome(JobState.SUCCEEDED, "finished")

    async def _train(self) -> bool:
        """Run learners until one finishes; True when the job reached its last outer step."""
        for attempt in range(LEARNER_RETRIES + 1):
            try:
                return await self._run_learner()
            except Exception as err:
                if not _transient(err) or attempt == LEARNER_RETRIES:
                    raise
                if self.stop_reason is not None:  # stopping anyway: the latest checkpoint stands
                    return False
                lost = f"learner lost ({type(err).__name__}, attempt {attempt + 2})"
                if not await requeue(self.store, self.job_id, lost):
                    # The job is no longer RUNNING: a cancel came first (it is CANCELLING).
                    self.stop_reason = self.stop_reason or StopReason.CANCEL
                    return False
        return False

    async def _run_learner(self) -> bool:
        import ray

        resume, warm = await self._initial_state()
        plan = await self._call(placement.plan, self.spec.distributed)
        for message in plan.warnings:
            await self._log("WARNING", message)
        self._learner = await self._call(self._start_learner, plan, resume, warm)
        if self.stop_reason is not None:
            await self._learner.stop.remote()
        counters = await self._counters()
        finished = False
        try:
            async for ref in self._learner.run.options(num_returns="streaming").remote():
                finished = await self._record(await ref, plan, counters) or finished
        finally:
            learner, self._learner = self._learner, None
            await self._call(_kill, ray, learner)
        return finished

    async def _initial_state(self) -> tuple[bytes | None, bytes | None]:
        """(resume bytes, warm-start bytes): the latest checkpoint, else the warm start."""
        latest = await self._call(self.store.latest_checkpoint, self.job_id)
        if latest is not None:
            return await self._call(self.checkpoints.read_bytes, latest), None
        if self.spec.warm_start_checkpoint_id:
            record = await self._call(self.store.get_checkpoint, self.spec.warm_start_checkpoint_id)
            return None, await self._call(self.checkpoints.read_bytes, record)
        return None, None

    def _start_learner(self, plan: placement.Plan, resume: bytes | None, warm: bytes | None) -> Any:
        """The job's learner actor (blocking: Ray registers its name with the GCS)."""
        import ray

        return runtime.create_named(
            ray.remote(LearnerActor),
            learner_name(self.job_id),
            self.job_id,
            self.spec,
            plan.worker_options,
            resume,
            warm,
            self.worker_class,
            max_concurrency=2,
            **plan.learner_options,
        )

    async def _counters(self) -> dict[str, float]:
        job = await self._call(self.store.get_job, self.job_id)
        return {name: float(job.metrics.get(name, 0.0)) for name in COUNTERS.values()}

    async def _record(
        self, event: events.LearnerEvent, plan: placement.Plan, counters: dict[str, float]
    ) -> bool:
        """Store one learner event; True for the end of a completed run."""
        match event:
            case events.StepDone(step=step, record=record):
                for increment, total in COUNTERS.items():
                    counters[total] += getattr(record, increment)
                metrics = {**record.metrics(), **counters}
                await self._call(self.store.update_progress, self.job_id, step, metrics)
            case events.CheckpointReady(step=step, data=data):
                await self._call(self._store_checkpoint, step, data)
            case events.Log(level=level, message=message):
                await self._log(level, message)
            case events.Placement():
                await self._record_placement(event, plan)
            case events.Finished(stopped=stopped):
                return not stopped
        return False

    def _store_checkpoint(self, step: int, data: bytes) -> None:
        """Write the checkpoint file (atomically), index it, and delete the files of the
        checkpoints retention dropped (the job keeps its latest ``keep_checkpoints``). A failed
        write (a full disk) raises: the job fails, its earlier checkpoints intact."""
        stored = self.checkpoints.write(self.job_id, step, data)
        indexed = self.store.index_checkpoint(
            self.job_id, step, *stored, keep=self.spec.keep_checkpoints
        )
        self.checkpoints.delete(indexed.dropped)

    async def _record_placement(self, event: events.Placement, plan: placement.Plan) -> None:
        nodes = [w.node_id for w in event.workers]
        await self._call(self.store.set_placement, self.job_id, plan.device, nodes)
        for level, message in placement.describe(event, plan):
            await self._log(level, message)

    async def _evaluate(self, evaluation: EvaluationConfig) -> None:
        latest = await self._call(self.store.latest_checkpoint, self.job_id)
        data = await self._call(self.checkpoints.read_bytes, latest)
        await self._log("INFO", "evaluating the final checkpoint")
        task = evaluation.task or self.spec.config.tasks[0]
        steps = evaluation.steps_for(self.spec.config.estimator.horizon)
        summaries = await self._evaluation.run(data, task, steps, evaluation)
        if summaries is not None:
            await self._call(self.store.set_evaluation, self.job_id, summaries)


def _transient(err: BaseException) -> bool:
    """Whether a learner failure is worth a retry from the latest checkpoint."""
    import ray

    return isinstance(
        err,
        ray.exceptions.RayActorError
        | ray.exceptions.RaySystemError
        | ray.exceptions.ObjectLostError
        | ray.exceptions.GetTimeoutError,
    )


def _kill(ray: Any, actor: Any) -> None:
    with contextlib.suppress(Exception):  # gone already
        ray.kill(actor, no_restart=True)
