"""The runner: one training job's lifecycle, from the service process.

``TrainingRunner.run()`` (a coroutine, one per running job):

1. moves the job PENDING -> RUNNING and decides where its workers run: GPU workers when the
   cluster has GPUs (``DistributedConfig.resolve_gpus``), else CPU workers with
   ``JAX_PLATFORMS=cpu`` (a job that asked for GPUs on a CPU-only cluster falls back, and its
   log says so; Ray itself would wait forever);
2. starts the job's learner actor ``star-<job>-learner`` (on any node: it asks for no CPU), which
   starts the worker actors, from the job's latest checkpoint if it has one (a job resumed after
   a service restart), else from the warm-start checkpoint, else fresh;
3. records every event the learner streams: metrics (the step never goes back), checkpoints
   (written atomically by the CheckpointStore, then indexed), log lines, worker placement;
4. ends the job: SUCCEEDED after the last outer step (and the evaluation, if the spec asks for
   one), CANCELLED after a cancel (the learner checkpoints first), back to PENDING when the
   service shuts down (it resumes on the next start), FAILED with the reason otherwise.

A learner lost to a transient fault (its node died, a Ray RPC failed) is started again from the
latest checkpoint, up to ``LEARNER_RETRIES`` times; a passing error never fails a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from typing import Any

from services.cluster import runtime
from services.cluster.learner import LearnerActor, learner_name
from services.domain import FailedPrecondition, JobState
from services.domain.spec import DistributedConfig, TrainingSpec

logger = logging.getLogger(__name__)

# Times a job's learner is started again after a transient failure before the job fails.
LEARNER_RETRIES = 3
# Seconds between attempts to remove a leftover actor of the same name.
NAME_RETRY_DELAY_S = 1.0
# XLA flags of a CPU worker: no multi-threaded Eigen kernels, towards the one CPU it asks Ray
# for. This does not bound XLA's own thread pool: measured, a worker still uses about 1.5 cores
# of 2 (benchmarks/README.md, "Service scaling").
CPU_WORKER_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"
# Counters kept across the learner's restarts (the learner reports increments).
COUNTERS = {"stale_now": "stale_dropped", "restarts_now": "worker_restarts"}


class StopReason(enum.Enum):
    CANCEL = "cancel"  # CancelJob: the job ends CANCELLED
    SHUTDOWN = "shutdown"  # the service stops: the job goes back to PENDING and resumes later


def worker_options(distributed: DistributedConfig, gpus: float) -> tuple[dict[str, Any], str]:
    """Ray actor options of a worker and the device ("cpu" or "gpu") for ``gpus`` per worker."""
    options: dict[str, Any] = {"num_cpus": 1}
    if distributed.worker_resources:
        options["resources"] = dict(distributed.worker_resources)
    if gpus > 0:
        options["num_gpus"] = gpus
        env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        device = "gpu"
    else:
        env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": CPU_WORKER_XLA_FLAGS}
        device = "cpu"
    options["runtime_env"] = {"env_vars": env}
    return options, device


class TrainingRunner:
    """Runs one training job; see the module docstring. ``stop()`` may be called any time."""

    def __init__(self, store: Any, checkpoints: Any, job_id: str, spec: TrainingSpec):
        self.store = store
        self.checkpoints = checkpoints
        self.job_id = job_id
        self.spec = spec
        self.stop_reason: StopReason | None = None
        self._learner: Any = None

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A store call off the event loop (SQLite writes fsync)."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def stop(self, reason: StopReason) -> None:
        """Ask the learner to checkpoint and stop after its current outer step."""
        self.stop_reason = reason
        if self._learner is not None:
            try:
                await self._learner.stop.remote()
            except Exception as err:  # the learner is gone already; run() ends on its own
                logger.info("job %s: stop: %s", self.job_id, err)

    async def run(self) -> JobState:
        """Run the job to its end; returns its final state (PENDING when it was requeued)."""
        if not await start_job(self.store, self.job_id):
            return (await self._call(self.store.get_job, self.job_id)).state
        try:
            finished = await self._run_with_retries()
        except Exception as err:  # the job fails; the service goes on
            logger.exception("job %s failed", self.job_id)
            return await self._end(JobState.FAILED, f"{type(err).__name__}: {err}")
        if self.stop_reason is StopReason.SHUTDOWN and not finished:
            return await self._end(JobState.PENDING, "service stopping: resumes on restart")
        if self.stop_reason is StopReason.CANCEL and not finished:
            return await self._end(JobState.CANCELLED, "cancelled")
        if self.spec.evaluation is not None:
            await self._evaluate()
        return await self._end(JobState.SUCCEEDED, "finished")

    async def _end(self, state: JobState, reason: str) -> JobState:
        job = await self._call(self.store.get_job, self.job_id)
        if job.state is state or job.state.is_terminal():
            return job.state
        if state is JobState.PENDING and job.state is JobState.CANCELLING:
            state, reason = JobState.CANCELLED, "cancelled while the service stopped"
        if state is JobState.SUCCEEDED and job.state is JobState.CANCELLING:
            reason = "finished before the cancel took effect"
        latest = await self._call(self.store.latest_checkpoint, self.job_id)
        rewind = (latest.step if latest else 0) if state is JobState.PENDING else None
        await self._call(self.store.transition, self.job_id, state, reason, rewind_to_step=rewind)
        return state

    async def _run_with_retries(self) -> bool:
        """Run learners until one finishes; True when the job reached its last outer step."""
        for attempt in range(LEARNER_RETRIES + 1):
            try:
                return await self._run_learner()
            except Exception as err:
                if not _transient(err) or attempt == LEARNER_RETRIES or self.stop_reason:
                    raise
                await self._call(
                    self.store.log,
                    self.job_id,
                    "WARNING",
                    f"learner lost ({type(err).__name__}); resuming from the "
                    f"latest checkpoint (attempt {attempt + 2})",
                )
        return False

    async def _run_learner(self) -> bool:
        import ray

        resume, warm = await self._initial_state()
        gpus = self.spec.distributed.resolve_gpus(runtime.cluster_gpus())
        options, device = worker_options(self.spec.distributed, gpus)
        if device == "cpu" and self.spec.distributed.gpus_per_worker:
            await self._call(
                self.store.log,
                self.job_id,
                "WARNING",
                "the cluster has no GPU: falling back to CPU workers",
            )
        missing = runtime.missing_resources(options.get("resources", {}))
        if missing:
            await self._call(
                self.store.log,
                self.job_id,
                "WARNING",
                f"no node of the cluster has {', '.join(missing)}: the workers "
                "wait until one joins",
            )
        distributed = self.spec.distributed
        cluster = {
            "num_workers": distributed.num_workers,
            "batch": distributed.batch,
            "max_staleness": distributed.max_staleness,
            "worker_options": options,
        }
        config_json = json.dumps(self.spec.config.to_dict())
        self._learner = await self._start_learner(ray, config_json, cluster, resume, warm)
        if self.stop_reason is not None:
            await self._learner.stop.remote()
        counters = await self._counters()
        finished = False
        try:
            async for ref in self._learner.run.options(num_returns="streaming").remote():
                event = await ref
                finished = await self._record(event, device, counters) or finished
        finally:
            learner, self._learner = self._learner, None
            ray.kill(learner, no_restart=True)
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

    async def _start_learner(
        self, ray: Any, config_json: str, cluster: dict, resume: bytes | None, warm: bytes | None
    ) -> Any:
        """The job's learner actor; a leftover actor of the same name (from a service that
        died) is removed first."""
        name = learner_name(self.job_id)
        actor_class = ray.remote(LearnerActor).options(
            name=name,
            namespace=runtime.NAMESPACE,
            num_cpus=0,
            max_concurrency=2,
            runtime_env={"env_vars": {"JAX_PLATFORMS": "cpu"}},
        )
        for _ in range(LEARNER_RETRIES + 1):
            try:
                return actor_class.remote(self.job_id, config_json, cluster, resume, warm)
            except ValueError:  # the name is taken
                await asyncio.to_thread(_kill_named, ray, name)
                await asyncio.sleep(NAME_RETRY_DELAY_S)
        raise RuntimeError(f"an actor named {name} is in the way and could not be removed")

    async def _counters(self) -> dict[str, float]:
        job = await self._call(self.store.get_job, self.job_id)
        return {name: float(job.metrics.get(name, 0.0)) for name in COUNTERS.values()}

    async def _record(self, event: dict[str, Any], device: str, counters: dict) -> bool:
        """Store one learner event; True for the end of a completed run."""
        kind = event["kind"]
        if kind == "metrics":
            metrics = dict(event["metrics"])
            for increment, total in COUNTERS.items():
                counters[total] += metrics.pop(increment, 0)
            metrics.pop("dropped_now", None)
            await self._call(
                self.store.update_progress, self.job_id, event["step"], {**metrics, **counters}
            )
        elif kind == "checkpoint":
            stored = await self._call(
                self.checkpoints.write, self.job_id, event["step"], event["data"]
            )
            await self._call(
                self.store.add_checkpoint,
                self.job_id,
                event["step"],
                stored.file_name,
                stored.size_bytes,
                stored.sha256,
            )
        elif kind == "log":
            await self._call(self.store.log, self.job_id, event["level"], event["message"])
        elif kind == "placement":
            nodes = [w["node_id"] for w in event["workers"]]
            await self._call(self.store.set_placement, self.job_id, device, nodes)
            hosts = ", ".join(f"{w['worker']}@{w['host']}({w['device']})" for w in event["workers"])
            await self._call(self.store.log, self.job_id, "INFO", f"workers: {hosts}")
        elif kind == "finished":
            return not event["stopped"]
        return False

    async def _evaluate(self) -> None:
        from services.cluster.evaluation import evaluate_checkpoint

        latest = await self._call(self.store.latest_checkpoint, self.job_id)
        data = await self._call(self.checkpoints.read_bytes, latest)
        await self._call(self.store.log, self.job_id, "INFO", "evaluating the final checkpoint")
        summaries = await evaluate_checkpoint(
            data,
            self.spec.evaluation,
            self.spec.config.tasks[0],
            self.spec.config.estimator.horizon,
        )
        await self._call(self.store.set_evaluation, self.job_id, summaries)


async def start_job(store: Any, job_id: str) -> bool:
    """PENDING -> RUNNING; False when the job is no longer PENDING (cancelled meanwhile)."""
    try:
        await asyncio.to_thread(store.transition, job_id, JobState.RUNNING, "started")
    except FailedPrecondition:
        return False
    return True


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


def _kill_named(ray: Any, name: str) -> None:
    with contextlib.suppress(ValueError):  # gone meanwhile
        ray.kill(ray.get_actor(name, namespace=runtime.NAMESPACE), no_restart=True)
